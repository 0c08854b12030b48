"""Data preparation for the priors: reference images and clips to pixel clips in [-1, 1] with captions.

A subject prior learns from a character's reference images, each repeated into a static clip and captioned
with the character's rare token. A motion prior learns from approved clips, each sampled at the model's frame
rate from its start (at most the model's duration; a shorter clip holds its last frame) and resized (cover,
then centre crop) to its resolution. Clips are [frames, 3, height, width] float32.
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
from ..video_io import VideoFileError, read_frames_at


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


def load_video_clip(path: Path, num_frames: int, height: int, width: int, fps: float) -> torch.Tensor:
    """`num_frames` frames at `fps` from the clip's start, a window of the model's duration (49 frames at 8 fps:
    0 to 6 s): the frame shown at each time k / fps, so motion keeps its speed whatever the clip's length
    (never stretched in time); past the clip's end its last frame holds (the released code pads short clips
    with their last frame too). Shown upright, resized (cover, centre crop) while decoding.

    The window starts at the clip's first frame: an approved clip from retrieval is already cut to the span
    where tracking found its subject (`dreamrunner.retrieval.materialise`), so the window lies in that span.
    """
    try:
        frames = read_frames_at(path, np.arange(num_frames) / fps, cover=(width, height))
    except VideoFileError as error:
        raise PriorDataError(f"clip {path}: {error}") from error
    return _to_clip(frames)


def load_clip(clip: TrainingClip, num_frames: int, height: int, width: int, fps: float) -> torch.Tensor:
    if clip.static:
        return load_static_clip(clip.path, num_frames, height, width)
    return load_video_clip(clip.path, num_frames, height, width, fps)
