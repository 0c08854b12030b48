"""Text on frames (plan captions, entity labels, the noise warning), drawn with Pillow in a Unicode font.

The font is Noto Sans CJK SC from the `noto-cjk-sans-otc` package (requirements.txt): one face that has
Latin with its accents, general punctuation (the em dash, curly quotes) and Chinese, Japanese and
Korean, so a label draws as written on every machine that installed the requirements. The same face
draws burned-in subtitles (`dreamrunner.export`). Without the package, text falls back to Pillow's
built-in font (Latin only) and a warning says so once.
"""

from __future__ import annotations

import functools
import itertools
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

FONT_PACKAGE = "noto-cjk-sans-otc"
FONT_FAMILY = "Noto Sans CJK SC"  # the face of the collection that is used: Simplified Chinese glyph forms

# Below this frame height text is illegible, so plan text (captions, labels) is left out.
MIN_TEXT_HEIGHT = 160

Color = tuple[int, int, int]


@functools.cache
def font_face() -> tuple[Path, int] | None:
    """(font collection file, index of its FONT_FAMILY face), or None, with a warning, where the font package
    is not installed or its file does not hold that face."""
    try:
        from noto_cjk_sans_otc import FONT_PATH

        path = Path(str(FONT_PATH))
        for index in itertools.count():  # truetype raises OSError past the last face
            if ImageFont.truetype(str(path), 12, index=index).getname()[0] == FONT_FAMILY:
                return path, index
    except (ImportError, OSError):
        pass
    logger.warning("the font %r of the %s package is missing (pip install -r requirements.txt): text on frames "
                   "falls back to Pillow's default font, which draws only Latin letters, and burned-in subtitles "
                   "to the system's fonts", FONT_FAMILY, FONT_PACKAGE)
    return None


@functools.lru_cache(maxsize=64)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The overlay font at `size` pixels (em size); Pillow's default font where the font package is missing."""
    face = font_face()
    if face is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(str(face[0]), size, index=face[1])


def text_size(height: int) -> int:
    """Font size in pixels for a frame `height` pixels tall: about 1/28 of it, at least 10."""
    return max(round(height / 28), 10)


@functools.lru_cache(maxsize=256)
def wrap_text(text: str, width: int, size: int) -> tuple[str, ...]:
    """`text` in lines no wider than `width` pixels at font `size`: broken between words, and inside a word
    that is wider than a line (Chinese and Japanese put no spaces between words)."""
    font = load_font(size)
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if current and font.getlength(current + char) > width:
                lines.append(current)
                current = char
            else:
                current += char
    if current:
        lines.append(current)
    return tuple(lines)


@functools.lru_cache(maxsize=256)
def _coverage(text: str, size: int, outline: bool, anchor: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(left, top, outline coverage, fill coverage) of `text` drawn at the origin: float32 [h, w] in 0..1.

    Rendering glyphs is the slow part of drawing text (CJK outlines especially); a caption drawn on every frame
    of a clip is rendered once here and blended into each frame.
    """
    font = load_font(size)
    stroke = 1 if outline else 0
    left, top, right, bottom = font.getbbox(text, anchor=anchor, stroke_width=stroke)
    shape = (max(right - left, 1), max(bottom - top, 1))
    masks = []
    for width in (stroke, 0):
        mask = Image.new("L", shape)
        ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=255, anchor=anchor,
                                  stroke_width=width, stroke_fill=255)
        masks.append(np.asarray(mask, np.float32) / 255)
    if not outline:
        masks[0] = np.zeros_like(masks[1])
    return left, top, masks[0], masks[1]


def draw_text(frame: np.ndarray, text: str, xy: tuple[int, int], size: int, color: Color = (255, 255, 255),
              outline: bool = True, anchor: str = "la") -> None:
    """Draw `text` in place on a uint8 [H, W, 3] `frame` at `xy` (Pillow's `anchor`; default: left edge,
    ascender line), in `color` with a black outline that keeps it readable on any background."""
    left, top, stroke, fill = _coverage(text, size, outline, anchor)
    x, y = xy[0] + left, xy[1] + top
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + fill.shape[1], width), min(y + fill.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    stroke = stroke[y0 - y:y1 - y, x0 - x:x1 - x, None]
    fill = fill[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    # Pillow's order: the black outline over the frame, then the text over the outline.
    blended = region * (1 - stroke) * (1 - fill) + np.asarray(color, np.float32) * fill
    frame[y0:y1, x0:x1] = np.round(blended).astype(np.uint8)


def draw_paragraph(frame: np.ndarray, text: str, top: int | None = None, bottom: int | None = None,
                   max_lines: int = 3) -> tuple[int, int]:
    """Centered wrapped text starting at `top` or ending at `bottom` (pixels); returns the rows it spans."""
    height, width = frame.shape[:2]
    size = text_size(height)
    lines = wrap_text(text, int(width * 0.94), size)[:max_lines]
    line_height = round(size * 1.3)
    block = line_height * len(lines)
    first = top if top is not None else (height if bottom is None else bottom) - block
    for number, line in enumerate(lines):
        # Each line is centred on the middle of its slot, which leaves room for accents and descenders.
        draw_text(frame, line, (width // 2, first + number * line_height + line_height // 2), size, anchor="mm")
    return first, first + block


def label_frames(frames: np.ndarray, label: str, short: str = "NOISE", color: Color = (255, 60, 60)) -> np.ndarray:
    """A copy of uint8 `frames` [F, H, W, 3] with `label` (or `short`, where the label does not fit) in a dark
    strip along the top."""
    frames = frames.copy()
    height, width = frames.shape[1:3]
    size = text_size(height)
    strip = min(round(size * 1.6) + 2, height)
    if load_font(size).getlength(label) > width - 4:
        label = short
    frames[:, :strip] = (frames[:, :strip] * 0.35).astype(np.uint8)
    for frame in frames:
        draw_text(frame, label, (2, strip // 2), size, color, outline=False, anchor="lm")
    return frames
