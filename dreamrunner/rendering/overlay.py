"""Text on frames (captions, labels, the noise warning) with OpenCV's built-in Hershey fonts.

Hershey fonts ship inside OpenCV, so labels render the same on every machine with no font files.
"""

from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


# Below this frame height text is illegible, so plan text (captions, labels) is left out.
MIN_TEXT_HEIGHT = 160


def font_scale(height: int) -> float:
    """Text about 1/30 of the frame height."""
    return max(height / 900.0, 0.3)


def wrap_text(text: str, width: int, scale: float, thickness: int = 1) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and cv2.getTextSize(candidate, FONT, scale, thickness)[0][0] > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def draw_text(frame: np.ndarray, text: str, origin: tuple[int, int], scale: float, color=(255, 255, 255),
              thickness: int = 1, shadow: bool = True) -> None:
    """Draw ASCII text in place (non-ASCII characters become '?', as Hershey fonts have no glyphs for them)."""
    text = text.encode("ascii", "replace").decode("ascii")
    if shadow:
        cv2.putText(frame, text, (origin[0] + 1, origin[1] + 1), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(frame, text, origin, FONT, scale, color, thickness, cv2.LINE_AA)


def draw_paragraph(frame: np.ndarray, text: str, top: int | None = None, bottom: int | None = None,
                   max_lines: int = 3) -> None:
    """Centered wrapped text starting at `top` or ending at `bottom` (pixels)."""
    height, width = frame.shape[:2]
    scale = font_scale(height)
    lines = wrap_text(text, int(width * 0.94), scale)[:max_lines]
    line_height = int(cv2.getTextSize("Ag", FONT, scale, 1)[0][1] * 1.8) + 1
    y = top + line_height if top is not None else (bottom or height) - line_height * (len(lines) - 1) - 2
    for line in lines:
        text_width = cv2.getTextSize(line, FONT, scale, 1)[0][0]
        draw_text(frame, line, ((width - text_width) // 2, y), scale)
        y += line_height


def label_frames(frames: np.ndarray, label: str, short: str = "NOISE", color=(255, 60, 60)) -> np.ndarray:
    """A copy of `frames` with `label` (or `short`, where the label does not fit) in a dark strip along the top."""
    frames = frames.copy()
    height, width = frames.shape[1:3]
    scale = font_scale(height)
    strip = int(cv2.getTextSize("Ag", FONT, scale, 1)[0][1] * 2.2) + 2
    if cv2.getTextSize(label, FONT, scale, 1)[0][0] > width - 4:
        label = short
    for frame in frames:
        frame[:strip] = (frame[:strip] * 0.35).astype(np.uint8)
        draw_text(frame, label, (2, strip - max(strip // 4, 2)), scale, color, shadow=False)
    return frames
