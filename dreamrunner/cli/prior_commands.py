"""Prior commands: tune a character's subject prior or a motion's motion prior over a project."""

from __future__ import annotations

import argparse
import signal
import sys

from .. import edits
from ..backends import BACKENDS, load_backend
from ..errors import DreamRunnerError
from ..jobs import CancelToken, Cancelled, Progress
from ..project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    subject = subparsers.add_parser("train-subject", help="tune a character's subject prior (LoRA, even blocks)",
                                    description=(
        "Tune a subject prior from the character's reference images (each repeated into a static clip captioned "
        "with the character's rare token), register it in the project and bind it to the scenes that show the "
        "character (--no-bind: register only). Ctrl-C stops at the next step and "
        "keeps a checkpoint: the same command resumes. An identical earlier run is reused, not repeated."))
    subject.add_argument("project", help="project folder")
    subject.add_argument("--character", required=True, help="character id")
    _common(subject)
    subject.set_defaults(run=run_train_subject)

    motion = subparsers.add_parser("train-motion", help="tune a motion prior from approved clips (LoRA, odd blocks)",
                                   description=(
        "Tune a motion prior (MotionDirector-style: a temporal LoRA plus one appearance LoRA per clip, only the "
        "temporal one kept) from the clips approved for this motion in the project's scenes, register it and bind "
        "it to the scenes with that motion (--no-bind: register only)."))
    motion.add_argument("project", help="project folder")
    motion.add_argument("--motion", required=True, help="motion text, as in the scenes' approved clips")
    _common(motion)
    motion.set_defaults(run=run_train_motion)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="tiny", choices=BACKENDS,
                        help="model to tune on (tiny = random weights for trying the workflow; its priors are noise)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the project's prior settings)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-bind", dest="bind", action="store_false",
                        help="register the prior without binding it to its scenes")


def _report(progress: Progress) -> None:
    parts = [f"{progress.stage}: {progress.step}/{progress.total}"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.eta_seconds is not None:
        parts.append(f"eta {progress.eta_seconds:.0f}s")
    if progress.message and progress.loss is None:
        parts.append(progress.message)
    print("  ".join(parts), file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, train, target: str) -> int:
    if args.steps is not None and args.steps < 1:
        raise DreamRunnerError(f"--steps must be at least 1, got {args.steps}")
    project = Project.load(args.project)
    components = load_backend(args.backend)
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())  # stop at the next step, keep a checkpoint
    try:
        prior, outcome = train(project, target, components, max_steps=args.steps, progress=_report,
                               cancel=cancel, device=args.device)
    except Cancelled:
        print("cancelled: the last step is checkpointed; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    with project.edit():
        bound = edits.register_prior(project.story, prior, bind=args.bind)
    status = "reused (already trained with these inputs and settings)" if outcome.cached else "trained"
    noise = "  [random weights: this prior is noise, not a result]" if components.is_noise else ""
    print(f"{prior.id}: {status} -> {prior.path}{noise}")
    print(f"{prior.id}: bound to {', '.join(bound)}" if bound else f"{prior.id}: bound to no scene")
    return 0


def run_train_subject(args: argparse.Namespace) -> int:
    from ..priors import train_subject

    return _run(args, train_subject, args.character)


def run_train_motion(args: argparse.Namespace) -> int:
    from ..priors import train_motion

    return _run(args, train_motion, args.motion)
