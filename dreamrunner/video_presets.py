"""What each model makes: frame sizes and frame counts, as data (one row per backend).

`VideoSettings` checks what holds for every model (8N+1 frames, sides a multiple of 16); this table says what
one model was trained for, and `check_video` holds a story's geometry to it when it is set (`edits.set_video`,
with the story's backend) and before a render (with the backend that renders). A backend without a row is
left to the model itself. Rows for new models (CogVideoX 1.5, Wan) are added here.

Sources: CogVideoX 2B/5B model cards and CogVideo's `cli_demo.py` ("8N + 1 where N <= 6", 720x480 only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DreamRunnerError


@dataclass(frozen=True)
class ModelVideo:
    model: str  # the name errors use
    # preset name -> (height, width). Names are not WxH, which the CLI also takes.
    sizes: dict[str, tuple[int, int]]
    frame_counts: tuple[int, ...]  # every num_frames the model makes
    any_size: bool = False  # random-weight models take any size VideoSettings allows


# 8N + 1 with N <= 6 (1 is a single frame).
COGVIDEOX_FRAMES = tuple(range(1, 50, 8))
COGVIDEOX_SIZES = {"480p": (480, 720)}

MODEL_VIDEO: dict[str, ModelVideo] = {
    "cogvideox-2b": ModelVideo("CogVideoX-2B", COGVIDEOX_SIZES, COGVIDEOX_FRAMES),
    "cogvideox-5b": ModelVideo("CogVideoX-5B", COGVIDEOX_SIZES, COGVIDEOX_FRAMES),
    # Random weights at a small size (backends.tiny.TINY_VIDEO); a larger story renders there (story_render).
    "tiny": ModelVideo("tiny", {"tiny": (64, 96), **COGVIDEOX_SIZES}, COGVIDEOX_FRAMES, any_size=True),
    "tiny-5b": ModelVideo("tiny-5b", {"tiny": (64, 96), **COGVIDEOX_SIZES}, COGVIDEOX_FRAMES, any_size=True),
}


class VideoPresetError(DreamRunnerError):
    """A frame size or count the model does not make, or a size that is not WIDTHxHEIGHT."""


def parse_size(text: str, backend: str | None = None) -> tuple[int, int]:
    """`text` as (height, width): a preset name of `backend`'s row, or WIDTHxHEIGHT as video tools write it
    (`720x480` is 480 rows of 720). Raises VideoPresetError."""
    row = MODEL_VIDEO.get(backend or "")
    text = text.strip()
    if row is not None and text in row.sizes:
        return row.sizes[text]
    match = re.fullmatch(r"(\d{1,5})\s*[xX×]\s*(\d{1,5})", text)
    if match is None:
        presets = f"; presets of {row.model}: {', '.join(row.sizes)}" if row else ""
        raise VideoPresetError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 720x480){presets}")
    return int(match.group(2)), int(match.group(1))


def check_video(backend: str, num_frames: int, height: int, width: int) -> None:
    """Raise VideoPresetError naming the field and what `backend`'s model makes, when it does not make this."""
    row = MODEL_VIDEO.get(backend)
    if row is None:
        return
    if num_frames not in row.frame_counts:
        raise VideoPresetError(f"video.num_frames = {num_frames}: {row.model} makes "
                               f"{', '.join(map(str, row.frame_counts))} frames")
    if not row.any_size and (height, width) not in row.sizes.values():
        sizes = ", ".join(f"{w}x{h} ({name})" for name, (h, w) in row.sizes.items())
        raise VideoPresetError(f"video size {width}x{height} (width x height): {row.model} makes {sizes}")
