"""VAE latents and T5 (CogVideoX) / UMT5 (Wan) text embeddings, cached on disk so repeated tuning does not re-encode.

Entries are keyed by content: the model's fingerprint, the media file's bytes (SHA-256), the frame geometry,
or the caption. Latents are stored as the VAE posterior's mean and std (scaled), and a fresh sample is drawn
each training step, as encoding on the fly would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..backends import ModelComponents
from ..files import file_sha256
from ..media import DECODE_VERSION
from .data import TrainingClip, load_clip


def model_fingerprint(components: ModelComponents) -> str:
    """A cheap identity of the weights: name, configs, and a sample of each model's first and last tensors.

    Hashing every weight of a 2B model would cost seconds per request; a sample tells different checkpoints
    (and different random tiny models) apart.
    """
    digest = hashlib.sha256(components.name.encode())
    for model in (*components.transformers, components.vae, components.text_encoder):  # A14B: both experts
        config = getattr(model, "config", {})
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        # diffusers lists this set in hash order, which differs between processes (PYTHONHASHSEED): sorted, the
        # same weights have the same fingerprint in every process (a Ray worker, the next CLI run).
        if "_use_default_values" in config:
            config["_use_default_values"] = sorted(config["_use_default_values"])
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        tensors = list(model.state_dict().values())
        for tensor in (tensors[0], tensors[-1]):
            digest.update(tensor.detach().flatten()[:4096].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


def latent_normalisation(vae) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(shift, scale) taking VAE latents [B, C, F, h, w] to what the pipeline denoises: (z - shift) * scale.
    CogVideoX: 0 and `scaling_factor`; Wan: the per-channel `latents_mean` and 1 / `latents_std`."""
    config = vae.config
    if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
        view = (1, -1, 1, 1, 1)
        return (torch.tensor(config.latents_mean).view(view).to(vae.device),
                1.0 / torch.tensor(config.latents_std).view(view).to(vae.device))
    return 0.0, float(config.scaling_factor)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class EncodingCache:
    """Encodes clips with the VAE and captions with T5, once per content, into `folder`."""

    def __init__(self, folder: Path, components: ModelComponents) -> None:
        self.folder = Path(folder)
        self.components = components
        self.fingerprint = model_fingerprint(components)
        self.encoded = {"latents": 0, "text": 0}  # how many entries this instance actually computed
        self._pipeline = None

    @property
    def pipeline(self):
        """A stock CogVideoXPipeline (or WanPipeline) over the components, for its prompt encoding."""
        if self._pipeline is None:
            from diffusers import CogVideoXPipeline, WanPipeline

            stock = WanPipeline if self.components.family == "wan" else CogVideoXPipeline
            self._pipeline = stock(**self.components.pipeline_kwargs())
        return self._pipeline

    def _load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        path = self.folder / kind / f"{key}.safetensors"
        return load_file(path) if path.is_file() else None

    def _store(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.folder / kind / f"{key}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(temporary))
        temporary.replace(path)

    def latent_key(self, clip: TrainingClip, num_frames: int, height: int, width: int, fps: float) -> str:
        # DECODE_VERSION: latents of a file read before the loaders applied rotation etc. are not reused;
        # "timed": clips sampled at the model's frame rate (issue 16), not spread over their whole length.
        return _key(self.fingerprint, "latents", DECODE_VERSION, "timed", file_sha256(clip.path), clip.static,
                    num_frames, height, width, fps)

    def latents(self, clip: TrainingClip, num_frames: int, height: int, width: int,
                fps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the scaled VAE posterior, [latent_frames, channels, h, w] each."""
        key = self.latent_key(clip, num_frames, height, width, fps)
        cached = self._load("latents", key)
        if cached is None:
            pixels = load_clip(clip, num_frames, height, width, fps)  # [F, 3, H, W]
            vae = self.components.vae
            # Encoded where the VAE sits (GPU, or CPU under offloading): the cache is what the trainer reads.
            video = pixels.permute(1, 0, 2, 3).unsqueeze(0).to(vae.device, vae.dtype)  # [1, 3, F, H, W]
            with torch.no_grad():
                posterior = vae.encode(video).latent_dist
            shift, scale = latent_normalisation(vae)
            cached = {"mean": ((posterior.mean.float() - shift) * scale)[0].permute(1, 0, 2, 3),
                      "std": (posterior.std.float() * scale)[0].permute(1, 0, 2, 3)}
            self._store("latents", key, cached)
            self.encoded["latents"] += 1
        return cached["mean"], cached["std"]

    def text(self, caption: str) -> torch.Tensor:
        """T5 embeddings of a caption, [max_text_tokens, dim], padded like CogVideoXPipeline pads prompts."""
        key = _key(self.fingerprint, "text", caption, self.components.max_text_tokens)
        cached = self._load("text", key)
        if cached is None:
            with torch.no_grad():
                embeddings, _ = self.pipeline.encode_prompt(
                    caption, do_classifier_free_guidance=False, num_videos_per_prompt=1,
                    max_sequence_length=self.components.max_text_tokens, device=self.components.text_encoder.device,
                    dtype=self.components.text_encoder.dtype,
                )
            cached = {"embeddings": embeddings[0].float()}
            self._store("text", key, cached)
            self.encoded["text"] += 1
        return cached["embeddings"]
