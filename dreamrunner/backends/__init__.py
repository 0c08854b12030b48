"""Model backends: the CogVideoX components a stage needs, loaded from weights or built tiny for tests.

Every stage takes a `ModelComponents` and never cares where it came from, so tests run the very code
paths users run with real checkpoints, on tiny random-weight models built from small configs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DreamRunnerError
from .memory import MemoryOptions

BACKENDS = ("tiny", "tiny-5b", "cogvideox-2b", "cogvideox-5b")


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

    @property
    def max_text_tokens(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def pipeline_kwargs(self) -> dict:
        return {"tokenizer": self.tokenizer, "text_encoder": self.text_encoder, "vae": self.vae,
                "transformer": self.transformer, "scheduler": self.scheduler}


def model_name(backend: str) -> str:
    """The `ModelComponents.name` a backend name loads (what prior cards and renders record)."""
    return {"tiny": "tiny-2b"}.get(backend, backend)


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
    """Components for a backend name: "tiny"/"tiny-5b" (random weights, noise) or "cogvideox-2b"/"cogvideox-5b".

    `path` is a local diffusers folder or a hub id for the CogVideoX backends (default: the env var
    DREAMRUNNER_COGVIDEOX_2B / _5B, else THUDM/CogVideoX-2b / -5b through the hub cache, or `cache_dir`).
    """
    if name in ("tiny", "tiny-2b", "tiny-5b"):
        from .tiny import build_tiny

        components = build_tiny("5b" if name == "tiny-5b" else "2b")
        if dtype is not None:
            for module in (components.transformer, components.vae, components.text_encoder):
                module.to(dtype)
        components.memory = memory or MemoryOptions()
        return components
    if name in ("cogvideox-2b", "cogvideox-5b"):
        from .cogvideox import load_cogvideox

        return load_cogvideox(name, path, dtype=dtype, memory=memory, local_files_only=local_files_only,
                              cache_dir=cache_dir)
    raise DreamRunnerError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
