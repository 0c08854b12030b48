"""What gets scored: the chosen renders of a project, or a folder of videos described by a JSON file.

A project scene gives its chosen render, its text (narration, else description, else background), its
events (the keyframes' region descriptions on the time axis) and the reference images of the characters
its keyframes name. A folder's JSON maps each video file to the same things:

    {"scene1.mp4": {"text": "A witch walks into the forest.",
                    "events": ["a witch walks", {"text": "a witch stops and waves", "start": 0.5, "end": 1.0}],
                    "references": {"witch": ["refs/witch.png"]},
                    "is_noise": false}}

Plain-string events split the video into equal parts, in order. Reference paths are relative to the
JSON file; `references` may also be a plain list (one character).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from ..files import read_text_file
from ..project import Project
from .frames import MetricsError
from .evaluate import VideoSample
from .story_metrics import Event, events_from_texts, scene_events

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}


def samples_from_project(project: Project) -> tuple[list[VideoSample], list[str]]:
    """One sample per scene with a chosen render, and notes on the scenes left out."""
    story = project.story
    samples, notes = [], []
    for number, scene in enumerate(story.scenes, start=1):
        where = f"scene {number} ({scene.id!r})"
        if scene.chosen_render is None:
            notes.append(f"{where} has no chosen render: not scored")
            continue
        render = scene.renders[scene.chosen_render]
        video = project.resolve(render.path)
        if not video.is_file():
            raise MetricsError(f"{where}: its chosen render {render.path} is missing from {project.folder}")
        character_ids = dict.fromkeys(e.character_id for k in scene.keyframes for e in k.entities if e.character_id)
        references, sample_notes = {}, []
        for character_id in character_ids:
            character = story.character(character_id)
            if not character.reference_images:
                sample_notes.append(f"character {character.name!r} has no reference images")
            references[character.name] = [project.resolve(p) for p in character.reference_images]
        text = next((t.strip() for t in (scene.narration, scene.description, scene.background) if t.strip()), None)
        samples.append(VideoSample(scene.id, video, text, scene_events(scene), references, render.is_noise,
                                   sample_notes))
    if not samples:
        raise MetricsError(f"no scene of {project.folder} has a chosen render to score; render the story first")
    return samples, notes


class _EventSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    start: float
    end: float


class _VideoTexts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    events: list[Union[str, _EventSpec]] = Field(default_factory=list)
    references: Union[dict[str, list[str]], list[str]] = Field(default_factory=dict)
    is_noise: bool = False


class _TextsFile(RootModel[dict[str, _VideoTexts]]):
    pass


def _events(entry: _VideoTexts, where: str) -> list[Event]:
    if all(isinstance(e, str) for e in entry.events):
        return events_from_texts(entry.events)
    if any(isinstance(e, str) for e in entry.events):
        raise MetricsError(f"{where}: events must be all strings or all {{text, start, end}} objects, not a mix")
    try:
        return [Event(e.text, e.start, e.end) for e in entry.events]
    except MetricsError as error:
        raise MetricsError(f"{where}: {error}") from None


def samples_from_folder(videos: str | os.PathLike, texts: str | os.PathLike) -> tuple[list[VideoSample], list[str]]:
    """One sample per video the JSON names; videos of the folder it does not name are noted, not scored."""
    folder, texts = Path(videos), Path(texts)
    if not folder.is_dir():
        raise MetricsError(f"{folder} is not a folder of videos")
    if not texts.is_file():
        raise MetricsError(f"texts file {texts} does not exist")
    try:
        data = json.loads(read_text_file(texts))
    except json.JSONDecodeError as error:
        raise MetricsError(f"{texts} is not valid JSON: {error}") from None
    try:
        entries = _TextsFile.model_validate(data).root
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        raise MetricsError(f"{texts} does not describe videos as expected ({problems})") from None
    if not entries:
        raise MetricsError(f"{texts} names no videos")
    samples = []
    for name, entry in entries.items():
        video = folder / name
        if not video.is_file():
            raise MetricsError(f"{texts} names {name}, which is not in {folder}")
        references = entry.references if isinstance(entry.references, dict) else {"reference": entry.references}
        samples.append(VideoSample(
            name, video, entry.text.strip() if entry.text else None, _events(entry, f"{texts}: {name}"),
            {character: [texts.parent / p for p in paths] for character, paths in references.items()},
            entry.is_noise,
        ))
    unnamed = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.name not in entries)
    notes = [f"{name} is not in {texts.name}: not scored" for name in unnamed]
    return samples, notes
