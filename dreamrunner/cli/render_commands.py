"""Render and export commands: `dreamrunner render PROJECT`, `dreamrunner choose`, `dreamrunner export PROJECT`."""

from __future__ import annotations

import argparse

from .. import edits
from ..errors import DreamRunnerError, UsageError
from ..project import Project
from ..story import SAMPLER_PRESETS
from .story_commands import SigintCancels, memory_options, model_arguments, positive, ray_argument, ray_cluster


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render", help="render scenes (cached per scene)", description=(
        "Render the story's scenes in order, or the ones named with --scene. Scenes whose plan, priors and "
        "settings did not change since their last render are taken from the cache. The 'tiny' backend has "
        "random weights: its output is noise and is labelled so. Ctrl-C stops at the next step; finished "
        "scenes are kept."))
    render.add_argument("project", help="project folder")
    render.add_argument("--scene", action="append", metavar="SCENE", help="scene id or number (1-based); repeatable")
    model_arguments(render)
    render.add_argument("--region-control", choices=("sr3ai", "stock"), default="sr3ai",
                        help="sr3ai: one prompt per region with region-gated priors (default); stock: one prompt")
    render.add_argument("--variants", type=int, help="seeds per scene (default: the project's setting)")
    render.add_argument("--sampler", choices=sorted(SAMPLER_PRESETS), help="sampler preset (scheduler, guidance, steps; "
                        "saved to the project): paper = the authors' story run (DPM, guidance 9.0, 50 steps, the "
                        "default), cogvideox = diffusers' defaults (DDIM, guidance 6.0)")
    render.add_argument("--steps", type=int, help="denoising steps for this run (saved to the project)")
    render.add_argument("--force", action="store_true", help="render again even where the cache has the scene")
    ray_argument(render)
    render.set_defaults(run=run_render)

    choose = subparsers.add_parser("choose", help="pick the variant export uses for a scene")
    choose.add_argument("project", help="project folder")
    choose.add_argument("--scene", required=True, metavar="SCENE", help="scene id or number (1-based)")
    choose.add_argument("--seed", type=int, required=True, help="the seed of the variant to use")
    choose.set_defaults(run=run_choose)

    forget = subparsers.add_parser("delete-render", help="take a variant off a scene's render list (the file stays)")
    forget.add_argument("project", help="project folder")
    forget.add_argument("--scene", required=True, metavar="SCENE", help="scene id or number (1-based)")
    forget.add_argument("--seed", type=int, required=True, help="the seed of the variant")
    forget.add_argument("--key", help="its cache key (or the start of it) where several variants share the seed")
    forget.set_defaults(run=run_delete_render)

    export = subparsers.add_parser("export", help="stitch the story into one mp4 with subtitles", description=(
        "Write the chosen render of every scene (its animatic where it has none) into one mp4, an .srt of the "
        "narration timed on scene boundaries, and a JSON manifest, side by side."))
    export.add_argument("project", help="project folder")
    export.add_argument("--out", required=True, help="output .mp4 path")
    export.add_argument("--crossfade", type=int, default=0, metavar="FRAMES", help="frames of crossfade between scenes")
    export.add_argument("--burn-subtitles", action="store_true", help="also draw the narration onto the video")
    export.add_argument("--animatic", action="store_true", help="export the animatic of every scene, not its render")
    export.set_defaults(run=run_export)


def run_render(args: argparse.Namespace) -> int:
    from ..rendering.pipeline import REGION_CONTROLS
    from ..rendering.story_render import StoryRenderer, commit_to, variant_seeds

    positive(args, "steps", "variants")
    reporter = args.reporter
    project = Project.load(args.project)
    story = project.story
    if args.variants is not None:
        try:
            variant_seeds(story, args.variants)  # a count the seeds cannot have is a wrong command line
        except DreamRunnerError as error:
            raise UsageError(str(error)) from None
    scenes = None
    if args.scene:
        chosen = [edits.find_scene(story, ref).id for ref in args.scene]
        scenes = [i for i, scene in enumerate(story.scenes) if scene.id in chosen]
    if args.sampler is not None:
        with project.edit():
            edits.use_sampler_preset(project.story, args.sampler)
    if args.steps is not None:
        with project.edit():
            edits.set_setting(project.story, "render.steps", args.steps)
    renderer = StoryRenderer(project, args.backend, model_path=args.model_path, memory=memory_options(args),
                             region_control=REGION_CONTROLS[args.region_control]())
    cluster, graph_report = ray_cluster(args), None
    with SigintCancels() as cancel:
        if cluster is None:
            outcomes = renderer.render(commit_to(project), scenes, variants=args.variants, force=args.force,
                                       progress=reporter.progress, cancel=cancel).outcomes
        else:  # each variant a task on Ray (dreamrunner.distributed)
            from ..distributed import GraphRun, story_graph

            graph = story_graph(story, [], list(range(len(story.scenes))) if scenes is None else scenes)
            graph_report = GraphRun(cluster, project, renderer.backend, commit_prior=None,
                                    commit_scene=commit_to(project), model_path=args.model_path,
                                    memory=memory_options(args), region_control=args.region_control,
                                    variants=args.variants, force=args.force, progress=reporter.progress,
                                    cancel=cancel).run(graph)
            outcomes = [outcome for _, outcome in graph_report.renders]
    for outcome in outcomes:
        state = "cached" if outcome.cached else "rendered"
        reporter.result(f"{outcome.scene_id} seed {outcome.seed}: {state} {outcome.path}", scene=outcome.scene_id,
                        seed=outcome.seed, cached=outcome.cached, path=outcome.path)
    if renderer.backend.startswith("tiny"):
        reporter.note("the tiny backend has random weights; these clips are noise, labelled as such")
    if graph_report is not None:  # after the results: what finished is listed, then the failed tasks named
        graph_report.raise_failures()
    return 0


def run_choose(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    with project.edit():
        scene = edits.find_scene(project.story, args.scene)
        edits.choose_render(project.story, scene.id, args.seed)
    args.reporter.result(f"scene {scene.id} now uses seed {args.seed}", scene=scene.id, seed=args.seed)
    return 0


def run_delete_render(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    with project.edit():
        scene = edits.find_scene(project.story, args.scene)
        render = edits.delete_render(project.story, scene.id, args.seed, args.key)
    print(f"scene {scene.id}: removed the variant with seed {render.seed} from its renders ({render.path} stays)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_story

    project = Project.load(args.project)
    with SigintCancels() as cancel:
        result = export_story(project, args.out, crossfade_frames=args.crossfade, burn_subtitles=args.burn_subtitles,
                              prefer="animatic" if args.animatic else "render", progress=args.reporter.progress,
                              cancel=cancel)
    args.reporter.result(
        f"wrote {result.video} ({result.num_frames} frames, {result.width}x{result.height}, {result.fps} fps, "
        f"{result.duration:.2f} s), {result.subtitles.name}, {result.webvtt.name}, {result.manifest.name}",
        video=str(result.video), manifest=str(result.manifest), num_frames=result.num_frames)
    if any(scene.is_noise for scene in result.scenes):
        args.reporter.note("some scenes are random-weight noise (tiny backend); the manifest and frames say so")
    return 0
