"""The animatic: the scene plan itself drawn as a video, in a fraction of a second per scene.

Each entity's box moves as the region schedule interpolates it between keyframes
(`dreamrunner.regions.schedule_boxes` over the video frames, the same rule the renderer uses over latent
frames), filled with the entity's colour and labelled with its name (its description where the plan
names it "none") and motion; the background prompt
is the caption along the bottom and the narration runs along the top (in an export with burned subtitles
the narration is left out and the caption moves to the top, clear of the subtitles; text is left out below
160 pixels of height, where it cannot be read). It is what the app shows before a
real render exists and what an export uses for scenes without one. It is a plan preview, not a render,
and says so in its corner.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..regions import schedule_boxes
from ..story import Scene, VideoSettings
from .overlay import MIN_TEXT_HEIGHT, draw_paragraph, draw_text, text_size

BACKGROUND_COLOR = (38, 42, 52)
# Distinct, saturated colours (RGB), far from the background and from each other.
PALETTE = (
    (230, 80, 60), (60, 170, 230), (250, 200, 40), (90, 200, 90),
    (200, 90, 220), (240, 140, 40), (40, 210, 190), (240, 110, 170),
)
ANIMATIC_LABEL = "ANIMATIC (plan preview)"


def _track_keys(names: list[str]) -> list[tuple[str, int]]:
    """(name, how many earlier entities share the name): the schedule's own matching of entities between
    keyframes, so an entity keeps its colour while it moves, even when names repeat (published plans
    name every entity "none")."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def entity_colors(scene: Scene) -> dict[tuple[str, int], tuple[int, int, int]]:
    """One colour per entity track (name, ordinal among equal names), in order of first appearance."""
    colors: dict[tuple[str, int], tuple[int, int, int]] = {}
    for keyframe in scene.keyframes:
        for key in _track_keys([entity.name for entity in keyframe.entities]):
            if key not in colors:
                colors[key] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def box_pixels(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (int(round(x0 * width)), int(round(y0 * height)),
            max(int(round(x1 * width)) - 1, 0), max(int(round(y1 * height)) - 1, 0))


def render_animatic(scene: Scene, video: VideoSettings, subtitles_below: bool = False) -> np.ndarray:
    """uint8 RGB frames [num_frames, height, width, 3] of the scene's plan.

    `subtitles_below`: the narration is burned in as subtitles along the bottom (an export with burned
    subtitles), so the animatic leaves it out and puts its caption and label at the top instead."""
    height, width = video.height, video.width
    colors = entity_colors(scene)
    schedule = schedule_boxes(scene, video.num_frames)
    size = text_size(height)
    border = max(height // 160, 1)
    base = np.empty((height, width, 3), np.uint8)
    base[:] = BACKGROUND_COLOR
    frames = np.empty((video.num_frames, height, width, 3), np.uint8)
    for t, regions in enumerate(schedule):
        frame = frames[t]
        frame[:] = base
        for key, region in zip(_track_keys([r.name for r in regions]), regions):
            color = colors[key]
            x0, y0, x1, y1 = box_pixels(region.box, height, width)
            cv2.rectangle(frame, (x0, y0), (x1, y1), color, thickness=-1)
            cv2.rectangle(frame, (x0, y0), (x1, y1), tuple(c // 2 for c in color), thickness=border)
            if height < MIN_TEXT_HEIGHT:
                continue
            name = region.description if region.name.lower() == "none" else region.name
            label = name if not region.motion else f"{name}: {region.motion}"
            draw_text(frame, label, (x0 + 2 * border, y0 + border), round(size * 0.9))
        if height < MIN_TEXT_HEIGHT:
            continue
        if subtitles_below:
            _, caption_bottom = draw_paragraph(frame, f"Background: {scene.background}", top=2, max_lines=2)
            draw_text(frame, ANIMATIC_LABEL, (width - 4, caption_bottom + 2), round(size * 0.8),
                      color=(200, 200, 200), anchor="ra")
            continue
        if scene.narration:
            draw_paragraph(frame, scene.narration, top=2, max_lines=2)
        caption_top, _ = draw_paragraph(frame, f"Background: {scene.background}", bottom=height - 4, max_lines=2)
        draw_text(frame, ANIMATIC_LABEL, (width - 4, caption_top - 2), round(size * 0.8), color=(200, 200, 200),
                  anchor="rd")
    return frames
