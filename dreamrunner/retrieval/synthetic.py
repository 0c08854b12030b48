"""Synthetic clips of a drawn figure doing a motion: test fixtures and labelled demo media (not real footage)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MOTIONS = ("walk", "run", "jump", "wave", "spin")


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sky = np.linspace(190, 120, height * 2 // 3)[:, None, None] * np.array([0.75, 0.9, 1.0])
    ground = np.linspace(110, 70, height - height * 2 // 3)[:, None, None] * np.array([0.55, 0.85, 0.45])
    image = np.concatenate([sky, ground])[:, None, :, :].repeat(width, 1)[:, :, 0, :]
    image = image + rng.normal(0, 4, image.shape)  # texture so the background is not flat
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_figure(image: np.ndarray, x: float, y: float, height: float, phase: float, motion: str,
                color: tuple[int, int, int]) -> None:
    """A filled stick figure whose feet stand at (x, y) pixels, `height` pixels tall, posed at `phase`."""
    import cv2

    s = height / 100.0
    thick = max(2, round(10 * s))
    swing = math.sin(phase)
    hip = (x, y - 48 * s)
    neck = (x, y - 82 * s)
    head = (x, y - 92 * s)
    legs = 0.5 if motion in ("walk", "run", "spin") else 0.15
    if motion == "run":
        legs = 0.8
    arms_left = (-0.6 * swing, 0.0)
    arms_right = (0.6 * swing, 0.0)
    if motion == "wave":
        arms_right = (2.6 + 0.5 * swing, 0.0)
    if motion == "spin":
        arms_left, arms_right = (-1.5 + 0.4 * swing, 0.0), (1.5 + 0.4 * swing, 0.0)
    if motion == "jump":
        arms_left, arms_right = (-2.4, 0.0), (2.4, 0.0)

    def limb(origin, angle, length):
        end = (origin[0] + length * s * math.sin(angle), origin[1] + length * s * math.cos(angle))
        cv2.line(image, tuple(map(round, origin)), tuple(map(round, end)), color, thick, cv2.LINE_AA)
        return end

    for sign in (1, -1):
        knee = limb(hip, sign * legs * swing + sign * 0.12, 25)
        limb(knee, sign * legs * swing * 0.6 + sign * 0.05, 25)
    # A filled torso (shoulders wider than hips) reads as a body, not a stick, to a people detector.
    torso = np.array([(x - 13 * s, y - 84 * s), (x + 13 * s, y - 84 * s), (x + 9 * s, y - 46 * s),
                      (x - 9 * s, y - 46 * s)])
    cv2.fillPoly(image, [torso.round().astype(np.int32)], color, cv2.LINE_AA)
    for angle, _ in (arms_left, arms_right):
        shoulder = (neck[0] + (11 * s if angle >= 0 else -11 * s), neck[1] + 2 * s)
        elbow = limb(shoulder, angle + (0.15 if angle >= 0 else -0.15), 19)
        limb(elbow, angle * 1.1, 17)
    cv2.circle(image, tuple(map(round, head)), max(3, round(10 * s)), color, -1, cv2.LINE_AA)


def render_figure_clip(path: str | Path, motion: str = "walk", seconds: float = 4.0, fps: int = 8,
                       size: tuple[int, int] = (320, 240), visible: tuple[float, float] | None = None,
                       figure_height: float = 0.6, color: tuple[int, int, int] = (200, 40, 40), seed: int = 0,
                       direction: int = 1) -> Path:
    """Writes an H.264 mp4 (real ffmpeg) of a figure doing `motion`; it is drawn only during `visible` seconds
    (default: the whole clip). Returns the path."""
    import imageio_ffmpeg

    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}")
    width, height = size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    background = _background(width, height, seed)
    first, last = visible or (0.0, seconds)
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1,
                                         output_params=["-loglevel", "error"])
    writer.send(None)
    speed = {"walk": 0.12, "run": 0.3, "jump": 0.0, "wave": 0.0, "spin": 0.02}[motion]
    frames = round(seconds * fps)
    for index in range(frames):
        t = index / fps
        image = background.copy()
        if first <= t < last:
            u = t - first
            tall = figure_height * height
            x = width * (0.2 if direction > 0 else 0.8) + direction * speed * width * u
            x = width * 0.5 if speed == 0 else x
            y = height * 0.92
            if motion == "jump":
                y -= abs(math.sin(u * math.pi * 1.5)) * height * 0.2
            phase = u * (14 if motion == "run" else 7)
            draw_figure(image, x, y, tall, phase, motion, color)
        writer.send(np.ascontiguousarray(image))
    writer.close()
    return path
