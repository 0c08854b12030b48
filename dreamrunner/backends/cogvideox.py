"""Real CogVideoX checkpoints (2B, the paper's default, and 5B) loaded through diffusers.

A checkpoint is a diffusers folder (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`), either a local path or a Hugging Face hub id (THUDM/CogVideoX-2b / -5b)
resolved through the hub cache. Missing weights raise `WeightsMissingError`, which says how to get them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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
}

# Both checkpoints were trained at 49 frames, 8 fps, 480x720.
VIDEO_DEFAULTS = {"num_frames": 49, "fps": 8, "height": 480, "width": 720}

# Preferred dtypes from the model cards: 2B was trained in fp16, 5B in bf16.
DEFAULT_DTYPES = {"cogvideox-2b": torch.float16, "cogvideox-5b": torch.bfloat16}


class WeightsMissingError(DreamRunnerError):
    """The checkpoint's files are not on this machine (and could not be fetched)."""


def _how_to_get(name: str, source: str, reason: str) -> str:
    spec = CHECKPOINTS[name]
    return (
        f"{name} weights are not available from {source!r} ({reason}).\n"
        f"To get them (about {spec.size_gb} GB), on a machine with network access run:\n"
        f"    hf download {spec.hub_id} --local-dir /path/to/{spec.hub_id.split('/')[1]}\n"
        f"then either pass that folder (--model-path /path/to/{spec.hub_id.split('/')[1]}) or set "
        f"{spec.env_var}=/path/to/{spec.hub_id.split('/')[1]}. Without network, copy a downloaded folder or a "
        f"Hugging Face cache (~/.cache/huggingface/hub) here. Use the 'tiny' backend to try the app offline "
        f"(its output is labelled noise)."
    )


def resolve_source(name: str, source: str | os.PathLike | None) -> str:
    """The folder or hub id to load `name` from: the argument, else the env var, else this machine's setting
    (dreamrunner.machine, the editor's model path), else the hub id."""
    if source is not None:
        return str(source)
    from ..machine import read_machine_settings

    return (os.environ.get(CHECKPOINTS[name].env_var) or read_machine_settings().model_paths.get(name)
            or CHECKPOINTS[name].hub_id)


def _is_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


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
    source = resolve_source(name, source)
    dtype = dtype or DEFAULT_DTYPES[name]
    is_local = Path(source).expanduser().exists()
    if is_local:
        folder = Path(source).expanduser()
        missing = [part for part in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (folder / part).exists()]
        if missing:
            raise WeightsMissingError(_how_to_get(name, source, f"the folder lacks {', '.join(missing)}"))
        source = str(folder)
    elif not _is_hub_id(source):
        raise WeightsMissingError(_how_to_get(name, source, "no such folder"))
    if not is_local and _hub_offline():
        # Offline, the hub client would only fail after its retries: look in the cache now and say so at once.
        from huggingface_hub import try_to_load_from_cache

        local_files_only = True
        if not isinstance(try_to_load_from_cache(source, "model_index.json", cache_dir=cache_dir), str):
            raise WeightsMissingError(_how_to_get(name, source, "not in the Hugging Face cache, and offline "
                                                  "(--offline / HF_HUB_OFFLINE) nothing is downloaded"))
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
        scheduler=scheduler, is_noise=False, video_defaults=dict(VIDEO_DEFAULTS), memory=memory or MemoryOptions(),
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
