"""`WanDreamRunnerPipeline`: one scene in, frames out, on diffusers' Wan 2.1 and 2.2 (`WanPipeline`).

The Wan counterpart of `DreamRunnerPipeline` (rendering.pipeline): it subclasses `diffusers.WanPipeline` and
runs its denoising loop unchanged inside DreamRunnerPipeline's own scene call (shared, through the `denoise` and
`use_scheduler` hooks), with the same region controls (SR3AI: one prompt per region, region
cross-attention and region-gated LoRAs from `dreamrunner.attention.wan`; stock: the scene prompt alone, LoRAs
through diffusers' own Wan loader), the same progress, live preview, cancel and memory options, and the same
`SceneFrames` out. Differences: Wan samples with its checkpoint's own flow-matching scheduler (the story's
"dpm" / "ddim" name CogVideoX schedulers and are not applied), and its latents are [B, C, F, h, w],
normalised by the VAE's per-channel mean and std.

Wan 2.2 runs WanPipeline's own loop too: A14B switches from `transformer` to `transformer_2` at its boundary
(SR3AI and the gated priors are on both experts; the stock path loads each prior into both), TI2V-5B feeds
per-token timesteps (`expand_timesteps`) on its 16x VAE.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanPipeline

from ..backends import MemoryOptions, ModelComponents
from .pipeline import DreamRunnerPipeline, LatentPreview, RegionControl, default_region_control


class WanLatentPreview(LatentPreview):
    """`LatentPreview` for Wan's latents: [B, C, F, h, w], stored as (z - mean) / std per channel."""

    def __init__(self, vae, device: torch.device, upscale: int = 8):
        super().__init__(vae, device, upscale)
        self.mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        z = latents[:1].float() * self.std.to(latents.device) + self.mean.to(latents.device)
        return super().__call__(z.transpose(1, 2))


class WanDreamRunnerPipeline(WanPipeline):
    """Wan 2.1 / 2.2 with a scene plan: region control, bound priors, progress, live preview and cancel."""

    is_noise = False
    backend_name = "unknown"
    memory = MemoryOptions()
    text_tokens = 512  # UMT5 tokens per prompt; from the components in `from_components`

    # WanPipeline's own signature: diffusers checks a pipeline's config against its __init__.
    def __init__(self, tokenizer, text_encoder, vae, scheduler, transformer=None, transformer_2=None,
                 boundary_ratio=None, expand_timesteps=False):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                         transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio,
                         expand_timesteps=expand_timesteps)
        self.region_control: RegionControl = default_region_control()
        self._preview: WanLatentPreview | None = None

    @classmethod
    def from_components(cls, components: ModelComponents, region_control: RegionControl | None = None,
                        video: dict | None = None, free_bytes: int | None = None):
        pipeline = DreamRunnerPipeline.from_components.__func__(cls, components, region_control, video, free_bytes)
        pipeline.text_tokens = components.max_text_tokens
        return pipeline

    check_grid = DreamRunnerPipeline.check_grid
    as_scene_input = DreamRunnerPipeline.as_scene_input

    def live_preview(self) -> WanLatentPreview:
        if self._preview is None:
            self._preview = WanLatentPreview(self.vae, self._execution_device, upscale=self.vae_scale_factor_spatial)
        return self._preview

    def encode_region_prompts(self, prompts, device, dtype) -> torch.Tensor:
        from ..attention.wan import encode_wan_region_prompts

        return encode_wan_region_prompts(self, prompts, self.text_tokens, device=device, dtype=dtype)

    def sr3ai_controller(self, implementation: str):
        from ..attention.wan import WanExpertsSR3AIController, WanSR3AIController

        if self.transformer_2 is not None:  # Wan 2.2 A14B: both experts
            return WanExpertsSR3AIController((self.transformer, self.transformer_2), self.text_tokens, implementation)
        return WanSR3AIController(self.transformer, self.text_tokens, implementation)

    # The scene call is DreamRunnerPipeline's (region control, progress, preview, cancel, labelled frames) around
    # WanPipeline's own loop.
    __call__ = DreamRunnerPipeline.__call__

    def use_scheduler(self, name: str | None) -> None:
        """Wan keeps its checkpoint's flow-matching scheduler: the story's "dpm" / "ddim" name CogVideoX's."""

    def denoise(self, use_dynamic_cfg: bool = False, **kwargs):
        # Dynamic CFG is CogVideoX's (DPM only); __call__ refuses it for Wan's flow-matching scheduler.
        return WanPipeline.__call__(self, max_sequence_length=self.text_tokens, **kwargs)
