"""Model backends: the CogVideoX or Wan components a stage needs, loaded from weights or built tiny for tests.

Every stage takes a `ModelComponents` and never cares where it came from, so tests run the very code
paths users run with real checkpoints, on tiny random-weight models built from small configs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DreamRunnerError
from .memory import MemoryOptions

# Wan 2.1 and 2.2 (dreamrunner.backends.wan): a second model family, with random-weight tiny models of its own.
TINY_WAN_BACKENDS = ("tiny-wan", "tiny-wan2.2", "tiny-wan2.2-5b")
WAN_BACKENDS = ("tiny-wan", "wan2.1-1.3b", "wan2.1-14b", "tiny-wan2.2", "tiny-wan2.2-5b", "wan2.2-a14b",
                "wan2.2-ti2v-5b")
BACKENDS = ("tiny", "tiny-5b", "tiny-1.5", "cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b") + WAN_BACKENDS
# Latent frames per video token (the transformer's patch_size_t): CogVideoX 1.5 patches two latent frames
# into one token frame; the others one (diffusers: patch_size_t None). `VideoSettings.patch_size_t` must match.
TEMPORAL_PATCH = {"tiny-1.5": 2, "cogvideox1.5-5b": 2}
# Pixels per latent cell of the backend's VAE: Wan 2.2 TI2V-5B's VAE compresses 16x in space (48 channels),
# the others 8x. `VideoSettings.vae_spatial` must match.
VAE_SPATIAL = {"tiny-wan2.2-5b": 16, "wan2.2-ti2v-5b": 16}
# Backends priors render on but do not train on yet, and why (priors.service.train_prior refuses them,
# `dreamrunner story` skips training on them). Wan 2.2 TI2V-5B trains: one transformer, and its per-token
# timesteps are all equal in text-to-video, so the trainers' one timestep per clip is what its pipeline feeds.
# Wan 2.2 A14B trains one LoRA per expert, each on its own side of the boundary (docs/priors.md, "On Wan 2.2").
UNTRAINED_PRIORS = {
    "cogvideox1.5-5b": "CogVideoX 1.5, two latent frames per token frame; cogvideox-5b priors have its block shapes",
    "tiny-1.5": "CogVideoX 1.5, two latent frames per token frame",
}


def temporal_patch(backend: str) -> int:
    """Latent frames per token frame of a backend's transformer: 2 for CogVideoX 1.5, else 1."""
    return TEMPORAL_PATCH.get(backend, 1)


def vae_spatial(backend: str) -> int:
    """Pixels per latent cell (each side) of a backend's VAE: 16 for Wan 2.2 TI2V-5B, else 8."""
    return VAE_SPATIAL.get(backend, 8)


def prior_training_refusal(backend: str) -> str | None:
    """Why priors do not train on a backend (or its `ModelComponents.name`) yet, as a sentence; None: they do."""
    why = UNTRAINED_PRIORS.get(backend)
    return None if why is None else (f"training priors on {backend} ({why}) is not supported yet; "
                                     f"region-gated priors render on it")


# Render schedulers by `RenderSettings.scheduler`: diffusers' CogVideoX DPM (the paper's sampler) and DDIM.
SCHEDULERS = {"dpm": "CogVideoXDPMScheduler", "ddim": "CogVideoXDDIMScheduler"}


def make_scheduler(name: str, like: Any) -> Any:
    """A CogVideoX scheduler of kind `name` ("dpm" or "ddim") on the config of `like` (the checkpoint's own
    scheduler), as the released code switches: `CogVideoXDPMScheduler.from_config(pipe.scheduler.config)`.
    `like` itself when it is already of that kind."""
    import diffusers

    if name not in SCHEDULERS:
        raise DreamRunnerError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    kind = getattr(diffusers, SCHEDULERS[name])
    return like if type(like) is kind else kind.from_config(like.config)


def default_device() -> str:
    """Where models run when the user names no device: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ModelComponents:
    """The parts of a CogVideoX text-to-video model, as diffusers' CogVideoXPipeline holds them."""

    name: str
    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    # True for random weights: everything generated from these components is noise, not a result.
    is_noise: bool = False
    # Frame geometry the model was made for (VideoSettings field values), e.g. num_frames=49, height=480.
    video_defaults: dict = field(default_factory=dict)
    memory: MemoryOptions = field(default_factory=MemoryOptions)

    # Text tokens per prompt where the transformer's config does not say (Wan: WanPipeline's max_sequence_length).
    text_tokens: int | None = None
    # Wan 2.2 A14B: the low-noise expert (`transformer` is the high-noise one), switched at the pipeline's
    # boundary_ratio. None for single-transformer models.
    transformer_2: Any = None
    # Wan 2.2's WanPipeline options (model_index.json): boundary_ratio (A14B), expand_timesteps (TI2V-5B).
    pipeline_options: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """"cogvideox" or "wan": which pipeline, attention and LoRA layout the components take."""
        return model_family(self.transformer)

    @property
    def max_text_tokens(self) -> int:
        return int(self.text_tokens or self.transformer.config.max_text_seq_length)

    @property
    def transformers(self) -> tuple:
        """Every denoising transformer: (transformer,), or Wan 2.2 A14B's (high-noise, low-noise) experts."""
        return (self.transformer,) if self.transformer_2 is None else (self.transformer, self.transformer_2)

    def pipeline_kwargs(self) -> dict:
        kwargs = {"tokenizer": self.tokenizer, "text_encoder": self.text_encoder, "vae": self.vae,
                  "transformer": self.transformer, "scheduler": self.scheduler, **self.pipeline_options}
        if self.transformer_2 is not None:
            kwargs["transformer_2"] = self.transformer_2
        return kwargs


def model_name(backend: str) -> str:
    """The `ModelComponents.name` a backend name loads (what prior cards and renders record)."""
    return {"tiny": "tiny-2b"}.get(backend, backend)


def model_family(transformer) -> str:
    """"wan" for a diffusers WanTransformer3DModel, else "cogvideox"."""
    return "wan" if type(transformer).__name__.startswith("Wan") else "cogvideox"


def backend_family(backend: str) -> str:
    """The family of a backend name, without loading it."""
    return "wan" if backend in WAN_BACKENDS else "cogvideox"


def backend_video_defaults(backend: str) -> dict:
    """The frame geometry a backend's model was made for (`ModelComponents.video_defaults`), without loading it."""
    if backend in WAN_BACKENDS:
        from .wan import VIDEO_DEFAULTS as WAN

        return dict(WAN[backend])
    if backend.startswith("tiny"):
        from .tiny import TINY_VIDEO, TINY_VIDEO_15

        return dict(TINY_VIDEO_15 if backend == "tiny-1.5" else TINY_VIDEO)
    from .cogvideox import CHECKPOINTS, VIDEO_DEFAULTS

    return dict(CHECKPOINTS[backend].video if backend in CHECKPOINTS else VIDEO_DEFAULTS)


NOISE_LABEL = "RANDOM WEIGHTS - NOISE, NOT A RESULT"


def load_backend(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    dtype: Any = None,
    memory: MemoryOptions | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ModelComponents:
    """Components for a backend name: "tiny"/"tiny-5b"/"tiny-1.5"/"tiny-wan"/"tiny-wan2.2"/"tiny-wan2.2-5b"
    (random weights, noise), "cogvideox-2b"/"cogvideox-5b"/"cogvideox1.5-5b", "wan2.1-1.3b"/"wan2.1-14b" or
    "wan2.2-a14b"/"wan2.2-ti2v-5b".

    `path` is a local diffusers folder or a hub id (default: the env var DREAMRUNNER_COGVIDEOX_2B / _5B /
    15_5B, DREAMRUNNER_WAN21_1_3B / _14B, DREAMRUNNER_WAN22_A14B / _TI2V_5B, else THUDM/CogVideoX-2b / -5b /
    CogVideoX1.5-5B, Wan-AI/Wan2.1-T2V-1.3B-Diffusers / -14B-Diffusers, Wan-AI/Wan2.2-T2V-A14B-Diffusers /
    Wan2.2-TI2V-5B-Diffusers through the hub cache, or `cache_dir`).
    """
    if name in ("tiny", "tiny-2b", "tiny-5b", "tiny-1.5") + TINY_WAN_BACKENDS:
        if name in TINY_WAN_BACKENDS:
            from .wan import build_tiny_wan

            components = build_tiny_wan(name)
        else:
            from .tiny import build_tiny

            components = build_tiny(name.removeprefix("tiny-") if name != "tiny" else "2b")
        if dtype is not None:
            for module in (*components.transformers, components.vae, components.text_encoder):
                module.to(dtype)
        components.memory = memory or MemoryOptions()
        return components
    if name in ("cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b"):
        from .cogvideox import load_cogvideox

        return load_cogvideox(name, path, dtype=dtype, memory=memory, local_files_only=local_files_only,
                              cache_dir=cache_dir)
    if name in WAN_BACKENDS:
        from .wan import load_wan

        return load_wan(name, path, dtype=dtype, memory=memory, local_files_only=local_files_only,
                        cache_dir=cache_dir)
    raise DreamRunnerError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
