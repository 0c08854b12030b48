"""Re-ranking clips by how well their frames match the motion text: CLIP over sampled frames, an optional
video-text model (e.g. ViCLIP) through the same interface, and the final 4-20 clip selection."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import DreamRunnerError


class ScorerUnavailable(DreamRunnerError):
    """A re-ranking model cannot be loaded (weights missing)."""


@runtime_checkable
class ClipScorer(Protocol):
    """Similarity between a clip (sampled RGB frames) and a text; larger is better."""

    name: str

    def score(self, frames: list[np.ndarray], text: str) -> float: ...


class FunctionScorer:
    """Wraps a plain function (frames, text) -> similarity, e.g. a video-text model's hook."""

    def __init__(self, function: Callable[[list[np.ndarray], str], float], name: str = "custom") -> None:
        self.function = function
        self.name = name

    def score(self, frames: list[np.ndarray], text: str) -> float:
        return float(self.function(frames, text))


class ClipFrameScorer:
    """CLIP image-text cosine similarity, averaged over the clip's sampled frames (transformers CLIPModel)."""

    name = "clip"

    def __init__(self, model, tokenizer, image_processor, max_frames: int = 8) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_frames = max_frames

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, max_frames: int = 8,
                        allow_download: bool = False) -> ClipFrameScorer:
        """Loads a CLIP checkpoint from a folder or the local hub cache (the hub too if `allow_download`)."""
        from transformers import AutoTokenizer, CLIPModel

        try:  # transformers >= 5 names the PIL (no-torchvision) processor explicitly
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:
            from transformers import CLIPImageProcessor

        local = not allow_download
        try:
            model = CLIPModel.from_pretrained(str(name_or_path), local_files_only=local)
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local)
            # The PIL processor needs no torchvision (unavailable on CPU here).
            image_processor = CLIPImageProcessor.from_pretrained(str(name_or_path), local_files_only=local)
        except OSError as error:
            raise ScorerUnavailable(f"no CLIP weights at {name_or_path!r} ({str(error).splitlines()[0]}); "
                                    "download them where you have network and pass the local folder") from None
        return cls(model, tokenizer, image_processor, max_frames)

    def score(self, frames: list[np.ndarray], text: str) -> float:
        import torch

        if len(frames) > self.max_frames:
            frames = [frames[i] for i in np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)]
        text_inputs = self.tokenizer([text], padding=True, truncation=True, return_tensors="pt")
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            text_embeds = self.model.get_text_features(**text_inputs)
            image_embeds = self.model.get_image_features(pixel_values=pixels)
        if not isinstance(text_embeds, torch.Tensor):  # some versions return a model output
            text_embeds, image_embeds = text_embeds.pooler_output, image_embeds.pooler_output
        text_embeds = torch.nn.functional.normalize(text_embeds, dim=-1)
        image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
        return float((image_embeds @ text_embeds.T).mean())


def rank_by_similarity(clips: list, frames: dict, text: str, scorers: list[ClipScorer],
                       weights: dict[str, float] | None = None) -> list[tuple[object, float, dict[str, float]]]:
    """Scores each clip with every scorer over its frames; the combined score is the weighted mean.

    `frames` maps a clip to its sampled frames. Returns (clip, combined, per-scorer scores), best first.
    """
    weights = weights or {}
    ranked = []
    for clip in clips:
        parts = {s.name: s.score(frames[clip], text) for s in scorers}
        total = sum(weights.get(name, 1.0) for name in parts)
        combined = sum(weights.get(name, 1.0) * value for name, value in parts.items()) / total
        ranked.append((clip, combined, parts))
    ranked.sort(key=lambda item: -item[1])
    return ranked


def select_clips(ranked: list[tuple[object, float]], max_clips: int = 20,
                 min_score: float | None = None) -> tuple[list[tuple[object, float]], list[tuple[object, str]]]:
    """Keeps the best `max_clips` with a score of at least `min_score`; the rest are dropped with a reason."""
    kept, dropped = [], []
    for clip, score in ranked:
        if min_score is not None and score < min_score:
            dropped.append((clip, f"similarity {score:.3f} below the threshold {min_score:.3f}"))
        elif len(kept) >= max_clips:
            dropped.append((clip, f"beyond the best {max_clips}"))
        else:
            kept.append((clip, score))
    return kept, dropped
