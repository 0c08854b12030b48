"""Reading clips and cutting them to files: probe and sample frames (the shared reader, `dreamrunner.video_io`,
which shows each clip upright), materialise (ffmpeg, which autorotates the same way)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..video_io import VideoInfo, sample_frames
from ..video_io import probe_video as probe
from .records import UnreadableVideo

__all__ = ["VideoInfo", "ffmpeg_exe", "materialise", "probe", "sample_frames"]


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
