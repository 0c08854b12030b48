"""Planning commands: `dreamrunner plan` (a new project from a topic or one prompt) and `dreamrunner replan`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import edits
from ..errors import DreamRunnerError, UsageError
from ..planning import REPLACEABLE, OfflinePlanner, Planner, PlannerSettings, get_planner, replan_scene, replan_story
from ..planning.llm import LLMPlanner
from ..project import PROJECT_FILE, Project
from ..story import Story
from ..story_pipeline import check_images, new_project, plan_and_save, resumable
from .story_commands import SigintCancels, cast_members, llm_gguf_argument, planner_help

_ENVIRONMENT = planner_help()


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
    # --offline (a global option) also means the offline planner.
    parser.add_argument("--seed", type=int, default=0, help="offline planner variant (default 0)")
    llm_gguf_argument(parser)


def planner_for(offline: bool, seed: int = 0, gguf: str | None = None, reporter=None) -> Planner:
    """The offline planner with --offline or when no LLM is configured, else the LLM planner (a GGUF file
    in this process with --llm-gguf). With `reporter`, the LLM planner shows its progress, retries and
    repairs there as they happen."""
    if offline:
        return OfflinePlanner(seed=seed)
    settings = PlannerSettings.from_env()
    if gguf:
        settings = settings.model_copy(update={"gguf": gguf})
    planner = get_planner(settings)
    if isinstance(planner, OfflinePlanner):
        return OfflinePlanner(seed=seed)
    if reporter is not None:
        planner.progress, planner.note = reporter.progress, reporter.warn
    return planner


def run_plan(args: argparse.Namespace) -> int:
    reporter = args.reporter
    out = Path(args.out)
    cast = cast_members(args.character)
    resume = None
    if (out / PROJECT_FILE).exists() and not args.force:
        existing = Project.load(out)
        if args.topic is None or not resumable(existing, args.topic, cast, args.scenes):
            raise DreamRunnerError(f"{out} already holds a project; pass --force to overwrite it")
        resume = existing  # a plan of the same topic and characters saved part way: go on with it
    check_images(cast)  # before any planning: the editor's rules, a named error for a bad file
    cast_story = Story()
    characters = [edits.add_character(cast_story, m.name, m.description) for m in cast]  # the editor's id rules
    planner = planner_for(args.offline, args.seed, args.llm_gguf, reporter)
    reporter.note(f"planning with the {_describe(planner)}")
    with SigintCancels() as cancel:
        planner.cancel = cancel
        if args.prompt is not None:
            if args.scenes is not None:
                raise UsageError("--scenes does not apply to --prompt (single-prompt mode plans one scene)")
            project = new_project(out, planner.plan_prompt(args.prompt, characters), cast, overwrite=args.force)
        else:
            if not args.topic.strip():
                raise UsageError("--topic is empty")
            if not characters and isinstance(planner, OfflinePlanner):
                raise UsageError("give at least one --character NAME")
            try:
                project = plan_and_save(out, planner, args.topic, cast, args.scenes, overwrite=args.force,
                                        resume=resume, note=reporter.note)
            except DreamRunnerError:
                if (out / PROJECT_FILE).exists():
                    reporter.note(f"the plans finished so far are saved in {out}: run the same command again "
                                  "(without --force) to go on from there")
                raise
    _report(planner, reporter)
    story = project.story
    reporter.result(f"planned {len(story.scenes)} scene{'s' * (len(story.scenes) != 1)} of {story.title!r} into {out}",
                    project=str(out), scenes=len(story.scenes), title=story.title)
    return 0


def run_replan(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    replace = {"*" if field == "all" else field for field in args.replace}
    planner = planner_for(args.offline, args.seed, args.llm_gguf, args.reporter)
    args.reporter.note(f"re-planning with the {_describe(planner)}")
    with project.edit():
        if args.scene is not None:
            scene = edits.find_scene(project.story, args.scene)
            project.story = replan_scene(project.story, scene.id, planner, replace)
            done = f"scene {scene.id!r}"
        else:
            project.story = replan_story(project.story, planner, replace)
            done = f"{len(project.story.scenes)} scenes"
    _report(planner, args.reporter)
    args.reporter.result(f"re-planned {done} of {args.project}; the previous plan is in {PROJECT_FILE}.bak",
                         project=str(args.project))
    return 0


def _describe(planner: Planner) -> str:
    if isinstance(planner, LLMPlanner):
        return f"LLM planner ({planner.settings.describe()})"
    return f"offline planner (seed {getattr(planner, 'seed', 0)})"


def _report(planner: Planner, reporter) -> None:
    if isinstance(planner, LLMPlanner):
        return  # it showed every retry and repair as it happened
    for repair in getattr(planner, "last_repairs", []):
        reporter.warn(f"repaired {repair}")
