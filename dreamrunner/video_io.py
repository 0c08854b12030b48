"""Reading and writing video with PyAV: the one video reader every stage uses, and atomic mp4 writing.

Reading shows a clip the way a player does: the display rotation and mirroring a phone records (the
stream's display matrix, which PyAV gives per frame as side data) are applied, so probing, filters, detection,
scoring and training all see the upright picture, as the ffmpeg command line (which autorotates) does.
Frames are converted (and resized, by swscale) only when they are kept, so memory follows the output, not
the source: sampling 9 small frames of a 400-frame 1080p clip holds 9 small frames.

Writing: a scene clip or story video (libx264, yuv420p, repeatable: the same frames give the same bytes) is
written to a temporary file beside its target and renamed over it, so a cancelled or crashed job never leaves a half-written file where the project
expects a finished one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import DreamRunnerError
from .files import temporary_beside


class VideoFileError(DreamRunnerError):
    """A video file that cannot be opened or decoded; the message names the file."""


class NoVideoStreamError(VideoFileError):
    """A file with no video stream, such as an audio-only mp4."""


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
        # mbtree=0: x264's macroblock-tree lookahead reads uninitialised memory, so the same frames gave different
        # bytes (and pixels) from one write to the next; without it a clip is repeatable (same frames, same file).
        self._stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}

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



# --- reading -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """A clip as it is shown: frames per second, upright width and height in pixels (after the display
    rotation), duration in seconds, and that rotation (degrees counter-clockwise: 0, 90, 180 or 270),
    after which the picture is mirrored when `mirrored` (a display matrix that flips, see `_orientation`)."""

    fps: float
    width: int
    height: int
    duration: float
    rotation: int = 0
    mirrored: bool = False


def _reason(error: Exception) -> str:
    # FFmpeg errors carry the whole path in str(); their strerror is the reason alone.
    return f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}"


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    path = Path(path)
    if not path.is_file():
        raise VideoFileError(f"video {path} does not exist")
    try:
        container = av.open(str(path))
    except Exception as error:  # PyAV raises many error types for a broken file
        raise VideoFileError(f"{path.name}: cannot open video ({_reason(error)})") from None
    try:
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no picture stream"
            raise NoVideoStreamError(f"{path.name} has no video stream ({what})")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _decode(container, stream, path: str | os.PathLike) -> Iterator[av.VideoFrame]:
    """The decoded frames; damage after the first good frame ends the clip (a truncated file keeps what plays)."""
    decoded = False
    try:
        for frame in container.decode(stream):
            decoded = True
            yield frame
    except (av.error.FFmpegError, OSError, ValueError) as error:
        if not decoded:
            raise VideoFileError(f"{Path(path).name}: cannot decode a frame ({_reason(error)})") from None


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix as 9 int32 (FFmpeg's layout: a, b, u, c, d, v, x, y, w), or None."""
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            return np.frombuffer(bytes(data), dtype=np.int32)[:9]
    return None


def _orientation(frame: av.VideoFrame) -> tuple[int, bool, bool]:
    """(counter-clockwise quarter turns, then mirror left-right, then mirror top-bottom) that show the frame
    as players do. The whole display matrix, rotation and flips (a front camera's mirror, ffmpeg
    -display_hflip), read as FFmpeg's own autorotation reads it (fftools/ffmpeg_filter.c): a mirrored matrix
    reports a rotation of 180 degrees, which alone would turn the picture upside down. Angles between
    quarter turns are rounded to one, as players do."""
    matrix = _display_matrix(frame)
    theta = -frame.rotation % 360  # FFmpeg's clockwise angle
    turns = round(frame.rotation / 90) % 4
    if matrix is None:
        return turns, False, False
    a, c, d = matrix[0], matrix[3], matrix[4]
    if abs(theta - 90) < 1:  # transpose=cclock_flip when c > 0, else clock
        return (1, False, True) if c > 0 else (3, False, False)
    if abs(theta - 180) < 1:  # hflip when a < 0, vflip when d < 0 (both: a half turn)
        return (2, False, False) if a < 0 and d < 0 else (0, bool(a < 0), bool(d < 0))
    if abs(theta - 270) < 1:  # transpose=clock_flip when c < 0, else cclock
        return (3, False, True) if c < 0 else (1, False, False)
    if theta < 1 or theta > 359:
        return 0, False, bool(d < 0)
    return turns, False, False


def _shown(frame: av.VideoFrame) -> tuple[tuple[int, bool, bool], int, int]:
    """(`_orientation`, shown width, shown height)."""
    orientation = _orientation(frame)
    if orientation[0] % 2:
        return orientation, frame.height, frame.width
    return orientation, frame.width, frame.height


def _upright(frame: av.VideoFrame, max_side: int | None = None,
             cover: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB of the frame as shown, scaled by swscale while converting (see `read_video`)."""
    (turns, flip_x, flip_y), width, height = _shown(frame)
    if cover is not None:
        scale = max(cover[0] / width, cover[1] / height)
        size = (max(cover[0], round(width * scale)), max(cover[1], round(height * scale)))
    else:
        scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    coded = (size[1], size[0]) if turns % 2 else size
    image = frame.to_ndarray(format="rgb24", width=coded[0], height=coded[1],
                             interpolation="AREA" if scale < 1 else "BICUBIC")
    image = np.rot90(image, turns)
    if flip_x:
        image = image[:, ::-1]
    if flip_y:
        image = image[::-1]
    if cover is not None:
        left, top = (size[0] - cover[0]) // 2, (size[1] - cover[1]) // 2
        image = image[top:top + cover[1], left:left + cover[0]]
    return np.ascontiguousarray(image)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, upright size and duration from the container header (decodes one frame to be sure it plays).

    Raises VideoFileError (missing, unreadable, no frame rate or duration) or NoVideoStreamError.
    """
    name = Path(path).name
    with _open(path) as (container, stream):
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = stream.frames / fps if stream.frames and fps else 0.0
        frame = next(_decode(container, stream, path), None)
        if frame is None:
            raise VideoFileError(f"{name}: no frame decodes")
        if fps <= 0 or duration <= 0:
            raise VideoFileError(f"{name}: no frame rate or duration in the header")
        (turns, flip_x, flip_y), width, height = _shown(frame)
        return VideoInfo(fps=fps, width=width, height=height, duration=duration, rotation=90 * turns,
                         mirrored=flip_x != flip_y)


def count_frames(path: str | os.PathLike) -> int:
    """The number of frames of a clip, counted from its packets (demuxed, not decoded)."""
    count = 0
    with _open(path) as (container, stream):
        try:
            for packet in container.demux(stream):
                # The final packet of each stream is an empty flush; edit lists mark cut frames as discarded.
                count += packet.size > 0 and not packet.is_discard
        except (av.error.FFmpegError, OSError, ValueError) as error:
            if not count:
                raise VideoFileError(f"{Path(path).name}: cannot read ({_reason(error)})") from None
    if not count:
        raise VideoFileError(f"{Path(path).name} has no frames")
    return count


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None, *, max_side: int | None = None,
               cover: tuple[int, int] | None = None) -> np.ndarray:
    """Frames of a clip as shown (display rotation applied), uint8 [F, H, W, 3] RGB.

    indices: the frames to return, in the order given (repeats allowed; `count_frames` says how many there
      are); None returns every frame. Only these frames are converted, and decoding stops after the last.
      Indices past a damaged or short tail get the last frame that decodes.
    max_side: scale down (never up) so the longer side is at most this many pixels.
    cover: (width, height): scale so the frame covers it, then centre-crop to it (no distortion, no borders).
    Scaling happens in the conversion, so memory is that of the returned frames.
    Raises VideoFileError (missing, unreadable, no frames) or NoVideoStreamError.
    """
    wanted = None if indices is None else [int(i) for i in indices]
    if wanted is not None and (not wanted or min(wanted) < 0):
        raise ValueError(f"frame indices must be a non-empty list of frame numbers >= 0, got {indices!r}")
    keep = None if wanted is None else set(wanted)
    highest = None if wanted is None else max(wanted)
    kept: dict[int, np.ndarray] = {}
    last = None
    with _open(path) as (container, stream):
        for index, frame in enumerate(_decode(container, stream, path)):
            last = index, frame
            if keep is None or index in keep:
                kept[index] = _upright(frame, max_side, cover)
            if highest is not None and index >= highest:
                break
        if last is None:
            raise VideoFileError(f"{Path(path).name} has no frames")
        if wanted is None:
            return np.stack(list(kept.values()))
        missing = [i for i in keep if i not in kept]
        if missing:
            tail = kept[last[0]] if last[0] in kept else _upright(last[1], max_side, cover)
            kept.update((i, tail) for i in missing)
    return np.stack([kept[i] for i in wanted])


def sample_frames(path: str | os.PathLike, start: float = 0.0, end: float | None = None, fps: float = 4.0,
                  max_side: int = 480) -> tuple[np.ndarray, list[np.ndarray]]:
    """Frames as shown (uint8 HxWx3 RGB, longer side at most `max_side`) every 1/fps seconds of [start, end).

    Returns (times in seconds from the file's start, frames). Raises VideoFileError when nothing decodes
    there, NoVideoStreamError for a file without video.
    """
    times: list[float] = []
    frames: list[np.ndarray] = []
    next_time = start
    with _open(path) as (container, stream):
        if start > 0:
            try:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            except (av.error.FFmpegError, OSError, ValueError) as error:
                raise VideoFileError(f"{Path(path).name}: cannot seek to {start:.2f} s ({_reason(error)})") from None
        for frame in _decode(container, stream, path):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if end is not None and t >= end:
                break
            if t + 1e-6 < next_time:
                continue
            times.append(t)
            frames.append(_upright(frame, max_side))
            next_time = max(next_time + 1.0 / fps, t + 0.5 / fps)
    if not frames:
        raise VideoFileError(f"{Path(path).name}: no frames between {start:.2f} s and {end} s")
    return np.array(times), frames


def read_frames_at(path: str | os.PathLike, times: Sequence[float], *, max_side: int | None = None,
                   cover: tuple[int, int] | None = None) -> np.ndarray:
    """The frame on screen at each of `times` (seconds from the clip's first frame), as shown (rotation
    applied), uint8 [len(times), H, W, 3] RGB; scaling as in `read_video`.

    A frame is on screen from its timestamp until the next one's (a millisecond of timestamp rounding
    allowed); past the clip's end its last frame holds. Decoding stops after the last time asked for, and only
    the frames picked are converted. Raises VideoFileError (missing, unreadable, no frames) or
    NoVideoStreamError.
    """
    order = sorted(range(len(times)), key=lambda i: times[i])
    picked: dict[int, np.ndarray] = {}
    position, first, previous, image = 0, None, None, None
    with _open(path) as (container, stream):
        for frame in _decode(container, stream, path):
            time = frame.time if frame.time is not None else (previous.time if previous is not None else 0.0)
            first = time if first is None else first
            # Every time before this frame's shows the previous frame.
            while position < len(order) and previous is not None and times[order[position]] + 1e-3 < time - first:
                image = image if image is not None else _upright(previous, max_side, cover)
                picked[order[position]] = image
                position += 1
            if position == len(order):
                break
            previous, image = frame, None
        if previous is None:
            raise VideoFileError(f"{Path(path).name} has no frames")
        if position < len(order):
            image = _upright(previous, max_side, cover)
            picked.update((i, image) for i in order[position:])
    return np.stack([picked[i] for i in range(len(times))])
