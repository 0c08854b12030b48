"""Render and export commands: `dreamrunner render PROJECT`, `dreamrunner choose`, `dreamrunner export PROJECT`."""

from __future__ import annotations

import argparse

from .. import edits
from ..errors import UsageError
from ..project import Project
from ..story import DTYPES, SAMPLER_PRESETS
from ..validation import StoryValidationError
from ..video_presets import VideoPresetError
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
    sampling = render.add_argument_group("settings", "For this run only; the project keeps its settings unless "
                                         "--save-settings is given.")
    sampling.add_argument("--sampler", choices=sorted(SAMPLER_PRESETS), help="sampler preset (scheduler, guidance, "
                          "steps): paper = the authors' story run (DPM, guidance 9.0, 50 steps, the default), "
                          "cogvideox = diffusers' defaults (DDIM, guidance 6.0); the options below override it")
    sampling.add_argument("--scheduler", choices=("dpm", "ddim"), help="denoising scheduler")
    sampling.add_argument("--steps", type=int, help="denoising steps")
    sampling.add_argument("--guidance", type=float, metavar="SCALE", help="classifier-free guidance scale")
    sampling.add_argument("--dynamic-cfg", action=argparse.BooleanOptionalAction, default=None,
                          help="guidance rising over the steps (DPM scheduler only)")
    sampling.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt ('' for none)")
    sampling.add_argument("--seed", type=int, nargs="+", metavar="SEED",
                          help="one seed (variants count on from it) or several (one variant each)")
    sampling.add_argument("--variants", type=int, help="seeds per scene, from the seed on")
    sampling.add_argument("--size", metavar="WxH", help="frame size, WIDTHxHEIGHT (e.g. 720x480) or a preset of the "
                          "model (480p; tiny)")
    sampling.add_argument("--frames", type=int, metavar="N", help="frames per scene, as the model makes "
                          "them (CogVideoX 2B/5B: 8N+1 up to 49; 1.5: 16N+1 up to 161; Wan 2.1: 4N+1 up to 81)")
    sampling.add_argument("--dtype", choices=DTYPES, help="weights' dtype (default: the model's own)")
    sampling.add_argument("--save-settings", action="store_true", help="also save these settings: as the story "
                          "default, or with --scene as those scenes' own settings (size, frames and dtype are "
                          "always the story's)")
    render.add_argument("--force", action="store_true", help="render again even where the cache has the scene")
    ray_argument(render)
    render.add_argument("--context-parallel", type=int, metavar="N", help="split each scene's transformer over N "
                        "GPUs of this machine (Wan backends; diffusers' Ulysses attention): launch one process per GPU "
                        "with `torchrun --nproc-per-node N -m dreamrunner render PROJECT --context-parallel N`; "
                        "rank 0 writes the clips and the story (docs/scaling.md)")
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


def render_fields(args: argparse.Namespace) -> dict:
    """The sampling settings the command line names (`RenderOverrides` fields), the preset's first."""
    fields = dict(SAMPLER_PRESETS[args.sampler]) if args.sampler else {}
    named = {"scheduler": args.scheduler, "steps": args.steps, "guidance_scale": args.guidance,
             "use_dynamic_cfg": args.dynamic_cfg, "negative_prompt": args.negative_prompt, "variants": args.variants}
    fields.update({name: value for name, value in named.items() if value is not None})
    if args.seed:
        if len(args.seed) > 1 and args.variants is not None:
            raise UsageError("--variants counts variants on from one --seed; with several seeds each is a variant")
        fields.update(edits.seed_fields(args.seed))
    return fields


def apply_settings(project: Project, args: argparse.Namespace, scene_ids: list[str] | None, save: bool) -> None:
    """The command line's settings, through `edits` inside `project.edit(save)`: sampling fields go to the story
    default when saved without --scene, else to each scene's own settings (a one-off wins over them); backend,
    size, frames and dtype are the story's. With --save-settings a backend switches the story's video settings
    to its own where they are not of its kind (`edits.set_backend`, noted once, when saving); for one run it
    renders the story's geometry, and one it does not make is a usage error. A value the settings refuse is a
    usage error."""
    fields = render_fields(args)
    try:
        with project.edit(save=save):
            story = project.story
            if args.backend is not None and args.save_settings:
                if (note := edits.set_backend(story, args.backend)) is not None and save:
                    args.reporter.note(note)
            elif args.backend is not None:
                edits.set_render_settings(story, backend=args.backend)
            if args.dtype is not None:
                edits.set_render_settings(story, dtype=args.dtype)
            if args.size is not None or args.frames is not None:
                edits.set_video(story, args.size, args.frames)
            if args.backend is not None and not args.save_settings and (
                    mismatch := edits.geometry_mismatch(story.settings.video, args.backend)):
                other = ("" if "patch_size_t" in mismatch or "vae_spatial" in mismatch else
                         f", or give a --size and --frames it makes for this run")
                raise UsageError(f"--backend {args.backend} for this run only, but the story's video settings are "
                                 f"not made by it ({mismatch}): add --save-settings to switch the story to "
                                 f"{args.backend} with its own video settings{other}")
            if fields and save and scene_ids is None:
                edits.set_render_settings(story, **fields)
            elif fields:
                for scene_id in scene_ids or [scene.id for scene in story.scenes]:
                    edits.set_render_settings(story, scene_id, **fields)
    except (edits.EditError, VideoPresetError, StoryValidationError) as error:
        raise UsageError(str(error)) from None


def run_render(args: argparse.Namespace) -> int:
    from ..rendering.pipeline import REGION_CONTROLS
    from ..rendering.story_render import StoryRenderer, commit_to

    positive(args, "steps", "variants", "frames", "context_parallel")
    reporter = args.reporter
    project = Project.load(args.project)
    writes = True
    if (args.context_parallel or 1) > 1:
        writes = join_context_parallel(args, project)
    scenes = scene_ids = None
    if args.scene:
        chosen = [edits.find_scene(project.story, ref).id for ref in args.scene]
        scenes = [i for i, scene in enumerate(project.story.scenes) if scene.id in chosen]
        scene_ids = [project.story.scenes[i].id for i in scenes]
    # The renderer reads a copy holding this run's settings (checked with the run's backend before anything is
    # saved); renders are committed to the project itself.
    snapshot = project.snapshot()
    apply_settings(snapshot, args, scene_ids, save=False)
    if args.save_settings and writes:
        apply_settings(project, args, scene_ids, save=True)
    renderer = StoryRenderer(snapshot, args.backend, model_path=args.model_path, memory=memory_options(args),
                             region_control=REGION_CONTROLS[args.region_control](), writes=writes)
    cluster, graph_report = ray_cluster(args), None
    with SigintCancels() as cancel:
        if cluster is None:
            outcomes = renderer.render(commit_to(project), scenes, force=args.force,
                                       progress=reporter.progress if writes else None, cancel=cancel).outcomes
            if not writes:  # another rank of a context-parallel run: rank 0 reports
                return 0
        else:  # each variant a task on Ray (dreamrunner.distributed)
            from ..distributed import GraphRun, story_graph

            graph = story_graph(snapshot.story, [], list(range(len(snapshot.story.scenes))) if scenes is None
                                else scenes)
            graph_report = GraphRun(cluster, snapshot, renderer.backend, commit_prior=None,
                                    commit_scene=commit_to(project), model_path=args.model_path,
                                    memory=memory_options(args), region_control=args.region_control,
                                    force=args.force, progress=reporter.progress, cancel=cancel).run(graph)
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


def join_context_parallel(args: argparse.Namespace, project: Project) -> bool:
    """--context-parallel N: check the backend (Wan) and the launch, join torchrun's process group, run on this
    rank's own GPU (args.device); True on rank 0, the one process that writes files and reports."""
    from ..backends.parallel import ContextParallelError, check_backend, init_from_launcher, is_main_process

    if args.ray is not None:
        raise UsageError("--context-parallel splits each scene over this machine's GPUs (one torchrun process per "
                         "GPU); --ray runs whole scenes as tasks, one GPU each: use one or the other")
    try:  # another model family, no torchrun launch: the command line asks for what cannot run
        check_backend(args.backend or project.story.settings.render.backend)
        args.device = init_from_launcher(args.context_parallel, args.device)
    except ContextParallelError as error:
        raise UsageError(str(error)) from None
    return is_main_process()


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
