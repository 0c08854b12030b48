"""Reading and writing mp4 clips with PyAV (libx264, yuv420p), written atomically.

A scene clip or story video is written to a temporary file beside its target and renamed over it, so a
cancelled or crashed job never leaves a half-written file where the project expects a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import DreamRunnerError
from .files import temporary_beside


class VideoFileError(DreamRunnerError):
    pass


class VideoWriter:
    """Streams uint8 HxWx3 RGB frames into an mp4; the file appears at `path` only on `close()`."""

    def __init__(self, path: str | os.PathLike, fps: int, width: int, height: int, crf: int = 18):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = str(temporary_beside(self.path, ".mp4"))
        self.width, self.height = width, height
        self.frames = 0
        self._container = av.open(self._temporary, mode="w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise VideoFileError(f"frame of shape {frame.shape} {frame.dtype}, expected ({self.height}, {self.width}, 3) uint8")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self._temporary, self.path)
        return self.path

    def abort(self) -> None:
        self._container.close()
        Path(self._temporary).unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int) -> Path:
    frames = iter(frames)
    first = next(frames)
    with VideoWriter(path, fps, first.shape[1], first.shape[0]) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return Path(path)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a clip as uint8 [F, H, W, 3] RGB."""
    return read_video_timed(path)[0]


def read_video_timed(path: str | os.PathLike, until: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames (uint8 [F, H, W, 3] RGB) and their times in seconds from the first frame (float [F]); with
    `until`, only the frames shown before that time (decoding stops there)."""
    if not Path(path).is_file():
        raise VideoFileError(f"video {path} does not exist")
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            for number, frame in enumerate(container.decode(video=0)):
                # A frame without a timestamp (rare) takes its predecessor's.
                time = frame.time if frame.time is not None else (times[-1] if times else 0.0)
                if times and until is not None and time - times[0] >= until:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(time)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoFileError(f"cannot decode video {path}: {error}") from None
    if not frames:
        raise VideoFileError(f"video {path} has no frames")
    return np.stack(frames), np.asarray(times) - times[0]
