"""`dreamrunner story` (the whole pipeline, dreamrunner.story_pipeline) and `dreamrunner app` (the editor)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ..backends import BACKENDS, MemoryOptions
from ..errors import UsageError
from ..jobs import CancelToken
from ..story_pipeline import STAGES, CastMember, StoryOptions, StoryRun


def register(subparsers: argparse._SubParsersAction) -> None:
    story = subparsers.add_parser("story", help="the whole pipeline: topic and characters in, story video out",
                                  description=(
        "Plan a story (LLM or offline planner), retrieve and approve reference clips for every motion, train a "
        "subject prior per character with an image and a motion prior per motion with clips (bound to their "
        "scenes), render every scene with SR3AI and its priors, and export the story video. Each stage whose "
        "result is already in the folder and unchanged is skipped, so the same command resumes a stopped run "
        "and a second run does no work. Ctrl-C stops cleanly at the next step. " + planner_help()))
    story.add_argument("--topic", required=True, help="what the story is about")
    story.add_argument("--character", action="append", default=[], required=True,
                       metavar="NAME[:DESCRIPTION][=IMAGE]",
                       help="a character (repeatable); the reference image is checked as the editor checks uploads")
    story.add_argument("--out", required=True, help="project folder (created, or resumed)")
    story.add_argument("--scenes", type=int, help="number of scenes, 5-8 (default: the planner's choice)")
    story.add_argument("--seed", type=int, default=0, help="offline planner variant (default 0)")
    llm_gguf_argument(story)
    story.add_argument("--force", action="store_true",
                       help="plan anew even where --out holds a story planned from other inputs")
    story.add_argument("--until", choices=STAGES, default="export", help="stop after this stage (default export)")
    clips = story.add_argument_group("clips")
    clips.add_argument("--catalog", help="clip catalog (folder or file; default: the demo catalog)")
    clips.add_argument("--clips-per-motion", type=int, default=4, metavar="K",
                       help="approve the best K retrieved clips per motion (default 4)")
    clips.add_argument("--min-score", type=float, metavar="S", help="approve only clips scoring at least S")
    clips.add_argument("--detector", default="motion",
                       help="'motion' (moving subject, default), 'hog' (people), 'transformers:<model>', 'none'")
    clips.add_argument("--clip-model", default="openai/clip-vit-base-patch32",
                       help="CLIP checkpoint for re-ranking clips; 'none' to skip")
    model = story.add_argument_group("model (training and rendering)")
    model_arguments(model)
    model.add_argument("--train-steps", type=int, metavar="N", help="training steps per prior (saved to the project)")
    model.add_argument("--render-steps", type=int, metavar="N", help="denoising steps (saved to the project)")
    model.add_argument("--variants", type=int, help="seeds per scene (default: the project's setting)")
    ray_argument(model)
    export = story.add_argument_group("export")
    export.add_argument("--video", help="output .mp4 (default: OUT/story.mp4)")
    export.add_argument("--crossfade", type=int, default=0, metavar="FRAMES", help="frames of crossfade between scenes")
    export.add_argument("--burn-subtitles", action="store_true", help="also draw the narration onto the video")
    story.set_defaults(run=run_story)

    app = subparsers.add_parser("app", help="start the storyboard editor (same as dreamrunner-studio)",
                                description="Start the storyboard editor. Its options follow the command: "
                                            "dreamrunner app --port 7861 --project DIR ... (see dreamrunner-studio --help).")
    app.set_defaults(run=run_app)


def llm_gguf_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm-gguf", metavar="PATH", help=(
        "plan with this GGUF model file run in this process (needs the local-llm extra: pip install "
        "'.[local-llm]'); the JSON schema is enforced while it writes"))


def planner_help() -> str:
    return ("The LLM comes from the environment: OPENAI_API_KEY and/or OPENAI_BASE_URL (any OpenAI-compatible "
            "server: OpenAI, Ollama, vLLM, llama.cpp) and DREAMRUNNER_LLM_MODEL. Without them, or with --offline, "
            "the built-in offline planner is used. Answers are streamed: progress shows, Ctrl-C stops mid-answer, "
            "and the story plan and each scene plan are saved as they arrive (a rerun goes on from there). "
            "See docs/planning.md for local servers.")


def model_arguments(parser) -> None:
    """--backend, --model-path, --device and the memory options, the same for every command that runs a model.

    The memory options default to this machine's settings (dreamrunner.machine, set in the editor): they belong
    to the GPU, not to the story, and a command-line value applies to this command only."""
    from ..backends.memory import COMPILE_CHOICES, MEMORY_CHOICES, QUANTIZE_CHOICES

    parser.add_argument("--backend", choices=BACKENDS, help="model (default: the project's render backend); "
                        "tiny*, tiny-wan* = random weights for trying the workflow (their output is noise)")
    parser.add_argument("--model-path", help="local diffusers folder or hub id (default: the backend's environment "
                        "variable, else this machine's model path, else THUDM/CogVideoX-2b / -5b, "
                        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers / -14B-Diffusers, Wan-AI/Wan2.2-T2V-A14B-Diffusers, "
                        "Wan-AI/Wan2.2-TI2V-5B-Diffusers)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--memory", choices=MEMORY_CHOICES, metavar="PRESET",
                        help="memory preset: " + ", ".join(MEMORY_CHOICES) + " (default: this machine's setting, "
                        "else auto = the fastest that fits the free GPU memory; see docs/rendering.md)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="torchao weight-only quantization of the transformer (needs the [quant] extra)")
    parser.add_argument("--compile", choices=COMPILE_CHOICES, help="torch.compile the transformer blocks")
    # Replaced by --memory; still recognised so an old command line gets a clear answer before anything runs.
    for old in ("--cpu-offload", "--vae-tiling", "--vae-slicing"):
        parser.add_argument(old, nargs="?", action=_Replaced, help=argparse.SUPPRESS)


class _Replaced(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        raise argparse.ArgumentError(self, "was replaced by --memory PRESET (auto, none, vae-tiling, model, group): "
                                     "--cpu-offload model -> --memory model (which also tiles the VAE), --vae-tiling "
                                     "or --vae-slicing -> --memory vae-tiling, --cpu-offload sequential -> --memory "
                                     "group")


def ray_argument(parser) -> None:
    """--ray [ADDRESS]: the command's training and rendering as tasks on Ray (dreamrunner.distributed)."""
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run priors and renders as tasks on Ray, one GPU each: no ADDRESS = a local Ray over "
                             "this machine's GPUs, else an existing cluster (host:port or ray://host:10001); the "
                             "project folder must be on storage every node sees (docs/scaling.md). Needs "
                             "pip install 'dreamrunner-studio[ray]'. Give it after the project folder")


def ray_cluster(args: argparse.Namespace):
    """The Ray cluster --ray names (None without --ray); a usage error with --device, which Ray sets per task."""
    if args.ray is None:
        return None
    from ..distributed import DistributedError, RayCluster, parse_address, require_ray

    if args.device is not None:
        raise UsageError(f"--device {args.device} does not go with --ray: Ray gives each task its own GPU")
    if args.ray:
        try:
            parse_address(args.ray)
        except DistributedError as error:
            raise UsageError(str(error)) from None
    require_ray()
    return RayCluster.at(args.ray or None)


def memory_options(args: argparse.Namespace) -> MemoryOptions:
    """The command's memory options: its own, else this machine's stored settings."""
    from ..machine import read_machine_settings

    machine = read_machine_settings()
    return MemoryOptions(device=args.device, preset=args.memory or machine.memory,
                         quantize=args.quantize or machine.quantize, compile=args.compile or machine.compile,
                         context_parallel=getattr(args, "context_parallel", None) or 1)


def cast_members(specs: list[str]) -> list[CastMember]:
    """NAME[:DESCRIPTION][=IMAGE] options -> the characters asked for."""
    cast = []
    for spec in specs:
        left, _, image = spec.partition("=")
        name, _, description = left.partition(":")
        if not name.strip():
            raise UsageError(f"--character {spec!r}: the name is empty (expected NAME[:DESCRIPTION][=IMAGE])")
        cast.append(CastMember(name.strip(), description.strip(),
                               Path(image.strip()).expanduser() if image.strip() else None, f"--character {spec!r}"))
    return cast


def positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


class SigintCancels:
    """Ctrl-C cancels the job at its next step (a second Ctrl-C stops at once); restored on exit."""

    def __init__(self) -> None:
        self.token = CancelToken()

    def _handle(self, *_) -> None:
        if self.token.cancelled:
            raise KeyboardInterrupt
        self.token.cancel()

    def __enter__(self) -> CancelToken:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self.token

    def __exit__(self, *_) -> None:
        signal.signal(signal.SIGINT, self._previous)


def run_story(args: argparse.Namespace) -> int:
    from .planning_commands import planner_for

    positive(args, "scenes", "clips_per_motion", "train_steps", "render_steps", "variants")
    reporter = args.reporter
    options = StoryOptions(
        topic=args.topic, cast=cast_members(args.character), scenes=args.scenes, force=args.force,
        planner=planner_for(args.offline, args.seed, args.llm_gguf), catalog=args.catalog, clips_per_motion=args.clips_per_motion,
        min_score=args.min_score, detector=None if args.detector == "none" else args.detector,
        clip_model=None if args.clip_model == "none" else args.clip_model, backend=args.backend,
        model_path=args.model_path, memory=memory_options(args), train_steps=args.train_steps,
        render_steps=args.render_steps, variants=args.variants, video=Path(args.video) if args.video else None,
        crossfade_frames=args.crossfade, burn_subtitles=args.burn_subtitles, until=args.until)
    cluster = ray_cluster(args)
    with SigintCancels() as cancel:
        if cluster is None:
            run = StoryRun(args.out, options, progress=reporter.progress, cancel=cancel, listener=reporter)
        else:
            from ..distributed import RayStoryRun

            run = RayStoryRun(args.out, options, progress=reporter.progress, cancel=cancel, listener=reporter,
                              cluster=cluster)
        result = run.run()
    summary = ", ".join(f"{stage} {status}" for stage, status in result.stages.items())
    where = f"{result.video}" if result.video else f"{result.folder} (stopped after {args.until})"
    reporter.result(f"{where}: {summary}", project=str(result.folder), video=str(result.video) if result.video else None,
                    stages=result.stages)
    return 0


def run_app(args: argparse.Namespace) -> int:
    return launch_app([])


def launch_app(argv: list[str]) -> int:
    """The editor (ui.launch), with the options given after `dreamrunner app`."""
    from ui.launch import main as launch

    return launch(argv, prog="dreamrunner app")
