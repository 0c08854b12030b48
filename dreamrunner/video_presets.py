"""What each model makes: frame sizes and frame counts, as data (one row per backend).

`VideoSettings` checks only what holds for every model (4N+1 frames, the VAEs' temporal stride; sides a
multiple of 16; upper bounds); this table says what one model was trained for. A story's frame count is held
to its backend's row whenever the story is checked (`Story`); its size, by `check_video`, when it is set
(`edits.set_video`, with the story's backend) and before a render (with the backend that renders), so
projects saved at another size still load. Switching backend (`edits.set_backend`) moves the story to the new
model's geometry when the old one is not made by it.

Sources: CogVideoX 2B/5B model cards and CogVideo's `cli_demo.py` ("8N + 1 where N <= 6", 720x480 only);
CogVideoX1.5-5B's model card (1360x768, 81 or 161 frames: 16N+1 with N <= 10; diffusers 0.42.1's
CogVideoXPipeline pads the latent frames to a multiple of patch_size_t); Wan 2.1's `generate.py` sizes
(1.3B: 832*480 and 480*832; 14B: those and 1280*720, 720*1280), 81 frames at 16 fps, and diffusers'
WanPipeline rounding num_frames to 4N+1; Wan 2.2's `generate.py` sizes and configs (T2V-A14B: 480p and 720p both
ways, 81 frames at 16 fps; TI2V-5B: 1280*704 and 704*1280, 121 frames at 24 fps).
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
    rule: str  # frame_counts in words, for messages
    any_size: bool = False  # random-weight models take any size VideoSettings allows


# 8N + 1 with N <= 6 (1 is a single frame).
COGVIDEOX_FRAMES = tuple(range(1, 50, 8))
COGVIDEOX_SIZES = {"480p": (480, 720)}
COGVIDEOX_RULE = "8N+1 up to 49"
# 16N + 1 with N <= 10: an odd latent count, which the pipeline pads to whole token frames of two latents.
COGVIDEOX15_FRAMES = tuple(range(1, 162, 16))
COGVIDEOX15_SIZES = {"768p": (768, 1360)}
COGVIDEOX15_RULE = "16N+1 up to 161"
# 4N + 1 up to 81 (5 s at 16 fps, what Wan 2.1 was trained on).
WAN_FRAMES = tuple(range(1, 82, 4))
WAN_480 = {"480p": (480, 832), "480p-portrait": (832, 480)}
WAN_720 = {"720p": (720, 1280), "720p-portrait": (1280, 720)}
WAN_RULE = "4N+1 up to 81"
# Wan 2.2 TI2V-5B: 4N+1 up to 121 (5 s at 24 fps), 720p as 704 rows (a multiple of its 32-pixel tokens).
WAN22_5B_FRAMES = tuple(range(1, 122, 4))
WAN22_5B_SIZES = {"704p": (704, 1280), "704p-portrait": (1280, 704)}
WAN22_5B_RULE = "4N+1 up to 121"
TINY_SIZES = {"tiny": (64, 96)}  # backends.tiny.TINY_VIDEO and backends.wan.TINY_VIDEO

MODEL_VIDEO: dict[str, ModelVideo] = {
    "cogvideox-2b": ModelVideo("CogVideoX-2B", COGVIDEOX_SIZES, COGVIDEOX_FRAMES, COGVIDEOX_RULE),
    "cogvideox-5b": ModelVideo("CogVideoX-5B", COGVIDEOX_SIZES, COGVIDEOX_FRAMES, COGVIDEOX_RULE),
    "cogvideox1.5-5b": ModelVideo("CogVideoX1.5-5B", COGVIDEOX15_SIZES, COGVIDEOX15_FRAMES, COGVIDEOX15_RULE),
    "wan2.1-1.3b": ModelVideo("Wan2.1-T2V-1.3B", WAN_480, WAN_FRAMES, WAN_RULE),
    "wan2.1-14b": ModelVideo("Wan2.1-T2V-14B", {**WAN_720, **WAN_480}, WAN_FRAMES, WAN_RULE),
    "wan2.2-a14b": ModelVideo("Wan2.2-T2V-A14B", {**WAN_720, **WAN_480}, WAN_FRAMES, WAN_RULE),
    "wan2.2-ti2v-5b": ModelVideo("Wan2.2-TI2V-5B", WAN22_5B_SIZES, WAN22_5B_FRAMES, WAN22_5B_RULE),
    # Random weights at a small size; a larger story renders there (story_render). Frame counts as the model
    # they stand for (the tiny CogVideoX VAE, too, decodes an even latent count to 4 frames more).
    "tiny": ModelVideo("tiny", {**TINY_SIZES, **COGVIDEOX_SIZES}, COGVIDEOX_FRAMES, COGVIDEOX_RULE, any_size=True),
    "tiny-5b": ModelVideo("tiny-5b", {**TINY_SIZES, **COGVIDEOX_SIZES}, COGVIDEOX_FRAMES, COGVIDEOX_RULE,
                          any_size=True),
    "tiny-1.5": ModelVideo("tiny-1.5", {**TINY_SIZES, **COGVIDEOX15_SIZES}, COGVIDEOX15_FRAMES, COGVIDEOX15_RULE,
                           any_size=True),
    "tiny-wan": ModelVideo("tiny-wan", {**TINY_SIZES, **WAN_480}, WAN_FRAMES, WAN_RULE, any_size=True),
    "tiny-wan2.2": ModelVideo("tiny-wan2.2", {**TINY_SIZES, **WAN_480}, WAN_FRAMES, WAN_RULE, any_size=True),
    "tiny-wan2.2-5b": ModelVideo("tiny-wan2.2-5b", {**TINY_SIZES, **WAN22_5B_SIZES}, WAN22_5B_FRAMES,
                                 WAN22_5B_RULE, any_size=True),
}


class VideoPresetError(DreamRunnerError):
    """A frame size or count the model does not make, or a size that is not WIDTHxHEIGHT."""


MAX_SIDE = 2048  # pixels a side of any video (story.VideoSettings), far above what the models make


def parse_size(text: str, backend: str | None = None) -> tuple[int, int]:
    """`text` as (height, width): a preset name of `backend`'s row, or WIDTHxHEIGHT as video tools write it
    (`720x480` is 480 rows of 720). Raises VideoPresetError."""
    row = MODEL_VIDEO.get(backend or "")
    text = text.strip()
    if row is not None and text in row.sizes:
        return row.sizes[text]
    match = re.fullmatch(r"(\d+)\s*[xX×]\s*(\d+)", text)
    if match is None:
        presets = f"; presets of {row.model}: {', '.join(row.sizes)}" if row else ""
        raise VideoPresetError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 720x480){presets}")
    width, height = (int(value) if len(value) <= 6 else 10**6 for value in match.groups())
    if max(width, height) > MAX_SIDE:
        raise VideoPresetError(f"size {text!r} is too large: each side is at most {MAX_SIDE} pixels")
    return height, width


def frames_message(backend: str, num_frames: int) -> str | None:
    """Why `backend`'s model does not make `num_frames` frames (naming the nearest counts it makes), else None."""
    row = MODEL_VIDEO.get(backend)
    if row is None or num_frames in row.frame_counts:
        return None
    lower = [n for n in row.frame_counts if n < num_frames]
    higher = [n for n in row.frame_counts if n > num_frames]
    near = " or ".join(str(n) for n in (lower[-1:] + higher[:1]))
    return f"video.num_frames = {num_frames}: {_named(row, backend)} makes {row.rule} frames (e.g. {near})"


def check_video(backend: str, num_frames: int, height: int, width: int) -> None:
    """Raise VideoPresetError naming the field and what `backend`'s model makes, when it does not make this."""
    if (message := frames_message(backend, num_frames)) is not None:
        raise VideoPresetError(message)
    row = MODEL_VIDEO.get(backend)
    if row is not None and not row.any_size and (height, width) not in row.sizes.values():
        sizes = ", ".join(f"{w}x{h} ({name})" for name, (h, w) in row.sizes.items())
        raise VideoPresetError(f"video size {width}x{height} (width x height): {_named(row, backend)} makes {sizes}")


def _named(row: ModelVideo, backend: str) -> str:
    return row.model if row.model == backend else f"{row.model} ({backend})"
