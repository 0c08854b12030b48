"""Training objectives of the subject and motion priors: v-prediction targets (CogVideoX) or flow-matching
targets (Wan), and the losses on them.

Tensors are laid out as the CogVideoX transformer takes them: [batch, frames, channels, height, width],
so the latent-frame axis is 1 (MotionDirector's UNet code uses axis 2; the formulas are the same).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FRAME_AXIS = 1


def diffusion_targets(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """Noisy latents and the v-prediction target, both from the model's own scheduler."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = scheduler.get_velocity(latents, noise, timesteps)
    return noisy, target


def flow_sigmas(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Wan's noise levels for training draws t in [0, num_train_timesteps): s = t / num_train_timesteps, shifted
    by the scheduler's `flow_shift` as Wan samples, s' = shift s / (1 + (shift - 1) s). float32 [batch]."""
    shift = float(getattr(scheduler.config, "flow_shift", None) or 1.0)
    sigma = timesteps.double() / scheduler.config.num_train_timesteps
    return (shift * sigma / (1 + (shift - 1) * sigma)).float()


def expert_draws(scheduler, boundary_ratio: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Wan 2.2 A14B: the training draws t in [0, num_train_timesteps) whose model timestep (`flow_sigmas` *
    num_train_timesteps, what the transformer is called with) is on each expert's side of the boundary, as
    WanPipeline switches: timestep >= boundary_ratio * num_train_timesteps runs the high-noise `transformer`, below
    it the low-noise `transformer_2`. The model timestep grows with the draw, so each side is one range of draws.
    Returns ((first, end) of the high-noise draws, (first, end) of the low-noise draws), ints, end exclusive."""
    total = scheduler.config.num_train_timesteps
    model_timesteps = flow_sigmas(scheduler, torch.arange(total)) * total  # the trainers' own arithmetic
    split = int((model_timesteps < boundary_ratio * total).sum())
    return (split, total), (0, split)


def flow_targets(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """Noisy latents and the flow-matching target of Wan: x_s = (1 - s) x + s n and n - x, s = `flow_sigmas`.
    The transformer is called with timestep s * num_train_timesteps."""
    sigma = flow_sigmas(scheduler, timesteps).to(latents.dtype).view(-1, *[1] * (latents.ndim - 1))
    return (1 - sigma) * latents + sigma * noise, noise - latents


def frame_loss(pred: torch.Tensor, target: torch.Tensor, frame: int) -> torch.Tensor:
    """MSE on one latent frame.

    The subject prior uses frame 0: its clips are one reference image repeated, and the paper focuses the
    loss on reconstructing the first frame. MotionDirector's spatial (appearance) step uses a random frame.
    """
    return F.mse_loss(pred.select(FRAME_AXIS, frame).float(), target.select(FRAME_AXIS, frame).float())


def debiased_temporal_loss(pred: torch.Tensor, target: torch.Tensor, anchor: int, beta: float = 1.0) -> torch.Tensor:
    """MotionDirector's temporal objective: full MSE plus the appearance-debiased MSE.

    Both prediction and target are re-centred on one anchor frame, `alpha * x - beta * x[anchor]` with
    `alpha = sqrt(beta**2 + 1)`, so what is shared by all frames (appearance) weighs less than what changes
    between them (motion).
    """
    alpha = math.sqrt(beta**2 + 1.0)
    pred, target = pred.float(), target.float()
    full = F.mse_loss(pred, target)
    pred_anchor = pred.narrow(FRAME_AXIS, anchor, 1)
    target_anchor = target.narrow(FRAME_AXIS, anchor, 1)
    debiased = F.mse_loss(alpha * pred - beta * pred_anchor, alpha * target - beta * target_anchor)
    return full + debiased
