"""`DreamRunnerPipeline`: one scene in, frames out, on diffusers' CogVideoX.

It subclasses `diffusers.CogVideoXPipeline` and reuses its denoising loop unchanged; what DreamRunner
adds goes in around it:

- Region control (the one place SR3AI plugs in): a `RegionControl` turns a `SceneInput` (region plan,
  prompts, bound LoRAs) into the text conditioning and attention kwargs the loop feeds the transformer,
  and installs/removes whatever it needs on the transformer (attention processors, gated LoRAs) for the
  duration of one call. `SR3AIRegionControl` (the default) runs SR3AI from `dreamrunner.attention`: one
  prompt per region, region-based 3D attention and region-gated LoRAs. `StockRegionControl` is the stock
  single-prompt baseline: one prompt for the whole scene, bound LoRAs applied everywhere (ungated)
  through diffusers' own LoRA loader.
- Progress per denoising step, a cheap live preview every few steps (`LatentPreview`: a fixed linear
  latent -> RGB map fitted once per VAE), and cancel, all from `callback_on_step_end`, so cancel takes
  effect at the end of the step in progress.
- The backend's memory options (dreamrunner.backends.memory: a memory preset, `auto` resolved on the free GPU
  memory; a torchao-quantized transformer; compiled transformer blocks), applied once by `from_components`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Protocol

import cv2
import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

from ..backends import NOISE_LABEL, ModelComponents, make_scheduler
from ..backends import memory as memory_settings
from ..errors import DreamRunnerError
from ..jobs import CancelToken, Progress, ProgressCallback
from ..regions import RegionPlan
from ..story import Scene, VideoSettings
from ..validation import first_message
from .overlay import label_frames


@dataclass(frozen=True)
class LoraBinding:
    """A trained prior bound to a scene: its safetensors file, strength, and the region prompts it belongs to."""

    name: str  # the prior id; the adapter name
    path: Path
    kind: Literal["subject", "motion"]
    scale: float
    prompts: tuple[int, ...]  # indices into the region plan's prompts (the gate of a region-gated LoRA)
    # A two-expert (Wan 2.2 A14B) prior's low-noise file, for `transformer_2`; `path` is then its high-noise file,
    # for `transformer`. None: `path` on every transformer.
    low_noise_path: Path | None = None


@dataclass(frozen=True)
class SceneInput:
    """Everything about a scene that conditions its generation (sampling settings are call arguments)."""

    prompt: str  # the whole-scene prompt, used by the stock single-prompt path
    # Prompts (0 = background) and their token masks on the latent token grid; None: a plain prompt (stock path).
    region_plan: RegionPlan | None
    loras: tuple[LoraBinding, ...] = ()


@dataclass
class Conditioning:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    attention_kwargs: dict = field(default_factory=dict)


class RegionControl(Protocol):
    """How a scene's region plan and LoRAs condition the transformer: SR3AI or the stock path."""

    name: str  # part of every render's cache key: a different control renders differently

    def conditioning(self, pipeline: DreamRunnerPipeline, scene: SceneInput, negative_prompt: str,
                     do_classifier_free_guidance: bool) -> contextlib.AbstractContextManager[Conditioning]:
        """Encode the prompts and set up the transformer for one call; undo the setup on exit."""


class StockRegionControl:
    """Stock CogVideoX: the scene prompt alone, no region masks, bound LoRAs applied to every token.

    This is the baseline SR3AI is measured against (`dreamrunner render --region-control stock`).
    """

    name = "stock-single-prompt"

    @contextlib.contextmanager
    def conditioning(self, pipeline, scene, negative_prompt, do_classifier_free_guidance) -> Iterator[Conditioning]:
        prompt_embeds, negative_embeds = pipeline.encode_prompt(
            scene.prompt, negative_prompt, do_classifier_free_guidance,
            max_sequence_length=pipeline.text_tokens, device=pipeline._execution_device,
        )
        with _ungated_loras(pipeline, scene.loras):
            yield Conditioning(prompt_embeds, negative_embeds)


@contextlib.contextmanager
def _ungated_loras(pipeline: CogVideoXPipeline, loras: tuple[LoraBinding, ...]) -> Iterator[None]:
    if not loras:
        yield
        return
    from ..attention import LoRAWeights
    from ..attention.lora import one_transformer_refusal

    experts = getattr(pipeline, "transformer_2", None) is not None  # Wan 2.2 A14B
    with warnings.catch_warnings():
        # Several priors are several adapters on one transformer, on purpose: peft's caution about that is noise.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        for lora in loras:
            if lora.low_noise_path is not None and not experts:
                raise one_transformer_refusal(lora.name)
            # The same checks as the SR3AI path: safetensors only (a pickle can run code), kind, block placement.
            LoRAWeights.load(lora.path, lora.kind)
            # use_safetensors=True: diffusers must not fall back to unpickling either.
            pipeline.load_lora_weights(str(lora.path), adapter_name=lora.name, use_safetensors=True)
            if experts:
                # The low-noise expert: a two-expert prior's own low-noise file, else the same file (as the SR3AI
                # path gates a one-file prior on both).
                low_noise = lora.low_noise_path or lora.path
                if lora.low_noise_path is not None:
                    LoRAWeights.load(low_noise, lora.kind)
                pipeline.load_lora_weights(str(low_noise), adapter_name=lora.name, use_safetensors=True,
                                           load_into_transformer_2=True)
    pipeline.set_adapters([lora.name for lora in loras], [lora.scale for lora in loras])
    try:
        yield
    finally:
        # Unload, not just delete the adapters: peft's wrappers would stay on the transformer, and the SR3AI path
        # (the same components, a later call) finds no plain linear layer to gate.
        pipeline.unload_lora_weights()


class SR3AIRegionControl:
    """SR3AI (dreamrunner.attention): one prompt per region, region-based 3D attention, region-gated LoRAs.

    The controller is attached to the transformer for one call and detached after it, so the same
    pipeline can also run the stock path. Classifier-free guidance uses the negative prompt in every region.
    """

    def __init__(self, implementation: str = "fast"):
        self.implementation = implementation
        self.name = f"sr3ai-{implementation}"

    @contextlib.contextmanager
    def conditioning(self, pipeline, scene, negative_prompt, do_classifier_free_guidance) -> Iterator[Conditioning]:
        from ..attention import GatedLoRA, LoRAWeights

        plan = scene.region_plan
        device = pipeline._execution_device
        dtype = pipeline.transformer.dtype
        loras = [GatedLoRA(LoRAWeights.load(lora.path, lora.kind), prompts=lora.prompts, scale=lora.scale,
                           low_noise=None if lora.low_noise_path is None else LoRAWeights.load(lora.low_noise_path,
                                                                                               lora.kind))
                 for lora in scene.loras]
        encode = lambda prompts: pipeline.encode_region_prompts(prompts, device, dtype)  # noqa: E731
        prompt_embeds = encode(plan.prompts)
        negative_embeds = encode([negative_prompt] * plan.num_prompts) if do_classifier_free_guidance else None
        if memory_settings.PRESETS[pipeline.placement].offload == "model":
            # The gated-LoRA factors are placed on the transformer's device when set: bring it to the GPU now
            # (and the text encoder, done, off it), as its offload hook would at its first call.
            pipeline.text_encoder.to("cpu")
            pipeline.transformer.to(device)
        controller = pipeline.sr3ai_controller(self.implementation).attach()
        try:
            controller.set_regions(plan)
            controller.set_loras(loras)
            yield Conditioning(prompt_embeds, negative_embeds)
        finally:
            controller.detach()


def pipeline_class(components: ModelComponents) -> type:
    """The scene pipeline of the components' model family: `DreamRunnerPipeline` (CogVideoX) or
    `WanDreamRunnerPipeline` (Wan, dreamrunner.rendering.wan_pipeline)."""
    if components.family == "wan":
        from .wan_pipeline import WanDreamRunnerPipeline

        return WanDreamRunnerPipeline
    return DreamRunnerPipeline


REGION_CONTROLS = {"sr3ai": SR3AIRegionControl, "stock": StockRegionControl}


def default_region_control() -> RegionControl:
    return SR3AIRegionControl()


class LatentPreview:
    """A fixed linear map from latent channels to RGB, fitted once per VAE: a preview costs one tiny matmul.

    The fit encodes 27 flat colours with the VAE itself and solves least squares from their (unscaled)
    latents back to the colours, so it holds for any CogVideoX VAE without tabulated coefficients.
    """

    def __init__(self, vae, device: torch.device, upscale: int = 8):
        values = torch.tensor([-0.8, 0.0, 0.8])
        colors = torch.cartesian_prod(values, values, values)  # [27, 3] in [-1, 1]
        images = colors[:, :, None, None, None].expand(-1, -1, 1, 16, 16)
        with torch.no_grad():
            latents = vae.encode(images.to(device=device, dtype=vae.dtype)).latent_dist.mean
        features = latents.float().mean(dim=(2, 3, 4)).cpu()  # [27, C]
        design = torch.cat([features, torch.ones(len(features), 1)], dim=1)
        ridge = 1e-3 * torch.eye(design.shape[1])
        solution = torch.linalg.solve(design.T @ design + ridge, design.T @ colors)
        # Random-weight VAEs in low precision can give non-finite latents; such a preview shows grey.
        self.weight = torch.nan_to_num(solution[:-1], 0.0)  # [C, 3]
        self.bias = torch.nan_to_num(solution[-1], 0.0)  # [3]
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or 1.0)  # Wan's VAE has none
        self.upscale = upscale

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """latents [B, F, C, h, w] as the pipeline holds them -> uint8 RGB of the middle frame of sample 0."""
        frame = latents[0, latents.shape[1] // 2].float() / self.scaling_factor  # [C, h, w]
        rgb = torch.einsum("chw,ck->hwk", frame, self.weight.to(frame.device)) + self.bias.to(frame.device)
        image = ((torch.nan_to_num(rgb).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return cv2.resize(image, (image.shape[1] * self.upscale, image.shape[0] * self.upscale),
                          interpolation=cv2.INTER_NEAREST)


@dataclass
class SceneFrames:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    is_noise: bool
    seconds: float
    nonfinite: bool = False  # the decode held NaN/inf (shown black): random low-precision VAEs can do this


class DreamRunnerPipeline(CogVideoXPipeline):
    """CogVideoX with a scene plan: region control, bound priors, progress, live preview and cancel."""

    is_noise = False
    backend_name = "unknown"
    placement = "none"  # the memory preset the models were placed by (`auto` resolved)

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=scheduler)
        self.region_control: RegionControl = default_region_control()
        self._preview: LatentPreview | None = None

    @classmethod
    def from_components(cls, components: ModelComponents, region_control: RegionControl | None = None,
                        video: dict | None = None, free_bytes: int | None = None):
        """A pipeline on the components, placed and prepared by `components.memory`: the transformer quantized
        (once per components), the models placed by the memory preset (`auto`: chosen for `video`, a dict with
        num_frames/height/width, default the backend's geometry, on the device's free memory or `free_bytes`),
        the transformer blocks compiled where the compile setting says, split over the processes of the
        torch.distributed group where `context_parallel` says (Wan). Raises MemorySettingError or
        QuantizationUnavailable (dreamrunner.backends.memory), ContextParallelError (dreamrunner.backends.parallel)."""
        pipeline = cls(**components.pipeline_kwargs())
        pipeline.is_noise = components.is_noise
        pipeline.backend_name = components.name
        if region_control is not None:
            pipeline.region_control = region_control
        memory = components.memory
        device = memory.resolved_device()
        geometry = {**components.video_defaults, **(video or {})}
        preset = memory_settings.resolve_preset(memory, components.name, geometry.get("num_frames", 49),
                                                geometry.get("height", 480), geometry.get("width", 720), free_bytes)
        transformer = components.transformer
        done = getattr(transformer, "dreamrunner_quantized", "none")
        if memory.quantize != done:
            if done != "none":
                raise memory_settings.MemorySettingError(
                    f"the transformer is already quantized ({done}); load the backend again for {memory.quantize!r}")
            # Quantize where the weights will run (GPU: seconds for 5B; the CPU takes minutes).
            if device.startswith("cuda") and memory_settings.PRESETS[preset].offload == "none":
                transformer.to(device)
            memory_settings.quantize_transformer(transformer, memory.quantize)
        if memory.context_parallel > 1:
            from ..backends.parallel import (ContextParallelError, check_backend, check_context_parallel,
                                             enable_context_parallel)

            # Checked before the models move: a CogVideoX backend, a missing process group are refused here.
            check_backend(components.name)
            check_context_parallel(components.family, memory.context_parallel, transformer.config.num_attention_heads)
            if memory_settings.PRESETS[preset].offload != "none":
                # diffusers' split hooks and its offloading hooks on the same blocks are not run together here.
                raise ContextParallelError(f"context parallelism keeps the whole transformer on each GPU: memory "
                                           f"preset {preset!r} offloads it; use 'none' or 'vae-tiling'")
        memory_settings.apply_placement(pipeline, preset, device)
        pipeline.placement = preset
        if memory.context_parallel > 1:
            enable_context_parallel(transformer, memory.context_parallel)
        if memory_settings.should_compile(memory.compile, device):
            memory_settings.compile_transformer(transformer)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def live_preview(self) -> LatentPreview:
        if self._preview is None:
            self._preview = LatentPreview(self.vae, self._execution_device)
        return self._preview

    # What the region controls need of a model family (Wan's pipeline, rendering.wan_pipeline, has its own).
    @property
    def text_tokens(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def encode_region_prompts(self, prompts, device, dtype) -> torch.Tensor:
        from ..attention import encode_region_prompts

        return encode_region_prompts(self.tokenizer, self.text_encoder, prompts, self.text_tokens, device=device,
                                     dtype=dtype)

    def sr3ai_controller(self, implementation: str):
        from ..attention import SR3AIController

        return SR3AIController(self.transformer, implementation)

    def use_scheduler(self, name: str | None) -> None:
        """Switch to the CogVideoX scheduler `name` ("dpm" or "ddim"; kept for later calls); None keeps it."""
        if name is not None:
            self.scheduler = make_scheduler(name, self.scheduler)

    def denoise(self, **kwargs):
        """The stock pipeline's call (its denoising loop and decode) on prepared embeddings."""
        return CogVideoXPipeline.__call__(self, **kwargs)

    def check_grid(self, plan: RegionPlan, num_frames: int, height: int, width: int) -> None:
        config = self.transformer.config
        patch = config.patch_size
        patch = patch[-1] if isinstance(patch, (tuple, list)) else patch  # Wan's is (t, h, w)
        spatial = self.vae_scale_factor_spatial * patch
        latent_frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        # CogVideoX 1.5: diffusers pads the latents to whole temporal patches (regions.token_frame_latents).
        token_frames = -(-latent_frames // (getattr(config, "patch_size_t", None) or 1))
        grid = (token_frames, height // spatial, width // spatial)
        if tuple(plan.grid) != grid:
            raise DreamRunnerError(f"the region plan is on a {tuple(plan.grid)} token grid, but {num_frames} frames at "
                                   f"{height}x{width} make a {grid} grid; build the plan for this geometry")

    def as_scene_input(self, prompt: str | Scene | SceneInput, video: VideoSettings | None = None,
                       grid: tuple[int, int, int] | None = None) -> SceneInput:
        """What `__call__` conditions on: a SceneInput as given; a Scene's region plan on `grid` (default: the
        token grid of `video`); a plain prompt with no plan (the stock path)."""
        if isinstance(prompt, SceneInput):
            return prompt
        if isinstance(prompt, str):
            return SceneInput(prompt=prompt, region_plan=None)
        if isinstance(prompt, Scene):
            from .story_render import scene_input

            return scene_input(None, prompt, video or VideoSettings(), grid)
        raise DreamRunnerError(f"prompt must be a str, a dreamrunner Scene or a SceneInput, not "
                               f"{type(prompt).__name__}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Scene | SceneInput,
        *,
        negative_prompt: str = "",
        seed: int = 42,
        generator: torch.Generator | None = None,
        scheduler: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = False,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        video: VideoSettings | None = None,
        grid: tuple[int, int, int] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        preview_every: int = 5,
    ) -> SceneFrames:
        """Generate one video: a plain prompt as stock `diffusers.CogVideoXPipeline` does, or a scene with region
        control (SR3AI by default, `self.region_control`).

        Args:
            prompt (`str`, `dreamrunner.story.Scene` or `SceneInput`):
                A `str` runs the stock single-prompt path and, for the same seed and settings, gives the frames
                stock `CogVideoXPipeline(prompt, generator=torch.Generator("cpu").manual_seed(seed),
                output_type="np")` gives (as uint8). A `Scene` is planned into regions on `grid` (its priors
                need their project: pass `story_render.scene_input(project, scene, video)`, a `SceneInput`).
                A `SceneInput` carries the region plan and bound LoRAs as built; its plan must be on the token
                grid of the geometry below.
            negative_prompt (`str`, defaults to `""`): the negative prompt of classifier-free guidance (in every
                region on the SR3AI path); unused when guidance is off (`guidance_scale <= 1`).
            seed (`int`, defaults to 42): 0..2**63 - 1; seeds a CPU `torch.Generator` for the initial noise.
            generator (`torch.Generator`, *optional*): used instead of `seed` when given.
            scheduler (`"dpm"`, `"ddim"` or None): switches the pipeline's scheduler (kept for later calls);
                None keeps it. Anything else raises `DreamRunnerError`.
            num_inference_steps (`int`, defaults to 50): denoising steps, at least 1.
            guidance_scale (`float`, defaults to 6.0): classifier-free guidance; above 1 it runs the negative
                prompt too.
            use_dynamic_cfg (`bool`, defaults to False): guidance rising from 1 to 1 + `guidance_scale` over the
                steps (diffusers' cosine schedule). DPM scheduler only: with DDIM it raises `DreamRunnerError`
                (CogVideo's demo: "for DDIM scheduler, it should be False").
            num_frames, height, width (`int`, *optional*): frame count (as the model makes it:
                `video_presets.MODEL_VIDEO`) and size in pixels (multiples of 16); each defaults to `video`'s, else
                to the transformer's sample size as stock diffusers does (49 frames at 480x720 for CogVideoX 2B/5B).
            video (`dreamrunner.story.VideoSettings`, *optional*): the story's video settings (geometry and
                `keyframe_boxes`) a `Scene` is planned with; a geometry it does not allow raises
                `DreamRunnerError`.
            grid (`(frames, rows, cols)`, *optional*): the token grid a `Scene` is planned on (default: the
                grid of the geometry). A region plan on a grid other than the geometry's raises
                `DreamRunnerError`.
            progress (`callable`, *optional*): receives a `dreamrunner.jobs.Progress` after every step, with a
                live preview image every `preview_every` steps (0: none).
            cancel (`dreamrunner.jobs.CancelToken`, *optional*): when set, raises `dreamrunner.jobs.Cancelled`
                at the end of the step in progress.

        Returns:
            `SceneFrames`: `frames` uint8 [F, H, W, 3] (one video, not a batch; random-weight backends
            labelled as noise), `is_noise`, `seconds`, `nonfinite`.
        """
        config, spatial = self.transformer.config, self.vae_scale_factor_spatial
        num_frames = num_frames or (video.num_frames if video else config.sample_frames)
        height = height or (video.height if video else config.sample_height * spatial)
        width = width or (video.width if video else config.sample_width * spatial)
        if isinstance(prompt, Scene):
            try:
                video = VideoSettings.model_validate({**(video or VideoSettings()).model_dump(),
                                                      "num_frames": num_frames, "height": height, "width": width})
            except ValueError as error:
                raise DreamRunnerError(f"scene {prompt.id!r}: {first_message(error)}") from None
        scene = self.as_scene_input(prompt, video, grid)
        if scene.region_plan is not None:
            self.check_grid(scene.region_plan, num_frames, height, width)
        self.use_scheduler(scheduler)
        if use_dynamic_cfg and not isinstance(self.scheduler, CogVideoXDPMScheduler):
            raise DreamRunnerError(f"use_dynamic_cfg works with the DPM scheduler only, not "
                                   f"{type(self.scheduler).__name__}: pass scheduler='dpm' or turn it off")
        control = self.region_control if scene.region_plan is not None else StockRegionControl()
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

        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(seed)
        try:
            with control.conditioning(self, scene, negative_prompt, do_cfg) as conditioning:
                output = self.denoise(
                    prompt_embeds=conditioning.prompt_embeds,
                    negative_prompt_embeds=conditioning.negative_prompt_embeds,
                    attention_kwargs=conditioning.attention_kwargs or None,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                    use_dynamic_cfg=use_dynamic_cfg, num_frames=num_frames, height=height, width=width, generator=generator,
                    callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
                    output_type="np", return_dict=False,
                )[0]
        except BaseException:
            # An interrupted loop skips its own offload reset; return the models to the CPU all the same.
            self.maybe_free_model_hooks()
            raise
        nonfinite = not np.isfinite(output[0]).all()
        frames = (np.nan_to_num(output[0]).clip(0, 1) * 255).round().astype(np.uint8)
        if self.is_noise:
            frames = label_frames(frames, NOISE_LABEL)
        return SceneFrames(frames=frames, is_noise=self.is_noise, seconds=time.monotonic() - started,
                           nonfinite=nonfinite)
