"""Prior commands: tune a character's subject prior or a motion's motion prior over a project, or import an
outside LoRA as one."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import edits
from ..backends import load_backend
from ..errors import UsageError
from ..project import Project
from .story_commands import SigintCancels, memory_options, model_arguments, positive, ray_argument, ray_cluster


def register(subparsers: argparse._SubParsersAction) -> None:
    subject = subparsers.add_parser("train-subject", help="tune a character's subject prior (LoRA, 0-based odd blocks)",
                                    description=(
        "Tune a subject prior from the character's reference images (each repeated into a static clip captioned "
        "with the character's rare token) on the project's render backend (or --backend), register it in the "
        "project and bind it to the scenes that show the character (--no-bind: register only). "
        "Ctrl-C stops at the next step and keeps a checkpoint: the same command resumes. An identical earlier run is reused, not repeated. "
        "On Wan 2.2 A14B it tunes one LoRA per expert: the prior's file (high noise) and a -low-noise file beside it."))
    subject.add_argument("project", help="project folder")
    subject.add_argument("--character", required=True, help="character id, name or token")
    _common(subject)
    subject.set_defaults(run=run_train_subject)

    motion = subparsers.add_parser("train-motion", help="tune a motion prior from approved clips (LoRA, 0-based even blocks)",
                                   description=(
        "Tune a motion prior (MotionDirector-style: a temporal LoRA plus one appearance LoRA per clip, only the "
        "temporal one kept) from the clips approved for this motion in the project's scenes, register it and bind "
        "it to the scenes with that motion (--no-bind: register only). On Wan 2.2 A14B: one LoRA per expert, as "
        "train-subject."))
    motion.add_argument("project", help="project folder")
    motion.add_argument("--motion", required=True, help="motion text, as in the scenes' approved clips")
    _common(motion)
    motion.set_defaults(run=run_train_motion)

    imported = subparsers.add_parser("import-lora", help="import an outside CogVideoX or Wan LoRA (an A14B pair: --low-noise) as a prior",
                                     description=(
        "Convert an outside CogVideoX or Wan LoRA into a prior of the project (media/priors/), register it and bind it "
        "to the scenes of its target (--no-bind: register only). Accepts diffusers save_lora_weights output and "
        "its CogVideoX LoRA training script's (a .safetensors file or its folder), a peft save_pretrained folder "
        "(adapter_model.safetensors + adapter_config.json) and kohya/ComfyUI key styles; safetensors only. "
        "A LoRA on all blocks (or blocks of its author's choice) is kept on them, gated to its entities' regions. "
        "A Wan 2.2 A14B pair: FILE is its high-noise LoRA and --low-noise its low-noise one; each renders on its own "
        "expert."))
    imported.add_argument("project", help="project folder")
    imported.add_argument("file", help="LoRA .safetensors file, or a folder holding one")
    imported.add_argument("--kind", choices=("subject", "motion"), default="subject",
                          help="subject (bound to a character's entities) or motion (to a motion's); default subject")
    imported.add_argument("--target", required=True, metavar="CHARACTER_OR_MOTION",
                          help="character id, name or token (subject), or the motion text (motion)")
    imported.add_argument("--id", dest="prior_id", default=None, metavar="ID",
                          help="prior id (default <kind>-<target>-<file name>)")
    imported.add_argument("--no-bind", dest="bind", action="store_false",
                          help="register the prior without binding it to its scenes")
    imported.add_argument("--scale", type=float, default=1.0, help="binding strength, 0-4 (default 1)")
    imported.add_argument("--low-noise", dest="low_noise", default=None, metavar="FILE",
                          help="Wan 2.2 A14B: the low-noise LoRA of a pair whose high-noise LoRA is the file argument")
    imported.set_defaults(run=run_import_lora)


def _common(parser: argparse.ArgumentParser) -> None:
    model_arguments(parser)
    ray_argument(parser)
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
    story_backend = project.story.settings.render.backend
    backend = args.backend or story_backend
    if backend != story_backend:  # a prior holds one model's weights: the story's renders could not load it
        reporter.warn(f"training on {backend}, but the story renders with {story_backend}: a prior loads only on "
                      f"the model it was trained on; to render with it, `dreamrunner set {args.project} "
                      f"render.backend={backend}`")
    cluster = ray_cluster(args)
    with SigintCancels() as cancel:  # Ctrl-C: stop at the next step, keep a checkpoint; the same command resumes
        if cluster is None:
            reporter.note(f"loading the {backend} backend")
            components = load_backend(backend, args.model_path, memory=memory_options(args))
            prior, outcome = train(project, target, components, max_steps=args.steps, progress=reporter.progress,
                                   cancel=cancel, device=args.device)
            with project.edit():
                bound = edits.register_prior(project.story, prior, bind=args.bind)
        else:  # the prior as a task on a Ray worker's GPU (dreamrunner.distributed)
            from ..distributed import GraphRun, PriorTask, story_graph

            finished = []

            def commit(task: PriorTask, prior, outcome) -> None:
                with project.edit():
                    finished.append((prior, outcome, edits.register_prior(project.story, prior, bind=task.bind)))

            task = PriorTask(kind, target, args.steps, args.bind)
            GraphRun(cluster, project, backend, commit_prior=commit, commit_scene=None, model_path=args.model_path,
                     memory=memory_options(args), progress=reporter.progress,
                     cancel=cancel).run(story_graph(project.story, [task], [])).raise_failures()
            [(prior, outcome, bound)] = finished
    status = "reused (already trained with these inputs and settings)" if outcome.cached else "trained"
    is_noise = bool(outcome.card.get("is_noise"))
    noise = "  [random weights: this prior is noise, not a result]" if is_noise else ""
    low_noise = outcome.card.get("low_noise_file")  # Wan 2.2 A14B: a LoRA per expert
    experts = f" and {low_noise} (low-noise expert)" if low_noise else ""
    reporter.result(f"{prior.id}: {status} -> {prior.path}{experts}{noise}", prior=prior.id, path=prior.path,
                    cached=outcome.cached, bound=bound, is_noise=is_noise)
    reporter.result(f"{prior.id}: bound to {', '.join(bound)}" if bound else f"{prior.id}: bound to no scene",
                    prior=prior.id, bound=bound)
    return 0


def run_train_subject(args: argparse.Namespace) -> int:
    return _run(args, "subject", args.character)


def run_train_motion(args: argparse.Namespace) -> int:
    return _run(args, "motion", args.motion)


def run_import_lora(args: argparse.Namespace) -> int:
    from ..backends.wan import EXPERTS
    from ..priors.imports import import_lora

    if not 0.0 <= args.scale <= 4.0:
        raise UsageError(f"--scale must be between 0 and 4, got {args.scale}")
    project = Project.load(args.project)
    target = edits.find_character(project.story, args.target).id if args.kind == "subject" else args.target
    prior = import_lora(project, args.file, args.kind, target, args.prior_id, args.low_noise)
    with project.edit():
        bound = edits.register_prior(project.story, prior, bind=args.bind, scale=args.scale)
    card = prior.card
    reporter = args.reporter
    reporter.result(f"{prior.id}: imported {args.file} ({card['layout']} layout, blocks {card['blocks']}, "
                    f"parity {card['block_parity']}, rank {card['rank']}, alpha {card['alpha']}) -> {prior.path}",
                    prior=prior.id, path=prior.path, layout=card["layout"], blocks=card["blocks"],
                    block_parity=card["block_parity"], rank=card["rank"], alpha=card["alpha"])
    if args.low_noise is not None:
        low_noise = str(Path(prior.path).with_name(card["low_noise_file"]))
        reporter.result(f"{prior.id}: imported {args.low_noise} as the low-noise expert's LoRA -> {low_noise}",
                        prior=prior.id, low_noise_path=low_noise)
    reporter.result(f"{prior.id}: bound to {', '.join(bound)} at scale {args.scale}" if bound
                    else f"{prior.id}: bound to no scene", prior=prior.id, bound=bound, scale=args.scale)
    backend = project.story.settings.render.backend
    if args.low_noise is not None and EXPERTS.get(backend, 1) < 2:  # kept: the backend may be switched later
        reporter.warn(f"{prior.id}: a two-expert prior renders on Wan 2.2 A14B only, and this story renders with "
                      f"{backend}: the scenes it is bound to stop with an error until it is unbound or the backend "
                      f"is wan2.2-a14b")
    return 0
