"""Frames in, frames out: checking image inputs, decoding videos, and choosing which frames are scored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from ..errors import DreamRunnerError
from ..media import ImageFileError, load_image
from ..video_io import VideoFileError, count_frames
from ..video_io import read_video as decode_video

# uint8 [N, H, W, 3], or a sequence of uint8 [H, W, 3] arrays / PIL images.
Images = Union[np.ndarray, Sequence[Union[np.ndarray, Image.Image]]]


class MetricsError(DreamRunnerError):
    pass


def _check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise MetricsError(f"{where}: expected a uint8 [H, W, 3] RGB image, got {frame.dtype} {tuple(frame.shape)}")
    return frame


def as_image_list(images: Images) -> list[np.ndarray]:
    """uint8 [H, W, 3] arrays from an [N, H, W, 3] array or a sequence of arrays or PIL images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise MetricsError(f"expected frames as a uint8 [N, H, W, 3] array, got shape {tuple(images.shape)}")
        images = list(images)
    result = []
    for i, image in enumerate(images):
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        result.append(_check_frame(np.asarray(image), f"image {i}"))
    return result


def as_frames(frames: Images) -> np.ndarray:
    """A uint8 [F, H, W, 3] array; every frame must have the same size."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
            raise MetricsError(f"expected frames as a uint8 [F, H, W, 3] array, got {frames.dtype} {tuple(frames.shape)}")
        return frames
    images = as_image_list(frames)
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8)
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise MetricsError(f"the frames of a video must share one size, got {sorted(sizes)}")
    return np.stack(images)


def video_length(path: str | os.PathLike) -> int:
    """The number of frames of a video file."""
    try:
        return count_frames(path)
    except VideoFileError as error:
        raise MetricsError(str(error)) from None


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None) -> np.ndarray:
    """The frames of a video file (all, or those at `indices`) as shown, uint8 [F, H, W, 3] RGB.

    Read by the shared reader (`dreamrunner.video_io`): display rotation applied, only the kept frames converted.
    """
    try:
        return decode_video(path, indices)
    except VideoFileError as error:
        raise MetricsError(str(error)) from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A reference image as shown (`dreamrunner.media.load_image`: upright, 8-bit, alpha on white), uint8 [H, W, 3]."""
    try:
        return np.asarray(load_image(path))
    except ImageFileError as error:
        raise MetricsError(f"reference image: {error}") from None


def sample_indices(num_frames: int, max_frames: int | None) -> np.ndarray:
    """Indices of the frames that are scored: all of them, or `max_frames` spread evenly over the video.

    The first and last frames are always kept and the spacing is as even as integer indices allow,
    so a sampled clip still spans the whole scene (every event gets frames).
    """
    if num_frames < 1:
        raise MetricsError("a video needs at least one frame")
    if max_frames is not None and max_frames < 1:
        raise MetricsError(f"max_frames must be at least 1, got {max_frames}")
    if max_frames is None or max_frames >= num_frames:
        return np.arange(num_frames)
    if max_frames == 1:
        return np.array([(num_frames - 1) // 2])
    return np.unique(np.round(np.linspace(0, num_frames - 1, max_frames)).astype(int))


def frame_times(indices: np.ndarray, num_frames: int) -> np.ndarray:
    """Where each frame sits in the video, 0 (first frame) .. 1 (last frame)."""
    if num_frames == 1:
        return np.zeros(len(indices))
    return np.asarray(indices, dtype=float) / (num_frames - 1)
