"""`WanDreamRunnerPipeline`: one scene in, frames out, on diffusers' Wan 2.1 (`WanPipeline`).

The Wan counterpart of `DreamRunnerPipeline` (rendering.pipeline): it subclasses `diffusers.WanPipeline` and
runs its denoising loop unchanged, with the same region controls (SR3AI: one prompt per region, region
cross-attention and region-gated LoRAs from `dreamrunner.attention.wan`; stock: the scene prompt alone, LoRAs
through diffusers' own Wan loader), the same progress, live preview, cancel and memory options, and the same
`SceneFrames` out. Differences: Wan samples with its checkpoint's own flow-matching scheduler (the story's
"dpm" / "ddim" name CogVideoX schedulers and are not applied), and its latents are [B, C, F, h, w],
normalised by the VAE's per-channel mean and std.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers import WanPipeline

from ..backends import NOISE_LABEL, MemoryOptions, ModelComponents
from ..jobs import CancelToken, Progress, ProgressCallback
from .overlay import label_frames
from .pipeline import DreamRunnerPipeline, LatentPreview, RegionControl, SceneFrames, SceneInput, default_region_control


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
    """Wan 2.1 with a scene plan: region control, bound priors, progress, live preview and cancel."""

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
    def from_components(cls, components: ModelComponents, region_control: RegionControl | None = None):
        pipeline = DreamRunnerPipeline.from_components.__func__(cls, components, region_control)
        pipeline.text_tokens = components.max_text_tokens
        return pipeline

    check_grid = DreamRunnerPipeline.check_grid

    def live_preview(self) -> WanLatentPreview:
        if self._preview is None:
            self._preview = WanLatentPreview(self.vae, self._execution_device)
        return self._preview

    def encode_region_prompts(self, prompts, device, dtype) -> torch.Tensor:
        from ..attention.wan import encode_wan_region_prompts

        return encode_wan_region_prompts(self, prompts, self.text_tokens, device=device, dtype=dtype)

    def sr3ai_controller(self, implementation: str):
        from ..attention.wan import WanSR3AIController

        return WanSR3AIController(self.transformer, self.text_tokens, implementation)

    @torch.no_grad()
    def __call__(
        self,
        scene: SceneInput,
        *,
        seed: int = 42,
        scheduler: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str = "",
        num_frames: int = 81,
        height: int = 480,
        width: int = 832,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        preview_every: int = 5,
    ) -> SceneFrames:
        """Generate the scene's frames (`scheduler` is accepted for the renderer's one call and ignored: Wan
        keeps its checkpoint's scheduler). Raises `dreamrunner.jobs.Cancelled` at the end of the step in which
        `cancel` was set."""
        self.check_grid(scene.region_plan, num_frames, height, width)
        cancel = cancel or CancelToken()
        cancel.check()
        started = time.monotonic()
        preview = self.live_preview() if progress is not None and preview_every > 0 else None
        do_cfg = guidance_scale > 1.0

        def on_step_end(pipeline, step, timestep, tensors):
            done = step + 1
            if progress is not None:
                image = None
                if preview is not None and (done % preview_every == 0 or done == num_inference_steps):
                    image = preview(tensors["latents"])
                    if self.is_noise:
                        image = label_frames(image[None], NOISE_LABEL)[0]
                elapsed = time.monotonic() - started
                progress(Progress("denoise", done, num_inference_steps, f"step {done}/{num_inference_steps}",
                                  eta_seconds=elapsed / done * (num_inference_steps - done), preview=image))
            cancel.check()
            return {}

        generator = torch.Generator(device="cpu").manual_seed(seed)
        try:
            with self.region_control.conditioning(self, scene, negative_prompt, do_cfg) as conditioning:
                output = WanPipeline.__call__(
                    self,
                    prompt_embeds=conditioning.prompt_embeds,
                    negative_prompt_embeds=conditioning.negative_prompt_embeds,
                    attention_kwargs=conditioning.attention_kwargs or None,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    num_frames=num_frames, height=height, width=width, generator=generator,
                    max_sequence_length=self.text_tokens,
                    callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
                    output_type="np", return_dict=False,
                )[0]
        except BaseException:
            self.maybe_free_model_hooks()
            raise
        nonfinite = not np.isfinite(output[0]).all()
        frames = (np.nan_to_num(output[0]).clip(0, 1) * 255).round().astype(np.uint8)
        if self.is_noise:
            frames = label_frames(frames, NOISE_LABEL)
        return SceneFrames(frames=frames, is_noise=self.is_noise, seconds=time.monotonic() - started,
                           nonfinite=nonfinite)
