"""Prior jobs: prepare, tune (or resume, or reuse) and save a prior's file, and hand back the `Prior` that
describes it. The job never changes the project's story: its caller commits the prior
(`dreamrunner.edits.register_prior`, which also binds it to its scenes) to the live story and saves it.

A prior is identified by a key over (model, inputs, settings): the model fingerprint, the prior kind and
target, each source file's SHA-256 with its caption, the frame geometry and the settings that change what
is learned. An identical request finds the finished prior and does not train again; an interrupted one
resumes from its last checkpoint in `<priors>/.work/<key>/`.

On Wan 2.2 A14B a prior is one LoRA per expert, trained one after the other, each on its own expert with timesteps
drawn from that expert's side of the boundary (`prior_experts`); the high-noise LoRA is the prior's file, the
low-noise one `<name>-low-noise.safetensors` beside it, and the card names it (`low_noise_file`, `experts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attention.lora import CARD_EXPERTS, LOW_NOISE_CARD_KEY, low_noise_file
from ..backends import ModelComponents, default_device, prior_training_refusal, vae_spatial
from ..errors import DreamRunnerError
from ..files import file_sha256
from ..jobs import CancelToken, Progress, ProgressCallback
from ..media import DECODE_VERSION
from ..project import Project
from ..story import Prior, PriorSettings, slug
from . import lora
from .data import TrainingClip, subject_caption
from .encoding import EncodingCache
from .objectives import expert_draws
from .training import Example, JobShare, MotionTrainer, SubjectTrainer, TrainResult

CARD_FORMAT = "dreamrunner-prior/1"
PRIORS_DIR = "priors"
CACHE_DIR = ".cache"
# Settings that change what is learned; checkpointing cadence and memory modes do not. The steps are keyed as
# resolved for the kind (`PriorSettings.steps_for`).
KEY_SETTINGS = ("rank", "learning_rate", "weight_decay", "batch_size", "lora_dropout", "seed")
# Bump when the training method changes what the same request learns. 2: issue 16 (the released code's block
# parity, clip timing, dual-path schedule, LoRA init and dropout).
METHOD_VERSION = 2


class PriorError(DreamRunnerError):
    pass


@dataclass(frozen=True)
class PriorRequest:
    kind: str  # "subject" or "motion"
    target: str  # character id or motion text
    clips: tuple[TrainingClip, ...]
    settings: PriorSettings
    labels: tuple[str, ...] = ()  # how the card names each source (project-relative paths); default file names

    def geometry(self, components: ModelComponents) -> tuple[int, int, int, int]:
        """(frames, height, width, fps) to train at: the model's own, or the motion resolution if one is set."""
        video = components.video_defaults
        frames, height, width = video["num_frames"], video["height"], video["width"]
        if self.kind == "motion" and self.settings.motion_resolution is not None:
            height, width = self.settings.motion_resolution
        return frames, height, width, video["fps"]


@dataclass(frozen=True)
class Expert:
    """One transformer a prior trains a LoRA on: the model's only one, or one expert of Wan 2.2 A14B."""

    transformer: Any
    name: str = ""  # "high-noise" or "low-noise" on A14B; "" for a one-transformer model
    draws: tuple[int, int] | None = None  # its training timestep draws (`objectives.expert_draws`); None: all
    file_suffix: str = ""  # after the prior's name in its file's name (`lora.LOW_NOISE_SUFFIX`)


def prior_experts(components: ModelComponents) -> list[Expert]:
    """What a prior trains on the components: one LoRA on the transformer, or on Wan 2.2 A14B one per expert, each
    on its own timesteps, as WanPipeline switches at its boundary_ratio: the high-noise `transformer` (the prior's
    file) on timesteps >= boundary_ratio * num_train_timesteps, the low-noise `transformer_2` below them. The
    experts are separate weights, each specialised on its noise range, so each gets its own LoRA."""
    if components.transformer_2 is None:
        return [Expert(components.transformer)]
    high, low = expert_draws(components.scheduler, components.pipeline_options["boundary_ratio"])
    (high_name, _), (low_name, _) = CARD_EXPERTS
    return [Expert(components.transformer, high_name, high),
            Expert(components.transformer_2, low_name, low, lora.LOW_NOISE_SUFFIX)]


def _experts_card(components: ModelComponents, files: list[Path], results: list[TrainResult]) -> dict:
    """The card entries of a two-expert prior: its low-noise file, the boundary, and each expert's LoRA (file,
    model timesteps [first, end), losses)."""
    boundary = components.pipeline_options["boundary_ratio"]
    total = components.scheduler.config.num_train_timesteps
    ranges = ([boundary * total, float(total)], [0.0, boundary * total])  # high noise, low noise
    return {
        LOW_NOISE_CARD_KEY: files[1].name, "boundary_ratio": boundary,
        "experts": [{"expert": expert, "transformer": transformer, "file": file.name, "timesteps": timesteps,
                     "resumed_from": result.resumed_from, "loss_first": result.losses[0],
                     "loss_last": result.losses[-1]}
                    for (expert, transformer), timesteps, file, result in zip(CARD_EXPERTS, ranges, files, results)],
    }


@dataclass
class PriorOutcome:
    path: Path
    card: dict
    cached: bool


def prior_key(fingerprint: str, request: PriorRequest, geometry: tuple[int, int, int, int]) -> str:
    missing = [clip.path for clip in request.clips if not Path(clip.path).is_file()]
    if missing:
        raise PriorError(f"{request.kind} prior {request.target!r}: source file {missing[0]} does not exist")
    sources = [(file_sha256(clip.path), clip.caption, clip.static) for clip in request.clips]
    settings = {name: getattr(request.settings, name) for name in KEY_SETTINGS}
    settings["steps"] = request.settings.steps_for(request.kind)
    payload = [METHOD_VERSION, fingerprint, request.kind, request.target, sources, list(geometry), settings,
               DECODE_VERSION]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _device_and_dtype(device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    device = torch.device(device or default_device())
    return device, (torch.bfloat16 if device.type == "cuda" else torch.float32)


def train_prior(components: ModelComponents, request: PriorRequest, folder: Path,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                device: str | torch.device | None = None) -> PriorOutcome:
    """Tune one prior into `folder` (or find it there already) and return its file and card. On Wan 2.2 A14B the
    file is the high-noise expert's LoRA and the card names the low-noise one's (`prior_experts`); progress counts
    both experts' steps as one job."""
    # CogVideoX 1.5: the training loops feed whole latent clips, unpadded, and its transformer needs them in pairs.
    if (refusal := prior_training_refusal(components.name)) is not None:
        raise PriorError(refusal)
    if request.kind == "motion" and request.settings.batch_size != 1:
        raise PriorError("motion priors train one clip per step (one appearance LoRA per clip): set batch_size to 1")
    if not request.clips:
        raise PriorError(f"{request.kind} prior {request.target!r} has no source images or clips")
    folder = Path(folder)
    device, dtype = _device_and_dtype(device)
    cache = EncodingCache(folder / CACHE_DIR, components)
    geometry = request.geometry(components)
    token = vae_spatial(components.name) * 2  # pixels per token side: the VAE's factor, then 2x2 patches
    if geometry[1] % token or geometry[2] % token:
        raise PriorError(f"{request.kind} prior {request.target!r}: {geometry[1]}x{geometry[2]} (height x width) is "
                         f"not a multiple of {components.name}'s {token}-pixel tokens; set motion_resolution to one")
    key = prior_key(cache.fingerprint, request, geometry)
    name = f"{request.kind}-{slug(request.target)}-{key[:12]}"
    experts = prior_experts(components)
    files = [folder / f"{name}{expert.file_suffix}.safetensors" for expert in experts]
    weights = files[0]
    if all(file.is_file() for file in files) and (folder / f"{name}.json").is_file():
        card = lora.read_card(weights)
        # Reused only while the card names its own low-noise file (none on one transformer): a card edited to name
        # another (or none) would be registered as is and fail every render, or put one LoRA on both experts.
        low_noise = files[1].name if len(files) > 1 else None
        if card.get("key") == key and card.get(LOW_NOISE_CARD_KEY) == low_noise:
            if progress is not None:
                progress(Progress(stage=f"{request.kind} prior", step=card["steps"], total=card["steps"],
                                  message="already trained with these inputs and settings: reused"))
            return PriorOutcome(weights, card, cached=True)

    examples = []
    for number, clip in enumerate(request.clips, start=1):
        if cancel is not None:
            cancel.check()
        mean, std = cache.latents(clip, *geometry)
        examples.append(Example(mean, std, cache.text(clip.caption)))
        if progress is not None:
            progress(Progress(stage="encoding", step=number, total=len(request.clips), message=clip.path.name))

    rotary = None
    if getattr(components.transformer.config, "use_rotary_positional_embeddings", False):  # CogVideoX 5B
        latent_frames = examples[0].latent_mean.shape[0]
        rotary = cache.pipeline._prepare_rotary_positional_embeddings(geometry[1], geometry[2], latent_frames, device)
    trainer_class = SubjectTrainer if request.kind == "subject" else MotionTrainer
    workdir = folder / ".work" / key
    steps = request.settings.steps_for(request.kind)  # each expert's: each LoRA learns its own range from zero
    started = time.monotonic()
    results = []
    for index, (expert, file) in enumerate(zip(experts, files)):
        # One expert on the device at a time: the trainer moves its transformer there and back when it closes.
        trainer = trainer_class(expert.transformer, components.scheduler, examples, request.settings,
                                workdir / expert.name, device=device, dtype=dtype, rotary=rotary, draws=expert.draws)
        try:
            share = JobShare(index * steps, len(experts) * steps, f"{expert.name} expert" if expert.name else "")
            results.append(trainer.train(progress=progress, cancel=cancel, share=share))
            # Staged in the work folder: the project's priors never hold a half-trained pair (a cancel in the
            # low-noise expert left the high-noise file there without a card).
            lora.save_prior(expert.transformer, trainer.kept_adapter, request.kind, workdir, file.stem, None)
            if index + 1 < len(experts):  # its last checkpoint at its end: a resumed job does not train it again
                trainer.save_checkpoint(results[-1].steps, results[-1].losses)
        finally:
            trainer.close()
    result = results[0]  # the prior's file (the high-noise expert's on A14B)
    labels = request.labels or tuple(clip.path.name for clip in request.clips)
    card = {
        "format": CARD_FORMAT, "key": key, "kind": request.kind, "target": request.target,
        "learned": ("the appearance of the character bound to its token" if request.kind == "subject"
                    else "the motion shared by the clips (temporal LoRA; per-clip appearance LoRAs dropped)"),
        "sources": [{"path": label, "sha256": file_sha256(clip.path), "caption": clip.caption}
                    for label, clip in zip(labels, request.clips)],
        "settings": request.settings.model_dump(mode="json"),
        "frames": geometry[0], "height": geometry[1], "width": geometry[2], "fps": geometry[3],
        "method_version": METHOD_VERSION,
        "blocks": lora.prior_blocks(request.kind, components.transformer.config.num_layers),
        "block_parity": lora.block_parity(request.kind),
        "modules": list(lora.target_modules(components.family)), "rank": request.settings.rank, "alpha": request.settings.rank,
        "model": components.name, "model_fingerprint": cache.fingerprint, "is_noise": components.is_noise,
        "steps": result.steps, "resumed_from": result.resumed_from,
        "loss_first": result.losses[0], "loss_last": result.losses[-1],
        "train_seconds": round(time.monotonic() - started, 2),
    }
    if len(experts) > 1:
        card |= _experts_card(components, files, results)
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:  # both experts' files appear together
        os.replace(workdir / file.name, file)
    lora.write_card(weights, card)
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):  # `.work` itself, once no other prior is part way
        workdir.parent.rmdir()
    return PriorOutcome(weights, card, cached=False)


def _prior(project: Project, kind: str, target: str, outcome: PriorOutcome) -> Prior:
    return Prior(id=f"{kind}-{slug(target)}", kind=kind, target=target, path=project.relative(outcome.path),
                 card=outcome.card)


def _settings(project: Project, max_steps: int | None) -> PriorSettings:
    settings = project.story.settings.prior
    return settings.model_copy(update={"max_steps": max_steps}) if max_steps else settings


def subject_request(project: Project, character_id: str, max_steps: int | None = None) -> PriorRequest:
    """What a character's subject prior learns from: its reference images, captioned with its token."""
    try:
        character = project.story.character(character_id)
    except KeyError:
        known = ", ".join(c.id for c in project.story.characters) or "none"
        raise PriorError(f"no character {character_id!r} in the project (characters: {known})") from None
    if not character.reference_images:
        raise PriorError(f"character {character_id!r} has no reference images to learn a subject prior from")
    caption = subject_caption(character)
    clips = tuple(TrainingClip(project.resolve(p), caption, static=True) for p in character.reference_images)
    return PriorRequest("subject", character_id, clips, _settings(project, max_steps), tuple(character.reference_images))


def motion_request(project: Project, motion: str, max_steps: int | None = None) -> PriorRequest:
    """What a motion prior learns from: the clips approved for `motion` in any scene of the project."""
    seen, clips, labels = set(), [], []
    for scene in project.story.scenes:
        for clip in scene.approved_clips:
            if clip.motion == motion and clip.path not in seen:
                seen.add(clip.path)
                clips.append(TrainingClip(project.resolve(clip.path), clip.caption or motion, static=False))
                labels.append(clip.path)
    if not clips:
        motions = sorted({c.motion for s in project.story.scenes for c in s.approved_clips})
        raise PriorError(f"no approved clips for motion {motion!r} (motions with clips: {', '.join(motions) or 'none'})")
    return PriorRequest("motion", motion, tuple(clips), _settings(project, max_steps), tuple(labels))


def current_prior(project: Project, request: PriorRequest, model_name: str) -> Prior | None:
    """The registered prior for `request` when it is up to date, without loading a model: its file (and a
    two-expert prior's low-noise file) is there and its card names the same model, the same source files (by
    SHA-256) and captions, and the same settings. None when it must be trained (or found by `train_prior`'s
    content-keyed cache).

    The card's model name stands for the weights here; a checkpoint changed under the same name is caught
    by `train_prior`'s key (which fingerprints the weights) only when training is asked for."""
    prior_id = f"{request.kind}-{slug(request.target)}"
    prior = next((p for p in project.story.priors if p.id == prior_id), None)
    if prior is None:
        return None
    path = project.resolve(prior.path)
    low_noise = low_noise_file(path, prior.card)  # a two-expert prior is current with both its files only
    if not path.is_file() or (low_noise is not None and not low_noise.is_file()):
        return None
    card = prior.card
    sources = [(s.get("path"), s.get("sha256"), s.get("caption")) for s in card.get("sources", [])]
    wanted = [(label, file_sha256(clip.path) if Path(clip.path).is_file() else None, clip.caption)
              for label, clip in zip(request.labels, request.clips)]
    settings = card.get("settings", {})
    same_settings = all(settings.get(name) == getattr(request.settings, name) for name in KEY_SETTINGS)
    return prior if card.get("model") == model_name and sources == wanted and same_settings else None


def train_subject(project: Project, character_id: str, components: ModelComponents, max_steps: int | None = None,
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                  device: str | torch.device | None = None) -> tuple[Prior, PriorOutcome]:
    """Tune the subject prior of a character from its reference images; returns the prior to register."""
    request = subject_request(project, character_id, max_steps)
    outcome = train_prior(components, request, project.media / PRIORS_DIR, progress, cancel, device)
    return _prior(project, "subject", character_id, outcome), outcome


def train_motion(project: Project, motion: str, components: ModelComponents, max_steps: int | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 device: str | torch.device | None = None) -> tuple[Prior, PriorOutcome]:
    """Tune the motion prior of `motion` from the clips approved for it in the project's scenes; returns the
    prior to register."""
    request = motion_request(project, motion, max_steps)
    outcome = train_prior(components, request, project.media / PRIORS_DIR, progress, cancel, device)
    return _prior(project, "motion", motion, outcome), outcome
