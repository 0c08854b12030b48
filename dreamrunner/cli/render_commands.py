"""Render and export commands: `dreamrunner render PROJECT`, `dreamrunner choose`, `dreamrunner export PROJECT`."""

from __future__ import annotations

import argparse
import sys

from .. import edits
from ..backends import BACKENDS, MemoryOptions
from ..errors import DreamRunnerError
from ..jobs import Progress
from ..project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render", help="render scenes (cached per scene)", description=(
        "Render the story's scenes in order, or the ones named with --scene. Scenes whose plan, priors and "
        "settings did not change since their last render are taken from the cache. The 'tiny' backend has "
        "random weights: its output is noise and is labelled so."))
    render.add_argument("project", help="project folder")
    render.add_argument("--scene", action="append", metavar="SCENE", help="scene id or number (1-based); repeatable")
    render.add_argument("--backend", choices=BACKENDS, help="model (default: the project's render setting)")
    render.add_argument("--model-path", help="local CogVideoX folder or hub id (default: THUDM/CogVideoX-2b / -5b)")
    render.add_argument("--region-control", choices=("sr3ai", "stock"), default="sr3ai",
                        help="sr3ai: one prompt per region with region-gated priors (default); stock: one prompt")
    render.add_argument("--variants", type=int, help="seeds per scene (default: the project's setting)")
    render.add_argument("--steps", type=int, help="denoising steps for this run (saved to the project)")
    render.add_argument("--force", action="store_true", help="render again even where the cache has the scene")
    render.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    render.add_argument("--cpu-offload", choices=("none", "model", "sequential"), default="none",
                        help="keep models on the CPU until they run (needs a GPU)")
    render.add_argument("--vae-tiling", action="store_true", help="decode in tiles (less GPU memory)")
    render.add_argument("--vae-slicing", action="store_true", help="decode one video at a time")
    render.set_defaults(run=run_render)

    choose = subparsers.add_parser("choose", help="pick the variant export uses for a scene")
    choose.add_argument("project", help="project folder")
    choose.add_argument("--scene", required=True, metavar="SCENE", help="scene id or number (1-based)")
    choose.add_argument("--seed", type=int, required=True, help="the seed of the variant to use")
    choose.set_defaults(run=run_choose)

    export = subparsers.add_parser("export", help="stitch the story into one mp4 with subtitles", description=(
        "Write the chosen render of every scene (its animatic where it has none) into one mp4, an .srt of the "
        "narration timed on scene boundaries, and a JSON manifest, side by side."))
    export.add_argument("project", help="project folder")
    export.add_argument("--out", required=True, help="output .mp4 path")
    export.add_argument("--crossfade", type=int, default=0, metavar="FRAMES", help="frames of crossfade between scenes")
    export.add_argument("--burn-subtitles", action="store_true", help="also draw the narration onto the video")
    export.add_argument("--animatic", action="store_true", help="export the animatic of every scene, not its render")
    export.set_defaults(run=run_export)


def _print_progress(update: Progress) -> None:
    eta = f", about {update.eta_seconds:.0f} s left" if update.eta_seconds else ""
    print(f"{update.message}{eta}", file=sys.stderr, flush=True)


def run_render(args: argparse.Namespace) -> int:
    from ..rendering.pipeline import REGION_CONTROLS
    from ..rendering.story_render import StoryRenderer, commit_to

    project = Project.load(args.project)
    story = project.story
    scenes = None
    if args.scene:
        scenes = [story.scenes.index(edits.find_scene(story, ref)) for ref in args.scene]
    if args.steps is not None:
        with project.edit():
            edits.set_setting(project.story, "render.steps", args.steps)
    memory = MemoryOptions(device=args.device, cpu_offload=args.cpu_offload, vae_slicing=args.vae_slicing,
                           vae_tiling=args.vae_tiling)
    renderer = StoryRenderer(project, args.backend, model_path=args.model_path, memory=memory,
                             region_control=REGION_CONTROLS[args.region_control]())
    report = renderer.render(commit_to(project), scenes, variants=args.variants, force=args.force,
                             progress=_print_progress)
    for outcome in report.outcomes:
        state = "cached" if outcome.cached else "rendered"
        print(f"{outcome.scene_id} seed {outcome.seed}: {state} {outcome.path}")
    if renderer.backend.startswith("tiny"):
        print("note: the tiny backend has random weights; these clips are noise, labelled as such", file=sys.stderr)
    return 0


def run_choose(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    with project.edit():
        scene = edits.find_scene(project.story, args.scene)
        edits.choose_render(project.story, scene.id, args.seed)
    print(f"scene {scene.id} now uses seed {args.seed}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_story

    project = Project.load(args.project)
    result = export_story(project, args.out, crossfade_frames=args.crossfade, burn_subtitles=args.burn_subtitles,
                          prefer="animatic" if args.animatic else "render")
    print(f"wrote {result.video} ({result.num_frames} frames, {result.width}x{result.height}, {result.fps} fps, "
          f"{result.duration:.2f} s), {result.subtitles.name}, {result.webvtt.name}, {result.manifest.name}")
    if any(scene.is_noise for scene in result.scenes):
        print("note: some scenes are random-weight noise (tiny backend); the manifest and frames say so", file=sys.stderr)
    return 0
