"""Media that users bring in: reference images of characters, checked and decoded once, the same way for the
editor's uploads and the CLI's `--character NAME=IMAGE`."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import DreamRunnerError

MIN_SIDE = 64
MAX_BYTES = 20 * 1024 * 1024
FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}


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
