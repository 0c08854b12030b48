"""Prior commands: tune a character's subject prior or a motion's motion prior over a project."""

from __future__ import annotations

import argparse

from .. import edits
from ..backends import load_backend
from ..project import Project
from .story_commands import SigintCancels, memory_options, model_arguments, positive


def register(subparsers: argparse._SubParsersAction) -> None:
    subject = subparsers.add_parser("train-subject", help="tune a character's subject prior (LoRA, even blocks)",
                                    description=(
        "Tune a subject prior from the character's reference images (each repeated into a static clip captioned "
        "with the character's rare token) on the project's render backend (or --backend), register it in the "
        "project and bind it to the scenes that show the character (--no-bind: register only). "
        "Ctrl-C stops at the next step and keeps a checkpoint: the same command resumes. An identical earlier run is reused, not repeated."))
    subject.add_argument("project", help="project folder")
    subject.add_argument("--character", required=True, help="character id, name or token")
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
    model_arguments(parser)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the project's prior settings)")
    parser.add_argument("--no-bind", dest="bind", action="store_false",
                        help="register the prior without binding it to its scenes")


def _run(args: argparse.Namespace, kind: str, target: str) -> int:
    from ..priors import train_motion, train_subject

    positive(args, "steps")
    reporter = args.reporter
    project = Project.load(args.project)
    if kind == "subject":  # id, name or token, as the other commands take a character
        target = edits.find_character(project.story, target).id
    train = train_subject if kind == "subject" else train_motion
    backend = args.backend or project.story.settings.render.backend
    reporter.note(f"loading the {backend} backend")
    components = load_backend(backend, args.model_path, memory=memory_options(args))
    with SigintCancels() as cancel:  # Ctrl-C: stop at the next step, keep a checkpoint; the same command resumes
        prior, outcome = train(project, target, components, max_steps=args.steps, progress=reporter.progress,
                               cancel=cancel, device=args.device)
    with project.edit():
        bound = edits.register_prior(project.story, prior, bind=args.bind)
    status = "reused (already trained with these inputs and settings)" if outcome.cached else "trained"
    noise = "  [random weights: this prior is noise, not a result]" if components.is_noise else ""
    reporter.result(f"{prior.id}: {status} -> {prior.path}{noise}", prior=prior.id, path=prior.path,
                    cached=outcome.cached, bound=bound, is_noise=components.is_noise)
    reporter.result(f"{prior.id}: bound to {', '.join(bound)}" if bound else f"{prior.id}: bound to no scene",
                    prior=prior.id, bound=bound)
    return 0


def run_train_subject(args: argparse.Namespace) -> int:
    return _run(args, "subject", args.character)


def run_train_motion(args: argparse.Namespace) -> int:
    return _run(args, "motion", args.motion)
