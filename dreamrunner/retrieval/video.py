"""Reading clips (PyAV) and cutting them to files (ffmpeg): probe, sample frames, materialise."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import UnreadableVideo


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    duration: float


def _open(path: str | Path):
    import av

    if not Path(path).is_file():
        raise UnreadableVideo(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except Exception as error:  # PyAV raises many error types for a broken file
        raise UnreadableVideo(f"{Path(path).name}: cannot open video ({type(error).__name__}: {error})") from None
    if not container.streams.video:
        container.close()
        raise UnreadableVideo(f"{Path(path).name}: no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size and duration from the container header (decodes one frame to be sure it plays)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = stream.frames / fps if stream.frames and fps else 0.0
        try:
            frame = next(container.decode(video=0))
        except Exception as error:
            raise UnreadableVideo(f"{Path(path).name}: cannot decode a frame ({type(error).__name__})") from None
        if fps <= 0 or duration <= 0:
            raise UnreadableVideo(f"{Path(path).name}: no frame rate or duration in the header")
        return VideoInfo(fps=fps, width=frame.width, height=frame.height, duration=duration)
    finally:
        container.close()


def sample_frames(path: str | Path, start: float = 0.0, end: float | None = None, fps: float = 4.0,
                  max_side: int = 480) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB frames (uint8 HxWx3, longer side at most `max_side`) every 1/fps seconds of [start, end).

    Returns (times in seconds from the file's start, frames). Raises UnreadableVideo when nothing decodes.
    """
    import cv2

    container = _open(path)
    times: list[float] = []
    frames: list[np.ndarray] = []
    next_time = start
    try:
        stream = container.streams.video[0]
        if start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(video=0):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if end is not None and t >= end:
                break
            if t + 1e-6 < next_time:
                continue
            image = frame.to_ndarray(format="rgb24")
            scale = max_side / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            times.append(t)
            frames.append(image)
            next_time = max(next_time + 1.0 / fps, t + 0.5 / fps)
    except UnreadableVideo:
        raise
    except Exception as error:
        if not frames:
            raise UnreadableVideo(f"{Path(path).name}: decoding failed ({type(error).__name__})") from None
        # A file truncated mid-stream still gives the frames before the damage.
    finally:
        container.close()
    if not frames:
        raise UnreadableVideo(f"{Path(path).name}: no frames between {start:.2f} s and {end} s")
    return np.array(times), frames


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def materialise(source: str | Path, out: str | Path, start: float | None = None, end: float | None = None,
                fps: int = 8, size: tuple[int, int] | None = None) -> Path:
    """Cut [start, end) of a local video to an H.264 mp4 at `fps` (the model's frame rate: 8 for CogVideoX).

    `size` = (width, height) scales and center-crops to that frame; None keeps the source's shape.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [ffmpeg_exe(), "-y", "-loglevel", "error"]
    if start:
        command += ["-ss", f"{start:.3f}"]
    command += ["-i", str(source)]
    if end is not None:
        command += ["-t", f"{end - (start or 0):.3f}"]
    filters = [f"fps={fps}"]
    if size is not None:
        width, height = size
        filters += [f"scale={width}:{height}:force_original_aspect_ratio=increase", f"crop={width}:{height}"]
    else:
        filters.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")  # yuv420p needs even sides
    command += ["-vf", ",".join(filters), "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode or not out.is_file() or out.stat().st_size == 0:
        raise UnreadableVideo(f"{Path(source).name}: ffmpeg could not cut it ({done.stderr.strip()[-300:]})")
    return out
