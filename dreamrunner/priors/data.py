"""Data preparation for the priors: reference images and clips to pixel clips in [-1, 1] with captions.

A subject prior learns from a character's reference images, each repeated into a static clip and captioned
with the character's rare token. A motion prior learns from approved clips, each sampled to the model's frame
count and resized (cover, then centre crop) to its resolution. Clips are [frames, 3, height, width] float32.
Files are read by the shared loaders (`dreamrunner.media`, `dreamrunner.video_io`): pictures upright and in
8 bits, only the kept frames of a clip converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DreamRunnerError
from ..media import ImageFileError, load_image
from ..story import Character
from ..video_io import VideoFileError, count_frames, read_video


class PriorDataError(DreamRunnerError):
    """A reference image or clip cannot be used; the message names the file."""


@dataclass(frozen=True)
class TrainingClip:
    """One training example: a media file, its caption, and the frame geometry it is prepared at."""

    path: Path
    caption: str
    static: bool  # True: an image repeated into a clip (subject); False: a video clip (motion)


def subject_caption(character: Character) -> str:
    """The caption of a character's reference images: its rare token stands for the character."""
    text = f"{character.token} {character.name}"
    return f"{text}, {character.description}" if character.description else text


def _fit(image: Image.Image, height: int, width: int) -> np.ndarray:
    """Resize so the image covers height x width, then centre-crop: no distortion, no borders."""
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def _to_clip(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    array = np.stack(frames).astype(np.float32) / 127.5 - 1.0  # uint8 -> [-1, 1]
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def load_static_clip(path: Path, num_frames: int, height: int, width: int) -> torch.Tensor:
    """A reference image (upright, 8-bit, alpha on the default background: `dreamrunner.media.load_image`)
    repeated into a clip of `num_frames` frames."""
    try:
        frame = _fit(load_image(path), height, width)
    except ImageFileError as error:
        raise PriorDataError(f"reference image {path}: {error}") from error
    return _to_clip([frame] * num_frames)


def load_video_clip(path: Path, num_frames: int, height: int, width: int) -> torch.Tensor:
    """`num_frames` frames sampled evenly over the whole clip, shown upright, resized while decoding."""
    try:
        # Evenly spaced over the clip; a clip shorter than num_frames repeats frames rather than failing.
        picks = np.linspace(0, count_frames(path) - 1, num_frames).round().astype(int)
        frames = read_video(path, picks, cover=(width, height))
    except VideoFileError as error:
        raise PriorDataError(f"clip {path}: {error}") from error
    return _to_clip(frames)


def load_clip(clip: TrainingClip, num_frames: int, height: int, width: int) -> torch.Tensor:
    loader = load_static_clip if clip.static else load_video_clip
    return loader(clip.path, num_frames, height, width)
