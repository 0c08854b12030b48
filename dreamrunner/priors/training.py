"""The two test-time tuning loops on a frozen CogVideoX transformer, with checkpoints to resume from.

`SubjectTrainer`: one LoRA on the even blocks, learned from static clips of reference images, loss on the
first latent frame. `MotionTrainer`: MotionDirector's dual path: a temporal LoRA on the odd blocks and one
appearance LoRA per clip on the even blocks; each step is either a spatial step (the clip's appearance LoRA
alone, loss on one random latent frame) or a temporal step (temporal LoRA with the clip's appearance LoRA on
but frozen, full MSE plus appearance-debiased MSE). Only the temporal LoRA is kept.

All randomness (clip, step kind, timestep, noise, latent sample, frames) comes from one CPU generator whose
state is checkpointed with the LoRA weights, the optimizer state and the step, so a resumed run continues
exactly where the checkpoint left it.
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
from .objectives import debiased_temporal_loss, diffusion_targets, frame_loss

CHECKPOINT_FILE = "checkpoint.pt"
# MotionDirector runs the spatial loss on 80% of its steps and the temporal loss on all of them; one pass per
# step with spatial steps 0.8 / 1.8 of the time keeps that ratio at half the cost of a step.
SPATIAL_STEP_FRACTION = 0.8 / 1.8


@dataclass
class Example:
    """A prepared training clip: the VAE posterior of its latents and its caption's T5 embeddings."""

    latent_mean: torch.Tensor  # [latent_frames, channels, h, w]
    latent_std: torch.Tensor
    text: torch.Tensor  # [tokens, dim]


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
                 prefer_cudnn_attention: bool = True) -> None:
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
        self._given = (transformer.device, transformer.dtype)  # restored by close()
        transformer.requires_grad_(False)
        if transformer.dtype != dtype or transformer.device != self.device:
            transformer.to(self.device, dtype)
        with torch.random.fork_rng(devices=[]):  # LoRA init from the seed: the same request gives the same prior
            torch.manual_seed(settings.seed)
            for name in self.adapters:
                lora.add_prior_adapter(transformer, name, self.adapter_kind(name), settings.rank)
        parameters = [p for name in self.adapters for p in lora.adapter_parameters(transformer, name)]
        for parameter in parameters:  # LoRA weights train in fp32 even on a bf16 backbone
            parameter.data = parameter.data.float()
        if settings.lora_compute == "backbone":
            speed.compute_lora_in_input_dtype(transformer, self.adapters)
        # One fused kernel for the update of every LoRA tensor on CUDA; the same AdamW arithmetic.
        self.optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                           fused=True if self.device.type == "cuda" else None)
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
        raise NotImplementedError

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
        timesteps = torch.randint(self.scheduler.config.num_train_timesteps, (len(indices),), generator=self.generator)
        noisy, target = diffusion_targets(self.scheduler, latents, noise, timesteps)
        to = dict(device=self.device, dtype=self.dtype)
        return noisy.to(**to), target.to(self.device), timesteps.to(self.device), text.to(**to)

    def predict(self, noisy: torch.Tensor, text: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        with attention_backend(self.device, self.prefer_cudnn_attention):
            return self.transformer(hidden_states=noisy, encoder_hidden_states=text, timestep=timesteps,
                                    image_rotary_emb=self.rotary, return_dict=False)[0]

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # Checkpoints.
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / CHECKPOINT_FILE

    def save_checkpoint(self, step: int, losses: list[float]) -> None:
        state = {
            "kind": self.kind, "step": step, "losses": list(losses),
            "adapters": {name: lora.adapter_state_dict(self.transformer, name) for name in self.adapters},
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
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
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        return int(state["step"]), list(state["losses"])

    def train(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> TrainResult:
        total = self.settings.max_steps
        start, losses = self.load_checkpoint()
        clock = EtaClock(total, start_step=start)
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
                    progress(Progress(stage=self.stage, step=step, total=total, loss=losses[-1],
                                      eta_seconds=clock.eta(step)))
        finally:
            self.transformer.eval()
        return TrainResult(steps=total, losses=losses, resumed_from=start)

    def close(self) -> None:
        """Take the training adapters and checkpointing off the transformer, leaving it as it was given."""
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


class MotionTrainer(PriorTrainer):
    kind = "motion"
    stage = "motion prior"
    kept_adapter = "temporal"

    def __init__(self, transformer, scheduler, examples: list[Example], *args, **kwargs) -> None:
        self.adapters = ["temporal"] + [f"appearance_{i}" for i in range(len(examples))]
        super().__init__(transformer, scheduler, examples, *args, **kwargs)

    def adapter_kind(self, name: str) -> str:
        return "motion" if name == "temporal" else "subject"

    def loss(self) -> torch.Tensor:
        clip = self._randint(len(self.examples))
        spatial = float(torch.rand((), generator=self.generator)) < SPATIAL_STEP_FRACTION
        noisy, target, timesteps, text = self._sample([clip])
        frame = self._randint(noisy.shape[1])  # the spatial step's frame, or the temporal step's anchor
        appearance = f"appearance_{clip}"
        if spatial:
            lora.activate(self.transformer, [appearance], trainable=[appearance])
            return frame_loss(self.predict(noisy, text, timesteps), target, frame)
        lora.activate(self.transformer, ["temporal", appearance], trainable=["temporal"])
        return debiased_temporal_loss(self.predict(noisy, text, timesteps), target, anchor=frame)
