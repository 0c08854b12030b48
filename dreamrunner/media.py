"""Reading pictures the way their files mean them: the one image loader every stage uses.

Reference images come from phones, scanners and editors, so a file's pixels are not yet the picture:
- EXIF orientation (phones store the sensor's pixels and a tag saying how to turn them) is applied
  (Pillow's `ImageOps.exif_transpose`);
- 16-bit and 32-bit samples (modes I;16, I, F) are scaled to 8 bits by their value range, where Pillow's
  own conversion clips everything above 255 to white;
- transparency (an alpha channel, or a colour key such as PNG's tRNS, 16-bit ones included) is composited
  on a background colour (`DEFAULT_BACKGROUND`, white, or the story's
  `settings.reference_background`), where Pillow's RGB conversion would drop alpha and leave whatever
  colour the transparent pixels happen to hold (usually black);
- files larger than Pillow's decompression-bomb limit, and files that do not decode, raise named errors.

Video files are read by `dreamrunner.video_io`, which applies their rotation the same way.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from .errors import DreamRunnerError

# Character pictures are most often cut out on white; a dark background would merge with dark hair or clothes.
DEFAULT_BACKGROUND = "white"

# What a reference image must be (the editor's upload and `dreamrunner plan --character` check the same).
REFERENCE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}
REFERENCE_MIN_SIDE = 64
REFERENCE_MAX_BYTES = 20 * 1024 * 1024

# Bumped whenever the loader's output for the same file changes, so caches keyed by file content are
# not reused across the change (dreamrunner.priors keys its latents and priors with it).
# 2: EXIF orientation, 16-bit scaling, alpha compositing, video rotation. 3: 16-bit colour keys (tRNS),
# mirrored video display matrices.
DECODE_VERSION = 3

_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


class ImageFileError(DreamRunnerError):
    """An image file that cannot be used; the message names the file."""


class UnreadableImageError(ImageFileError):
    """A file that Pillow cannot decode as an image (not an image, truncated, corrupt)."""


class ImageTooLargeError(ImageFileError):
    """An image with more pixels than Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`)."""


def background_rgb(color: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """An (r, g, b) triple from a colour name, '#rrggbb' or a triple; ValueError for anything else."""
    if isinstance(color, str):
        return ImageColor.getrgb(color)[:3]
    rgb = tuple(int(c) for c in color)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"background {color!r} is not an (r, g, b) triple of 0..255")
    return rgb


def _open(path: Path) -> Image.Image:
    """Decode the whole file, turning Pillow's bomb warning into an error (it only warns below 2x its limit)."""
    try:
        with open(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(handle)
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow refuses before it exposes the size; its message carries the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLargeError(f"{path.name} is {size}, more than the {Image.MAX_IMAGE_PIXELS:,} an image may "
                                 f"have (a guard against decompression bombs); scale it down first") from None
    except FileNotFoundError:
        raise ImageFileError(f"image {path} does not exist") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{path.name} is not an image Pillow can read (unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImageError(f"{path.name} is not an image Pillow can read ({error})") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """An 'L' image from 16/32-bit integer or float samples, scaled by their value range, never clipped.

    Integer samples within 0..65535 (16-bit PNG and TIFF, which Pillow reads as I;16 or I) are scaled from
    that full range, so a 16-bit export keeps its tones; floats within 0..1 from that range; anything else
    from the image's own minimum..maximum.
    """
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    if image.mode == "F" and 0.0 <= low and high <= 1.0:
        low, high = 0.0, 1.0
    elif image.mode != "F" and 0.0 <= low and high <= 65535.0:
        low, high = 0.0, 65535.0
    scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")


def normalize_image(image: Image.Image, background: str | tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """An upright 8-bit RGB picture of a decoded image (see the module docstring for what is applied)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_DEPTH:
        key = image.info.get("transparency")
        gray = _to_8bit(image)
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            # A colour key (PNG tRNS) in the source's own sample values: made an alpha channel before the
            # scaling to 8 bits drops it (the transparent pixels would show their own, usually black, value).
            alpha = np.where(np.asarray(image) == key, 0, 255).astype(np.uint8)
            gray = Image.merge("LA", (gray, Image.fromarray(alpha, mode="L")))
        image = gray
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background_rgb(background), 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, background: str | tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """An image file as the picture it shows: RGB, 8 bits, upright, alpha composited on `background`.

    Raises ImageFileError (missing), UnreadableImageError (not decodable), ImageTooLargeError (bomb).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"image {path} does not exist")
    return normalize_image(_open(path), background)


def load_reference_image(path: str | os.PathLike,
                         background: str | tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """`load_image` for a character's reference picture, refusing what is not a usable one.

    Beyond `load_image`'s errors, ImageFileError for a file over REFERENCE_MAX_BYTES, a format outside
    REFERENCE_FORMATS, or a side under REFERENCE_MIN_SIDE pixels (after EXIF orientation).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"reference image {path} does not exist")
    name = path.name
    if path.stat().st_size > REFERENCE_MAX_BYTES:
        raise ImageFileError(f"{name} is larger than {REFERENCE_MAX_BYTES // (1024 * 1024)} MB")
    image = _open(path)
    if image.format not in REFERENCE_FORMATS:
        raise ImageFileError(f"{name} is a {image.format} image; use PNG, JPEG or WebP")
    image = normalize_image(image, background)
    if min(image.size) < REFERENCE_MIN_SIDE:
        raise ImageFileError(f"{name} is {image.size[0]}x{image.size[1]} pixels; reference images need at least "
                             f"{REFERENCE_MIN_SIDE} pixels on each side")
    return image

