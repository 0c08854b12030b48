"""Text on frames (plan captions, entity labels, the noise warning), drawn with Pillow in Unicode fonts.

The fonts come from maintained packages (requirements.txt), so text draws the same on every machine that
installed them, with no system fonts:
- Noto Sans CJK SC (`noto-cjk-sans-otc`, 19 MB): Latin with its accents, general punctuation (the em dash,
  curly quotes), Greek, Cyrillic, and Chinese, Japanese and Korean: the primary face;
- the Noto faces of `manimgx-fonts` (3.5 MB wheel, 6.5 MB installed): Noto Sans, Arabic, Hebrew, Devanagari
  and the other Indic scripts, Thai, Lao, Khmer, Myanmar, Armenian, Georgian, Ethiopic, Sinhala, Symbols,
  and Noto Emoji (monochrome outlines, which Pillow and libass both draw).
`font_chain()` lists them, primary first. Each character is drawn in the first face of the chain that has
it (`font_runs`; marks, joiners and spaces stay with the character before them, so scripts that combine
characters are shaped, by Pillow's raqm layout, within one face). A character that no face has is drawn
as the primary face's box and LOGGED as a warning naming it: never silently. Runs are drawn left to right
in reading order (a line that mixes right-to-left and left-to-right text is not reordered between runs).
Burned-in subtitles (`dreamrunner.export`) use the same faces through libass, in a fonts folder holding
the chain and `\\fn` overrides on the same runs. Without the packages, text falls back to Pillow's built-in
font (Latin only) and a warning says so once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

FONT_PACKAGE = "noto-cjk-sans-otc"
FONT_FAMILY = "Noto Sans CJK SC"  # the face of the collection that is used: Simplified Chinese glyph forms
FALLBACK_PACKAGE = "manimgx-fonts"

# Below this frame height text is illegible, so plan text (captions, labels) is left out.
MIN_TEXT_HEIGHT = 160
ELLIPSIS = "\u2026"

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


def _fallback_files() -> list[Path]:
    """The fallback faces, script faces first, then Noto Sans Symbols, then Noto Emoji (last: it also has
    digits and a few letters, in emoji style)."""
    try:
        import manimgx_fonts
    except ImportError:
        logger.warning("the %s package is missing (pip install -r requirements.txt): Arabic, Hebrew, Indic, Thai "
                       "and emoji characters cannot be drawn", FALLBACK_PACKAGE)
        return []
    files = sorted(Path(manimgx_fonts.__file__).parent.glob("*.ttf"))
    last = ("NotoSansSymbols", "NotoEmoji")
    files = [f for f in files if "Italic" not in f.name and not f.name.startswith(last)] + \
        [f for name in last for f in files if f.name.startswith(name)]
    return files


@functools.cache
def font_chain() -> tuple[tuple[Path, int], ...]:
    """Every face text may be drawn in, as (file, face index), the primary (`font_face`) first."""
    primary = font_face()
    return tuple(([primary] if primary is not None else []) + [(path, 0) for path in _fallback_files()])


@functools.cache
def _codepoints(face: tuple[Path, int]) -> frozenset[int]:
    """The characters a face has (its best Unicode cmap, read with fontTools)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(face[0]), fontNumber=face[1], lazy=True) as font:
        return frozenset(font.getBestCmap() or ())


@functools.cache
def family_name(face: tuple[Path, int]) -> str:
    """The face's family as libass (and Windows) select it: its name table's legacy family (name ID 1), which
    for a face such as Noto Sans Hebrew is "Noto Sans Hebrew Light" (libass would not find it by its
    typographic family and would fall back to a system font)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(face[0]), fontNumber=face[1], lazy=True) as font:
        return str(font["name"].getDebugName(1))


@functools.cache
def _line_height(face: tuple[Path, int]) -> float:
    """A face's Windows line height (OS/2 winAscent + winDescent) in ems: what libass sizes a face by."""
    from fontTools.ttLib import TTFont

    with TTFont(str(face[0]), fontNumber=face[1], lazy=True) as font:
        os2 = font["OS/2"]
        return (os2.usWinAscent + os2.usWinDescent) / font["head"].unitsPerEm


def libass_size_factor(face: tuple[Path, int]) -> float:
    """The factor on an ASS font size that draws `face` at the primary face's em size. libass (like VSFilter)
    makes a font's whole line height, not its em, the size asked for; Pillow sizes by the em. Faces with tall
    lines (Devanagari, Arabic) would otherwise burn at half the size of the text around them."""
    chain = font_chain()
    return _line_height(face) / _line_height(chain[0]) if chain else 1.0


_UNDRAWN = ("Cc", "Cf", "Mn", "Mc", "Me", "Zs")  # controls, joiners, marks, spaces: with the character before
_warned: set[str] = set()


@functools.cache
def _face_of(char: str) -> int | None:
    """Index in `font_chain()` of the first face that has `char`; None when none has it."""
    code = ord(char)
    return next((i for i, face in enumerate(font_chain()) if code in _codepoints(face)), None)


def font_runs(text: str) -> list[tuple[int, str]]:
    """`text` cut into runs drawn in one face each: (index in `font_chain()`, run). A character that no face
    has goes to the primary face (its box) and is logged once as a warning naming it."""
    if not font_chain():
        return [(0, text)] if text else []
    runs: list[tuple[int, str]] = []
    missing = []
    chain = font_chain()
    for char in text:
        face, joins = _face_of(char), unicodedata.category(char) in _UNDRAWN
        if runs and joins and (face is None or ord(char) in _codepoints(chain[runs[-1][0]])):
            face = runs[-1][0]  # a mark, space or joiner the face before it has: the same run
        elif face is None:
            if not joins and char not in _warned:
                missing.append(char)
            face = runs[-1][0] if runs else 0
        if runs and runs[-1][0] == face:
            runs[-1] = (face, runs[-1][1] + char)
        else:
            runs.append((face, char))
    if missing:
        _warned.update(missing)
        logger.warning("no installed font draws %s: they show as boxes", ", ".join(
            f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, 'unnamed')})" for c in dict.fromkeys(missing)))
    return runs


@functools.lru_cache(maxsize=64)
def _fonts(size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, ...]:
    chain = font_chain()
    if not chain:
        return (ImageFont.load_default(size),)
    return tuple(ImageFont.truetype(str(path), size, index=index) for path, index in chain)


def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The primary overlay font at `size` pixels (em size); Pillow's default font where the package is missing."""
    return _fonts(size)[0]


@functools.lru_cache(maxsize=4096)
def text_length(text: str, size: int) -> float:
    """The advance width of `text` at `size` pixels, drawn in its faces (`font_runs`)."""
    fonts = _fonts(size)
    return sum(fonts[face].getlength(run) for face, run in font_runs(text))


def text_size(height: int) -> int:
    """Font size in pixels for a frame `height` pixels tall: about 1/28 of it, at least 10."""
    return max(round(height / 28), 10)


@functools.lru_cache(maxsize=256)
def wrap_text(text: str, width: int, size: int) -> tuple[str, ...]:
    """`text` in lines no wider than `width` pixels at font `size`: broken between words, and inside a word
    that is wider than a line (Chinese and Japanese put no spaces between words)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if text_length(candidate, size) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if current and text_length(current + char, size) > width:
                lines.append(current)
                current = char
            else:
                current += char
    if current:
        lines.append(current)
    return tuple(lines)


def fit_lines(text: str, width: int, size: int, max_lines: int) -> tuple[str, ...]:
    """At most `max_lines` lines of `text` wrapped to `width` pixels (`wrap_text`), the last ending in an
    ellipsis where text is left out. Only what can fit is wrapped: no glyph of a line is narrower than a
    quarter of an em, so at most 4 * width / size characters fill one; a 200,000-character narration costs
    what a few lines do."""
    limit = max_lines * (4 * width // max(size, 1) + 1)
    lines = wrap_text(text[:limit], width, size)
    if len(lines) <= max_lines and len(text) <= limit:
        return lines
    lines = list(lines[:max_lines])
    last = lines[-1]
    while last and text_length(last + ELLIPSIS, size) > width:
        last = last[:-1]
    lines[-1] = last.rstrip() + ELLIPSIS
    return tuple(lines)


def _anchor_offset(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, advance: float, anchor: str) -> tuple[float, float]:
    """Where Pillow's `anchor` puts the origin, from the left end of the baseline of a line `advance` wide,
    with the vertical metrics of the primary `font`."""
    ascent, descent = font.getmetrics()
    horizontal = {"l": 0.0, "m": advance / 2, "r": advance}[anchor[0]]
    vertical = {"a": -ascent, "m": (descent - ascent) / 2, "s": 0.0, "d": descent}[anchor[1]]
    return horizontal, vertical


@functools.lru_cache(maxsize=256)
def _coverage(text: str, size: int, outline: bool, anchor: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(left, top, outline coverage, fill coverage) of `text` drawn at the origin: float32 [h, w] in 0..1.

    Rendering glyphs is the slow part of drawing text (CJK outlines especially); a caption drawn on every frame
    of a clip is rendered once here and blended into each frame. Text in one face is drawn by Pillow with
    `anchor`; text in several (`font_runs`) run by run along one baseline, anchored by the primary face.
    """
    fonts = _fonts(size)
    runs = font_runs(text)
    stroke = 1 if outline else 0
    if len(runs) <= 1:  # (x, y, font, text, anchor) of each piece
        pieces = [(0.0, 0.0, fonts[runs[0][0]] if runs else fonts[0], text, anchor)]
        left, top, right, bottom = pieces[0][2].getbbox(text, anchor=anchor, stroke_width=stroke)
    else:
        x, baseline = 0.0, []
        for face, run in runs:
            x0, y0, x1, y1 = fonts[face].getbbox(run, anchor="ls", stroke_width=stroke)
            baseline.append((x, fonts[face], run, (x + x0, y0, x + x1, y1)))
            x += fonts[face].getlength(run)
        dx, dy = _anchor_offset(fonts[0], x, anchor)
        left = int(np.floor(min(box[0] for *_, box in baseline) - dx))
        top = int(np.floor(min(box[1] for *_, box in baseline) - dy))
        right = int(np.ceil(max(box[2] for *_, box in baseline) - dx))
        bottom = int(np.ceil(max(box[3] for *_, box in baseline) - dy))
        pieces = [(px - dx, -dy, font, run, "ls") for px, font, run, _ in baseline]
    shape = (max(right - left, 1), max(bottom - top, 1))
    masks = []
    for width in (stroke, 0):
        mask = Image.new("L", shape)
        draw = ImageDraw.Draw(mask)
        for px, py, font, run, piece_anchor in pieces:
            draw.text((px - left, py - top), run, font=font, fill=255, anchor=piece_anchor, stroke_width=width,
                      stroke_fill=255)
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
    lines = fit_lines(text, int(width * 0.94), size, max_lines)
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
    if text_length(label, size) > width - 4:
        label = short
    frames[:, :strip] = (frames[:, :strip] * 0.35).astype(np.uint8)
    for frame in frames:
        draw_text(frame, label, (2, strip // 2), size, color, outline=False, anchor="lm")
    return frames
