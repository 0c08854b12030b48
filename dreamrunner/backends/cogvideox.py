"""Real CogVideoX checkpoints (2B, the paper's default, 5B and 1.5-5B) loaded through diffusers.

A checkpoint is a diffusers folder (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`), either a local path or a Hugging Face hub id (THUDM/CogVideoX-2b / -5b,
THUDM/CogVideoX1.5-5B) resolved through the hub cache. Missing weights raise `WeightsMissingError`, which
says how to get them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DreamRunnerError
from . import MemoryOptions, ModelComponents


@dataclass(frozen=True)
class CheckpointSpec:
    hub_id: str
    env_var: str  # a local folder named here wins over the hub id
    size_gb: int  # download size, for the message
    # Full-size configs (the checkpoints' own), used to build random-weight models for benchmarks.
    transformer: dict
    vae: dict
    # Frame geometry the checkpoint was trained at (VideoSettings field values).
    video: dict = field(default_factory=lambda: dict(VIDEO_DEFAULTS))
    # The random-weight backend of the same kind, offered when the weights are missing ("tiny" when None).
    tiny: str | None = None


# CogVideoX 2B and 5B were trained at 49 frames, 8 fps, 480x720.
VIDEO_DEFAULTS = {"num_frames": 49, "fps": 8, "height": 480, "width": 720}

CHECKPOINTS = {
    "cogvideox-2b": CheckpointSpec(
        hub_id="THUDM/CogVideoX-2b", env_var="DREAMRUNNER_COGVIDEOX_2B", size_gb=13,
        transformer=dict(num_attention_heads=30, num_layers=30, use_rotary_positional_embeddings=False),
        vae=dict(scaling_factor=1.15258426),
    ),
    "cogvideox-5b": CheckpointSpec(
        hub_id="THUDM/CogVideoX-5b", env_var="DREAMRUNNER_COGVIDEOX_5B", size_gb=22,
        transformer=dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True),
        vae=dict(scaling_factor=0.7),
    ),
    # The checkpoint's transformer/config.json: two latent frames per token frame (patch_size_t 2), a linear
    # patch projection without bias, rotary positions sliced from a 300 x 300 latent base, no ofs embedding
    # (that is the I2V model's). Its model card: 16N+1 frames (81 = 5 s, 161 = 10 s at 16 fps), 768x1360
    # by default, sides multiples of 16.
    "cogvideox1.5-5b": CheckpointSpec(
        hub_id="THUDM/CogVideoX1.5-5B", env_var="DREAMRUNNER_COGVIDEOX15_5B", size_gb=22,
        transformer=dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True,
                         patch_size_t=2, patch_bias=False, sample_frames=81, sample_height=300, sample_width=300),
        vae=dict(scaling_factor=0.7, invert_scale_latents=True),
        video={"num_frames": 81, "fps": 16, "height": 768, "width": 1360},
    ),
}

# Preferred dtypes from the model cards: 2B was trained in fp16, 5B and 1.5-5B in bf16.
DEFAULT_DTYPES = {"cogvideox-2b": torch.float16, "cogvideox-5b": torch.bfloat16, "cogvideox1.5-5b": torch.bfloat16}


class WeightsMissingError(DreamRunnerError):
    """The checkpoint's files are not on this machine (and could not be fetched)."""


def how_to_get(name: str, spec: CheckpointSpec, source: str, reason: str) -> str:
    """The message of a `WeightsMissingError` for checkpoint `name` (any family): why, and how to get it."""
    folder = spec.hub_id.split("/")[1]
    tiny = spec.tiny or "tiny"
    return (
        f"{name} weights are not available from {source!r} ({reason}).\n"
        f"To get them (about {spec.size_gb} GB), on a machine with network access run:\n"
        f"    hf download {spec.hub_id} --local-dir /path/to/{folder}\n"
        f"then either pass that folder (--model-path /path/to/{folder}) or set "
        f"{spec.env_var}=/path/to/{folder}. Without network, copy a downloaded folder or a "
        f"Hugging Face cache (~/.cache/huggingface/hub) here. Use the '{tiny}' backend to try the app offline "
        f"(its output is labelled noise)."
    )


def _how_to_get(name: str, source: str, reason: str) -> str:
    return how_to_get(name, CHECKPOINTS[name], source, reason)


def resolve_source(name: str, source: str | os.PathLike | None, spec: CheckpointSpec | None = None) -> str:
    """The folder or hub id to load `name` from: the argument, else the env var, else this machine's setting
    (dreamrunner.machine, the editor's model path), else the hub id."""
    spec = spec or CHECKPOINTS[name]
    if source is not None:
        return str(source)
    from ..machine import read_machine_settings

    return os.environ.get(spec.env_var) or read_machine_settings().model_paths.get(name) or spec.hub_id


def _is_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def checkpoint_source(name: str, spec: CheckpointSpec, source: str | os.PathLike | None, local_files_only: bool,
                      cache_dir: str | os.PathLike | None) -> tuple[str, bool]:
    """(folder or hub id, local_files_only) to load checkpoint `name` from, for every family: a local folder must
    hold every part of a diffusers pipeline; offline, a hub id must be in the cache. Raises WeightsMissingError
    (saying how to get the weights) at once rather than after the hub client's retries."""
    source = resolve_source(name, source, spec)
    is_local = Path(source).expanduser().exists()
    if is_local:
        folder = Path(source).expanduser()
        missing = [part for part in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (folder / part).exists()]
        if missing:
            raise WeightsMissingError(how_to_get(name, spec, source, f"the folder lacks {', '.join(missing)}"))
        return str(folder), local_files_only
    if not _is_hub_id(source):
        raise WeightsMissingError(how_to_get(name, spec, source, "no such folder"))
    if _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "model_index.json", cache_dir=cache_dir), str):
            raise WeightsMissingError(how_to_get(name, spec, source, "not in the Hugging Face cache, and offline "
                                                 "(--offline / HF_HUB_OFFLINE) nothing is downloaded"))
        return source, True
    return source, local_files_only


def load_cogvideox(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    memory: MemoryOptions | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ModelComponents:
    """Load a CogVideoX checkpoint's components with diffusers/transformers `from_pretrained`."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    if name not in CHECKPOINTS:
        raise DreamRunnerError(f"unknown CogVideoX checkpoint {name!r}; choose one of {sorted(CHECKPOINTS)}")
    dtype = dtype or DEFAULT_DTYPES[name]
    source, local_files_only = checkpoint_source(name, CHECKPOINTS[name], source, local_files_only, cache_dir)
    common = {"local_files_only": local_files_only, "cache_dir": cache_dir}
    try:
        transformer = CogVideoXTransformer3DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype, **common)
        vae = AutoencoderKLCogVideoX.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **common)
        text_encoder = T5EncoderModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **common)
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
        scheduler = CogVideoXDDIMScheduler.from_pretrained(source, subfolder="scheduler", **common)
    except (OSError, ValueError) as error:
        # huggingface_hub's offline, not-found and connection errors all derive from OSError; a folder with
        # missing or truncated weight files raises OSError or ValueError from the loaders.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsMissingError(_how_to_get(name, source, reason[:300])) from None
    for module in (transformer, vae, text_encoder):
        module.eval()
    components = ModelComponents(
        name=name, transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, is_noise=False, video_defaults=dict(CHECKPOINTS[name].video), memory=memory or MemoryOptions(),
    )
    return components


def build_random_full_size(name: str, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
    """The transformer and VAE of a checkpoint at full size with random weights (benchmarks only: noise).

    The T5-XXL text encoder is not built: benchmarks feed random prompt embeddings of its shape.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    spec = CHECKPOINTS[name]
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**spec.transformer).to(dtype).eval()
        vae = AutoencoderKLCogVideoX(**spec.vae).to(dtype).eval()
    return transformer, vae
