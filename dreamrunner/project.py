"""Project folders: `project.json` (the story, with a schema version), its backup, and media beside it.

    my-story/
      project.json        the current story
      project.json.bak    the story as it was before the last save
      media/              reference images, approved clips, priors, renders (relative paths only)

A save writes a temporary file, fsyncs it and renames it over `project.json`, so a crash at any point
leaves either the old or the new project, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import DreamRunnerError
from .files import write_text_atomic
from .story import Story
from .validation import validate_story

SCHEMA_VERSION = 1
PROJECT_FILE = "project.json"
BACKUP_FILE = "project.json.bak"
MEDIA_DIR = "media"
FORMAT = "dreamrunner-studio"


class ProjectError(DreamRunnerError):
    pass


def dump_story(story: Story) -> str:
    payload = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "story": story.model_dump(mode="json")}
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def parse_project(text: str | bytes, source: str = PROJECT_FILE) -> Story:
    """A project file's text (or its raw bytes, read as UTF-8) -> the validated story; `ProjectError` or
    `StoryValidationError` naming what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProjectError(f"{source} is not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
                               "save it as UTF-8") from None
    try:
        payload = json.loads(text.removeprefix("\ufeff"))  # editors on Windows write a byte-order mark
    except json.JSONDecodeError as error:
        raise ProjectError(f"{source} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None
    except RecursionError:
        raise ProjectError(f"{source} is nested too deeply to be a project") from None
    except ValueError:  # Python reads no integer of more than 4300 digits
        raise ProjectError(f"{source} holds a number with more than 4300 digits") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ProjectError(f"{source} is not a DreamRunner Studio project (no \"format\": \"{FORMAT}\")")
    version = payload.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):  # true is an int to Python, not a version
        raise ProjectError(f"{source} has no integer schema_version")
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"{source} was saved by a newer DreamRunner Studio (schema version {version}); this version reads "
            f"schema version {SCHEMA_VERSION}. Upgrade DreamRunner Studio to open it."
        )
    if version < SCHEMA_VERSION:
        raise ProjectError(
            f"{source} uses schema version {version}, older than this version's {SCHEMA_VERSION}, and no migration "
            f"from it exists. Open it with the DreamRunner Studio release that wrote it and re-export the plan."
        )
    return validate_story(payload.get("story"))


class Project:
    """A story bound to its folder on disk."""

    def __init__(self, folder: str | os.PathLike, story: Story):
        self.folder = Path(folder)
        self.story = story

    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    @property
    def media(self) -> Path:
        return self.folder / MEDIA_DIR

    @classmethod
    def create(cls, folder: str | os.PathLike, story: Story) -> Project:
        project = cls(folder, story)
        project.folder.mkdir(parents=True, exist_ok=True)
        project.media.mkdir(exist_ok=True)
        project.save()
        return project

    @classmethod
    def load(cls, folder: str | os.PathLike, from_backup: bool = False) -> Project:
        folder = Path(folder)
        path = folder / (BACKUP_FILE if from_backup else PROJECT_FILE)
        if not path.is_file():
            raise ProjectError(f"no project at {folder}: {path.name} not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ProjectError(f"cannot read {path}: {error}") from None
        return cls(folder, parse_project(text, str(path)))

    def save(self) -> None:
        """Atomically replace project.json, keeping what it held before as project.json.bak."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = dump_story(self.story)
        if self.path.is_file():
            previous = self.path.read_text(encoding="utf-8")
            if previous == text:
                return
            write_text_atomic(self.folder / BACKUP_FILE, previous)
        write_text_atomic(self.path, text)

    def resolve(self, relative: str) -> Path:
        """The absolute path of a media path of the story, refusing any that leaves the folder (symlinks too)."""
        root = self.folder.resolve()
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            raise ProjectError(f"media path {relative!r} leads outside the project folder {root}")
        return target

    def relative(self, path: str | os.PathLike) -> str:
        """The project-relative form of a file inside the project folder."""
        target = Path(path).resolve()
        root = self.folder.resolve()
        if root not in target.parents:
            raise ProjectError(f"{path} is not inside the project folder {root}")
        return target.relative_to(root).as_posix()


def load_story_file(path: str | os.PathLike) -> Any:
    """Read a project.json (or a folder holding one) and return its story."""
    path = Path(path)
    if path.is_dir():
        return Project.load(path).story
    if not path.is_file():
        raise ProjectError(f"{path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProjectError(f"cannot read {path}: {error}") from None
    return parse_project(data, str(path))
