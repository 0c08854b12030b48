"""The two test-time tuning loops on a frozen CogVideoX or Wan transformer, with checkpoints to resume from.

Wan trains on its own flow-matching objective (`objectives.flow_targets`) with the same losses, block
placement and dual-path schedule. A trainer tunes one transformer; on Wan 2.2 A14B `priors.service` runs one per
expert, each drawing its timesteps from its own side of the boundary (`draws`, `objectives.expert_draws`).

`SubjectTrainer`: one LoRA on the subject blocks (0-based odd), learned from static clips of reference images,
loss on the first latent frame. `MotionTrainer`: MotionDirector's dual path as the authors' released code runs
it: a temporal LoRA on the motion blocks (0-based even) and one appearance LoRA per clip on the subject blocks,
each with its own AdamW. Every step draws one clip, one timestep and one noise for both paths, then
- updates the temporal LoRA (full MSE plus appearance-debiased MSE), with the clip's appearance LoRA on but
  frozen in 80% of steps and off in the other 20%;
- in those same 80% of steps, updates the clip's appearance LoRA alone (temporal LoRA off; MSE on one random
  latent frame).
The temporal pass runs first, so both passes see the appearance LoRA as it was before the step, as in the
released code, which computes both losses before either update. Only the temporal LoRA is kept.

All sampling (clip, step kind, timestep, noise, latent sample, frames) comes from one CPU generator; LoRA
dropout draws from torch's global generator, seeded from the settings for the run (and restored after it).
Both states are checkpointed with the LoRA weights, the optimizers' states and the step, so a resumed run
continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..jobs import CancelToken, EtaClock, Progress, ProgressCallback
from ..story import PriorSettings
from . import lora, speed
from .memory import attention_backend, configure_checkpointing
from .objectives import debiased_temporal_loss, diffusion_targets, flow_sigmas, flow_targets, frame_loss

CHECKPOINT_FILE = "checkpoint.pt"
# MotionDirector and the released code: a temporal update every step, a spatial (appearance) update in 80% of
# them; the appearance LoRA is off in the temporal pass of the other 20%.
SPATIAL_UPDATE_PROBABILITY = 0.8


@dataclass
class Example:
    """A prepared training clip: the VAE posterior of its latents and its caption's T5 embeddings."""

    latent_mean: torch.Tensor  # [latent_frames, channels, h, w]
    latent_std: torch.Tensor
    text: torch.Tensor  # [tokens, dim]


@dataclass(frozen=True)
class JobShare:
    """Where a trainer's steps sit in a longer job (a Wan 2.2 A14B prior trains one LoRA per expert, one after the
    other): its progress and ETA count over the job."""

    before: int  # steps of the job that earlier trainers run
    total: int  # steps of the whole job
    message: str  # what this trainer's part is, e.g. "high-noise expert"


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0


class PriorTrainer:
    """The loop both priors share: sample, predict, step the optimizer, report, checkpoint, obey cancel."""

    kind: str
    stage: str

    def __init__(self, transformer, scheduler, examples: list[Example], settings: PriorSettings, workdir: Path,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, rotary=None,
                 prefer_cudnn_attention: bool = True, draws: tuple[int, int] | None = None) -> None:
        """`draws`: the training timesteps t are drawn from [first, end) of [0, num_train_timesteps) (one Wan
        2.2 A14B expert's range, `objectives.expert_draws`); None: all of them."""
        if not examples:
            raise ValueError("a prior needs at least one training example")
        self.transformer = transformer
        self.scheduler = scheduler
        self.examples = examples
        self.settings = settings
        self.workdir = Path(workdir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.rotary = rotary
        self.prefer_cudnn_attention = prefer_cudnn_attention
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.draws = draws or (0, scheduler.config.num_train_timesteps)
        from ..backends import model_family

        # Wan: flow-matching targets, latents [B, C, F, h, w] at the transformer (the trainer keeps [B, F, C, h, w]).
        self.wan = model_family(transformer) == "wan"
        self._given = (transformer.device, transformer.dtype)  # restored by close()
        transformer.requires_grad_(False)
        if transformer.dtype != dtype or transformer.device != self.device:
            transformer.to(self.device, dtype)
        with torch.random.fork_rng(devices=[]):  # LoRA init from the seed: the same request gives the same prior
            torch.manual_seed(settings.seed)
            for name in self.adapters:
                lora.add_prior_adapter(transformer, name, self.adapter_kind(name), settings.rank)
        transformer.eval()  # new LoRA layers start in training mode: no dropout outside train()
        for name in self.adapters:  # LoRA weights train in fp32 even on a bf16 backbone
            for parameter in lora.adapter_parameters(transformer, name):
                parameter.data = parameter.data.float()
        if settings.lora_compute == "backbone":
            speed.compute_lora_in_input_dtype(transformer, self.adapters)
        self.dropout = lora.OutputDropout(transformer, self.adapters, settings.lora_dropout)
        # One optimizer per adapter, as in the released code (AdamW is per parameter, so this only matters for
        # which adapters a step updates). Fused on CUDA: one kernel per update; the same AdamW arithmetic.
        self.optimizers = {
            name: torch.optim.AdamW(lora.adapter_parameters(transformer, name), lr=settings.learning_rate,
                                    weight_decay=settings.weight_decay, fused=True if self.device.type == "cuda" else None)
            for name in self.adapters}
        configure_checkpointing(transformer, settings.gradient_checkpointing, settings.uncheckpointed_blocks)
        self.compiled = speed.should_compile(settings.compile_blocks, self.device)
        if self.compiled:
            speed.compile_blocks(transformer)

    # What a prior kind defines: its adapters, the one it keeps, and its loss.
    adapters: list[str]
    kept_adapter: str

    def adapter_kind(self, name: str) -> str:
        raise NotImplementedError

    def loss(self) -> torch.Tensor:
        """The kept adapter's objective on one random draw (no update)."""
        raise NotImplementedError

    def step(self) -> float:
        """One training step; returns the kept adapter's loss."""
        raise NotImplementedError

    @property
    def total_steps(self) -> int:
        return self.settings.steps_for(self.kind)

    # Shared pieces.
    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _sample(self, indices: list[int]):
        """Noisy latents, v-targets, timesteps and text embeddings for the examples at `indices`."""
        mean = torch.stack([self.examples[i].latent_mean for i in indices])
        std = torch.stack([self.examples[i].latent_std for i in indices])
        text = torch.stack([self.examples[i].text for i in indices])
        latents = mean + std * torch.randn(mean.shape, generator=self.generator)
        noise = torch.randn(latents.shape, generator=self.generator)
        timesteps = torch.randint(*self.draws, (len(indices),), generator=self.generator)
        if self.wan:
            noisy, target = flow_targets(self.scheduler, latents, noise, timesteps)
            timesteps = flow_sigmas(self.scheduler, timesteps) * self.scheduler.config.num_train_timesteps
        else:
            noisy, target = diffusion_targets(self.scheduler, latents, noise, timesteps)
        to = dict(device=self.device, dtype=self.dtype)
        return noisy.to(**to), target.to(self.device), timesteps.to(self.device), text.to(**to)

    def predict(self, noisy: torch.Tensor, text: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        with attention_backend(self.device, self.prefer_cudnn_attention):
            if self.wan:
                return self.transformer(hidden_states=noisy.transpose(1, 2), encoder_hidden_states=text,
                                        timestep=timesteps, return_dict=False)[0].transpose(1, 2)
            return self.transformer(hidden_states=noisy, encoder_hidden_states=text, timestep=timesteps,
                                    image_rotary_emb=self.rotary, return_dict=False)[0]

    def update(self, adapter: str, loss: torch.Tensor) -> None:
        """Back-propagate `loss` and step the adapter's own optimizer."""
        optimizer = self.optimizers[adapter]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # Randomness of dropout: torch's global generator of the training device, owned by the run.
    def _rng_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def _rng_state(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        for index in self._rng_devices():
            state["cuda"] = torch.cuda.get_rng_state(index)
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["cpu"])
        for index in self._rng_devices():
            torch.cuda.set_rng_state(state["cuda"], index)

    def _seed_rng(self) -> None:
        torch.default_generator.manual_seed(self.settings.seed)
        for index in self._rng_devices():
            with torch.cuda.device(index):
                torch.cuda.manual_seed(self.settings.seed)

    # Checkpoints.
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT_FILE

    def save_checkpoint(self, step: int, losses: list[float]) -> None:
        state = {
            "kind": self.kind, "step": step, "losses": list(losses),
            "adapters": {name: lora.adapter_state_dict(self.transformer, name) for name in self.adapters},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "generator": self.generator.get_state(), "global_rng": self._rng_state(),
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        temporary = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.checkpoint_path)  # a crash mid-save keeps the previous checkpoint

    def load_checkpoint(self) -> tuple[int, list[float]]:
        """Restore the last checkpoint if there is one; returns (step, losses so far)."""
        if not self.checkpoint_path.is_file():
            return 0, []
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        for name in self.adapters:
            lora.load_adapter_state(self.transformer, name, state["adapters"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"])
        self._set_rng_state(state["global_rng"])
        return int(state["step"]), list(state["losses"])

    def train(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
              share: JobShare | None = None) -> TrainResult:
        """Run (or resume) the steps; `share`: this trainer's part of a longer job, which progress reports."""
        total = self.total_steps
        share = share or JobShare(0, total, "")
        # The run owns the global generator (dropout) and gives the caller's state back afterwards.
        with torch.random.fork_rng(devices=self._rng_devices()):
            self._seed_rng()
            start, losses = self.load_checkpoint()
            clock = EtaClock(share.total, start_step=share.before + start)
            self.transformer.train()
            try:
                for step in range(start + 1, total + 1):
                    if cancel is not None and cancel.cancelled:
                        self.save_checkpoint(step - 1, losses)
                        cancel.check()
                    losses.append(self.step())
                    if step % self.settings.checkpoint_every == 0 and step < total:
                        self.save_checkpoint(step, losses)
                    if progress is not None:
                        progress(Progress(stage=self.stage, step=share.before + step, total=share.total,
                                          message=share.message, loss=losses[-1],
                                          eta_seconds=clock.eta(share.before + step)))
            finally:
                self.transformer.eval()
        return TrainResult(steps=total, losses=losses, resumed_from=start)

    def close(self) -> None:
        """Take the training adapters and checkpointing off the transformer, leaving it as it was given."""
        self.dropout.remove()
        self.transformer.disable_gradient_checkpointing()
        if self.compiled:
            speed.uncompile_blocks(self.transformer)
        speed.restore_lora_input_cast(self.transformer)
        with warnings.catch_warnings():  # deleting the active adapter is the point here
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            self.transformer.delete_adapters(self.adapters)
        if not getattr(self.transformer, "peft_config", None):
            self.transformer.unload_lora()  # no adapter left: give back plain linears
        if (self.transformer.device, self.transformer.dtype) != self._given:
            self.transformer.to(*self._given)


class SubjectTrainer(PriorTrainer):
    kind = "subject"
    stage = "subject prior"
    adapters = ["subject"]
    kept_adapter = "subject"

    def adapter_kind(self, name: str) -> str:
        return "subject"

    def loss(self) -> torch.Tensor:
        indices = [self._randint(len(self.examples)) for _ in range(self.settings.batch_size)]
        noisy, target, timesteps, text = self._sample(indices)
        lora.activate(self.transformer, ["subject"], trainable=["subject"])
        return frame_loss(self.predict(noisy, text, timesteps), target, 0)

    def step(self) -> float:
        loss = self.loss()
        self.update("subject", loss)
        return float(loss.detach())


class MotionTrainer(PriorTrainer):
    kind = "motion"
    stage = "motion prior"
    kept_adapter = "temporal"

    def __init__(self, transformer, scheduler, examples: list[Example], *args, **kwargs) -> None:
        self.adapters = ["temporal"] + [f"appearance_{i}" for i in range(len(examples))]
        super().__init__(transformer, scheduler, examples, *args, **kwargs)
        self.spatial_updates = 0  # steps that also updated an appearance LoRA

    def adapter_kind(self, name: str) -> str:
        return "motion" if name == "temporal" else "subject"

    def temporal_loss(self, sample, appearance: str | None) -> torch.Tensor:
        """Full plus appearance-debiased MSE of the temporal LoRA; `appearance` on but frozen, or None: off."""
        noisy, target, timesteps, text = sample
        anchor = self._randint(noisy.shape[1])
        lora.activate(self.transformer, ["temporal"] + ([appearance] if appearance else []), trainable=["temporal"])
        return debiased_temporal_loss(self.predict(noisy, text, timesteps), target, anchor=anchor)

    def loss(self) -> torch.Tensor:
        clip = self._randint(len(self.examples))
        return self.temporal_loss(self._sample([clip]), f"appearance_{clip}")

    def step(self) -> float:
        clip = self._randint(len(self.examples))
        spatial = float(torch.rand((), generator=self.generator)) < SPATIAL_UPDATE_PROBABILITY
        sample = self._sample([clip])  # one draw of timestep and noise for both paths, as in the released code
        appearance = f"appearance_{clip}"
        temporal = self.temporal_loss(sample, appearance if spatial else None)
        self.update("temporal", temporal)
        if spatial:
            noisy, target, timesteps, text = sample
            frame = self._randint(noisy.shape[1])
            lora.activate(self.transformer, [appearance], trainable=[appearance])
            self.update(appearance, frame_loss(self.predict(noisy, text, timesteps), target, frame))
            self.spatial_updates += 1
        return float(temporal.detach())
