"""Project-level commands: validate a project, import the paper's published plans."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DreamRunnerError
from ..files import open_text_file
from ..plan_format import parse_plan
from ..project import Project, ProjectError, load_story_file
from ..regions import build_region_plan
from ..story import Story


def register(subparsers: argparse._SubParsersAction) -> None:
    validate = subparsers.add_parser("validate", help="check a project and its region masks", description=(
        "Validate a project folder (or its project.json): the data model, every scene's region masks, and "
        "that referenced media exist inside the folder."))
    validate.add_argument("project", help="project folder or project.json")
    validate.set_defaults(run=run_validate)

    imports = subparsers.add_parser("import-plan", help="turn a JSONL of paper plans into a project", description=(
        "Import a JSONL file whose lines are [video_name, plan_string] (the DreamRunner paper's published "
        "plans) as a new project, one scene per line. Repairs (e.g. inverted boxes) are listed."))
    imports.add_argument("file", help="JSONL file of [name, plan] lines")
    imports.add_argument("--out", required=True, help="project folder to create")
    imports.add_argument("--force", action="store_true", help="overwrite an existing project there")
    imports.set_defaults(run=run_import_plan)


def run_validate(args: argparse.Namespace) -> int:
    from ..attention.lora import LoRAFileError, low_noise_file

    path = Path(args.project)
    story = load_story_file(path)
    folder = path if path.is_dir() else path.parent
    project = Project(folder, story)
    missing = []
    media = [p for c in story.characters for p in c.reference_images]
    media += [clip.path for s in story.scenes for clip in s.approved_clips]
    media += [r.path for s in story.scenes for r in s.renders] + [p.path for p in story.priors]
    for prior in story.priors:  # a two-expert (Wan 2.2 A14B) prior renders with its low-noise file too
        try:
            low_noise = low_noise_file(prior.path, prior.card)
        except LoRAFileError as error:
            raise ProjectError(f"prior {prior.id!r}: {error}") from None
        if low_noise is not None:
            media.append(low_noise.as_posix())
    for relative in media:
        try:
            found = project.resolve(relative).exists()
        except OSError as error:  # a name the file system refuses
            raise ProjectError(f"media path {relative!r} cannot be checked: {error.strerror}") from None
        if not found:
            missing.append(relative)
    grid = story.settings.video.token_grid
    for scene in story.scenes:
        build_region_plan(scene, grid)
    if missing:
        raise ProjectError("missing media files: " + ", ".join(missing))
    args.reporter.result(f"ok: {len(story.scenes)} scenes, {len(story.characters)} characters, token grid {grid}",
                         scenes=len(story.scenes), characters=len(story.characters), token_grid=list(grid))
    return 0


def run_import_plan(args: argparse.Namespace) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise DreamRunnerError(f"{source} does not exist")
    out = Path(args.out)
    if (out / "project.json").exists() and not args.force:
        raise DreamRunnerError(f"{out} already holds a project; pass --force to overwrite it")
    scenes = []
    with open_text_file(source) as handle:  # any encoding; lines end at \n only (a plan may hold U+2028)
        lines = list(enumerate(handle, start=1))
    for number, line in lines:
        if not line.strip():
            continue
        try:
            name, plan = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            raise DreamRunnerError(f"{source}:{number}: expected a JSON array [video_name, plan_string]") from None
        scene_id = Path(str(name)).stem or f"scene{number}"
        try:
            scene, repairs = parse_plan(str(plan), scene_id)
        except DreamRunnerError as error:
            raise DreamRunnerError(f"{source}:{number}: {error}") from None
        for repair in repairs:
            args.reporter.warn(f"repaired {repair}")
        scenes.append(scene)
    if not scenes:
        raise DreamRunnerError(f"{source} holds no plans")
    story = Story(title=source.stem, topic=f"imported from {source.name}", scenes=scenes)
    Project.create(out, story, overwrite=args.force)
    args.reporter.result(f"imported {len(scenes)} scenes into {out}", project=str(out), scenes=len(scenes))
    return 0
