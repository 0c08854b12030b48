"""VBench-style visual quality: aesthetics, imaging quality and motion smoothness.

VBench scores these with three models, of which only the aesthetic one can be built from transformers:
- aesthetics: the LAION aesthetic predictor, a linear head over CLIP ViT-L/14 image embeddings, whose
  1-10 rating is divided by 10 and averaged over frames (`LaionAestheticScorer`);
- imaging quality: MUSIQ trained on SPAQ (pyiqa), its 0-100 rating divided by 100; any
  `ImageQualityScorer` that returns per-frame scores in [0, 1] plugs in here;
- motion smoothness: drop the odd frames, rebuild each from its two neighbours with a frame
  interpolation model (AMT-S), and score (255 - mean absolute pixel error) / 255 (`motion_smoothness`
  with any `FrameInterpolator`).
Scores are reported times 100, like the other columns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .encoders import DEFAULT_BATCH_SIZE, CLIPEncoder
from .frames import Images, MetricsError, as_frames, as_image_list
from .story_metrics import SCALE

# VBench's aesthetic predictor sits on OpenAI CLIP ViT-L/14 at 224 px (not the 336 px model used for alignment).
DEFAULT_AESTHETIC_CLIP = "openai/clip-vit-large-patch14"


@runtime_checkable
class ImageQualityScorer(Protocol):
    """Rates each image in [0, 1]."""

    model_id: str
    random_weights: bool

    def score_images(self, images: Images) -> np.ndarray: ...


@runtime_checkable
class FrameInterpolator(Protocol):
    """Predicts the frame halfway between each pair: before, after uint8 [N, H, W, 3] -> uint8 [N, H, W, 3]."""

    model_id: str
    random_weights: bool

    def interpolate(self, before: np.ndarray, after: np.ndarray) -> np.ndarray: ...


class LaionAestheticScorer:
    """The LAION aesthetic predictor: rating = head(normalized CLIP image embedding), reported as rating / 10."""

    def __init__(self, clip: CLIPEncoder, head: torch.nn.Linear, head_id: str, random_weights: bool = False):
        self.clip = clip
        self.head = head.float().eval()
        self.model_id = f"{clip.model_id} + {head_id}"
        self.random_weights = random_weights or clip.random_weights

    @torch.inference_mode()
    def score_images(self, images: Images) -> np.ndarray:
        return (self.head(self.clip.encode_images(images)).squeeze(-1) / 10.0).numpy()

    @classmethod
    def from_files(cls, head_path: str | os.PathLike, clip_model: str = DEFAULT_AESTHETIC_CLIP,
                   device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   local_files_only: bool = False) -> LaionAestheticScorer:
        """Load the head (a state dict with `weight` [1, D] and `bias` [1], .pth or .safetensors) and its CLIP."""
        path = Path(head_path)
        if not path.is_file():
            raise MetricsError(f"aesthetic head {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        # The published head's keys may carry a module prefix ("layers.0.weight"); take the one linear layer.
        weights = [k for k in state if k.endswith("weight")]
        if len(weights) != 1 or state[weights[0]].ndim != 2 or state[weights[0]].shape[0] != 1:
            raise MetricsError(f"{path} is not a single linear aesthetic head (keys: {sorted(state)[:6]})")
        weight = state[weights[0]]
        bias = state.get(weights[0][: -len("weight")] + "bias", torch.zeros(1))
        clip = CLIPEncoder.from_pretrained(clip_model, device=device, batch_size=batch_size,
                                           local_files_only=local_files_only)
        if weight.shape[1] != clip.model.config.projection_dim:
            raise MetricsError(f"aesthetic head {path} expects {weight.shape[1]}-d embeddings, {clip_model} gives "
                               f"{clip.model.config.projection_dim}-d")
        head = torch.nn.Linear(weight.shape[1], 1)
        head.load_state_dict({"weight": weight, "bias": bias.reshape(1)})
        return cls(clip, head, path.name)

    @classmethod
    def tiny(cls, clip: CLIPEncoder, seed: int = 0) -> LaionAestheticScorer:
        """A random head over a tiny CLIP: plumbing only."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = torch.nn.Linear(clip.model.config.projection_dim, 1)
        return cls(clip, head, "tiny-random-aesthetic-head", random_weights=True)


def frame_quality(frames: Images, scorer: ImageQualityScorer) -> float:
    """Mean per-frame rating (aesthetics or imaging quality), times 100."""
    images = as_image_list(frames)
    if not images:
        raise MetricsError("no frames to rate")
    scores = np.asarray(scorer.score_images(images), dtype=float)
    if scores.shape != (len(images),):
        raise MetricsError(f"{scorer.model_id} returned {scores.shape} scores for {len(images)} frames")
    return float(scores.mean()) * SCALE


def motion_smoothness(frames: Images, interpolator: FrameInterpolator) -> float | None:
    """VBench motion smoothness: how well the odd frames are predicted from their even neighbours, times 100.

    Works on consecutive decoded frames (sampling would change what "smooth" means). None for fewer
    than three frames.
    """
    frames = as_frames(frames)
    count = (len(frames) - 1) // 2
    if count < 1:
        return None
    before, middle, after = frames[0:2 * count:2], frames[1:2 * count:2], frames[2:2 * count + 1:2]
    predicted = np.asarray(interpolator.interpolate(before, after))
    if predicted.shape != middle.shape:
        raise MetricsError(f"{interpolator.model_id} returned frames of shape {predicted.shape}, expected {middle.shape}")
    error = np.abs(predicted.astype(np.float64) - middle.astype(np.float64)).mean()
    return (255.0 - error) / 255.0 * SCALE
