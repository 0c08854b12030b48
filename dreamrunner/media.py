"""Media that users bring in (reference images of characters, their own motion clips), checked the same way
for the editor's uploads and the CLI's commands."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import DreamRunnerError

MIN_SIDE = 64
MAX_BYTES = 20 * 1024 * 1024
FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi"}


class MediaError(DreamRunnerError):
    pass


def load_reference_image(path: Path) -> Image.Image:
    """Open a reference image as RGB, refusing what is not a usable picture of a character."""
    path = Path(path)
    name = path.name
    if path.stat().st_size > MAX_BYTES:
        raise MediaError(f"{name} is larger than {MAX_BYTES // (1024 * 1024)} MB")
    try:
        with Image.open(path) as image:
            image.verify()
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise MediaError(f"{name} is not an image Pillow can read ({error})") from None
    if image.format not in FORMATS:
        raise MediaError(f"{name} is a {image.format} image; use PNG, JPEG or WebP")
    if min(image.size) < MIN_SIDE:
        raise MediaError(f"{name} is {image.size[0]}x{image.size[1]} pixels; reference images need at least "
                         f"{MIN_SIDE} pixels on each side")
    return image.convert("RGB")


def check_clip(path: Path) -> float:
    """Seconds of a playable video (PyAV decodes one frame to be sure), or a MediaError saying why not."""
    import av

    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise MediaError(f"{path.name} is not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            next(container.decode(video=0))
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return (container.duration or 0) / 1_000_000
    except (av.error.FFmpegError, StopIteration, OSError) as error:
        raise MediaError(f"{path.name} cannot be played: {error or 'no frames'}") from None
