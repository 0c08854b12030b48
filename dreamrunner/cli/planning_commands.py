"""Planning commands: `dreamrunner plan` (a new project from a topic or one prompt) and `dreamrunner replan`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from PIL import Image

from ..errors import DreamRunnerError
from .. import edits
from ..media import ImageFileError, load_reference_image
from ..planning import REPLACEABLE, OfflinePlanner, Planner, PlannerSettings, get_planner, replan_scene, replan_story
from ..planning.llm import LLMPlanner
from ..project import MEDIA_DIR, PROJECT_FILE, Project
from ..story import Character, Story

_ENVIRONMENT = ("The LLM comes from the environment: OPENAI_API_KEY and/or OPENAI_BASE_URL (any OpenAI-compatible "
                "server: OpenAI, Ollama, vLLM, llama.cpp) and DREAMRUNNER_LLM_MODEL. Without them the built-in "
                "offline planner is used.")


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser("plan", help="plan a new story (or one prompt) into a project", description=(
        "Plan a story from a topic and characters (story plan + scene plans) or a single prompt (one scene), "
        "and save it as a new project. " + _ENVIRONMENT))
    what = plan.add_mutually_exclusive_group(required=True)
    what.add_argument("--topic", help="what the story is about")
    what.add_argument("--prompt", help="single-prompt mode: one prompt -> one scene plan with its layout")
    plan.add_argument("--character", action="append", default=[], metavar="NAME[:DESCRIPTION][=IMAGE]",
                      help="a character (repeatable); the optional reference image is checked as the editor checks "
                           "uploads and stored in the project as an upright RGB PNG")
    plan.add_argument("--out", required=True, help="project folder to create")
    plan.add_argument("--scenes", type=int, help="number of scenes (default: 5-8, the planner's choice)")
    _planner_arguments(plan)
    plan.add_argument("--force", action="store_true", help="overwrite an existing project there")
    plan.set_defaults(run=run_plan)

    replan = subparsers.add_parser("replan", help="re-plan a project, keeping the user's edits", description=(
        "Re-plan the whole story or one scene of a project, keeping every field the user edited (recorded in "
        "user_edited) unless --replace names it. The previous project is kept as project.json.bak. " + _ENVIRONMENT))
    replan.add_argument("project", help="project folder")
    replan.add_argument("--scene", help="re-plan only this scene (its layout), by id or number (1-based)")
    replan.add_argument("--replace", nargs="+", default=[], metavar="FIELD",
                        help=f"edited fields to replace anyway: {', '.join(sorted(REPLACEABLE - {'*'}))}, or all")
    _planner_arguments(replan)
    replan.set_defaults(run=run_replan)


def _planner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="use the offline planner even if an LLM is configured")
    parser.add_argument("--seed", type=int, default=0, help="offline planner variant (default 0)")


def _planner(args: argparse.Namespace) -> Planner:
    if args.offline:
        return OfflinePlanner(seed=args.seed)
    planner = get_planner(PlannerSettings.from_env())
    return OfflinePlanner(seed=args.seed) if isinstance(planner, OfflinePlanner) else planner


def parse_characters(specs: list[str]) -> list[tuple[Character, Image.Image | None]]:
    """NAME[:DESCRIPTION][=IMAGE] -> characters with ids and rare tokens [v1], [v2], ..., and their images.

    Images are read and checked here, before any planning, by the editor's rules
    (`dreamrunner.media.load_reference_image`); a bad one raises its ImageFileError naming the option.
    """
    result, cast = [], Story()
    for spec in specs:
        left, _, image = spec.partition("=")
        name, _, description = left.partition(":")
        if not name.strip():
            raise DreamRunnerError(f"--character {spec!r}: the name is empty (expected NAME[:DESCRIPTION][=IMAGE])")
        picture = None
        if image.strip():
            try:
                picture = load_reference_image(Path(image.strip()).expanduser())
            except ImageFileError as error:
                raise type(error)(f"--character {spec!r}: {error}") from None
        character = edits.add_character(cast, name, description)  # the editor's id and token rules
        result.append((character, picture))
    return result


def run_plan(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / PROJECT_FILE).exists() and not args.force:
        raise DreamRunnerError(f"{out} already holds a project; pass --force to overwrite it")
    cast = parse_characters(args.character)
    characters = [c for c, _ in cast]
    planner = _planner(args)
    print(f"planning with the {_describe(planner)}", file=sys.stderr)
    if args.prompt is not None:
        if args.scenes is not None:
            raise DreamRunnerError("--scenes does not apply to --prompt (single-prompt mode plans one scene)")
        story = planner.plan_prompt(args.prompt, characters)
    else:
        if not args.topic.strip():
            raise DreamRunnerError("--topic is empty")
        if not characters and isinstance(planner, OfflinePlanner):
            raise DreamRunnerError("give at least one --character NAME")
        story = planner.plan_story(args.topic, characters, args.scenes)
    # Reference images go into media/ as the pictures they show (as the editor stores uploads), and the story
    # refers to them relatively.
    (out / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
    updated = []
    for character, picture in cast:
        if picture is not None:
            target = out / MEDIA_DIR / edits.CHARACTERS_DIR / f"{character.id}_1.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            picture.save(target)
            character = character.model_copy(update={"reference_images": [target.relative_to(out).as_posix()]})
        updated.append(character)
    story = story.model_validate({**story.model_dump(), "characters": [c.model_dump() for c in updated]})
    Project.create(out, story, overwrite=args.force)
    _report(planner)
    print(f"planned {len(story.scenes)} scene{'s' * (len(story.scenes) != 1)} of {story.title!r} into {out}")
    return 0


def run_replan(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    replace = {"*" if field == "all" else field for field in args.replace}
    planner = _planner(args)
    print(f"re-planning with the {_describe(planner)}", file=sys.stderr)
    with project.edit():
        if args.scene is not None:
            scene = edits.find_scene(project.story, args.scene)
            project.story = replan_scene(project.story, scene.id, planner, replace)
            done = f"scene {scene.id!r}"
        else:
            project.story = replan_story(project.story, planner, replace)
            done = f"{len(project.story.scenes)} scenes"
    _report(planner)
    print(f"re-planned {done} of {args.project}; the previous plan is in {PROJECT_FILE}.bak")
    return 0


def _describe(planner: Planner) -> str:
    if isinstance(planner, LLMPlanner):
        return f"LLM planner ({planner.settings.describe()})"
    return f"offline planner (seed {getattr(planner, 'seed', 0)})"


def _report(planner: Planner) -> None:
    for repair in getattr(planner, "last_repairs", []):
        print(f"repaired {repair}", file=sys.stderr)
