"""The animatic: the scene plan itself drawn as a video, in a fraction of a second per scene.

Each entity's box follows the region schedule, one second per keyframe, held or interpolated as the
story's `keyframe_boxes` says (`dreamrunner.regions.schedule_boxes` over the video frames, the same rule the
renderer uses over latent frames), filled with the entity's colour (`dreamrunner.palette`: the editor shows the same colours) and labelled with its name (its description where the plan
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

from ..palette import entity_colors, track_keys
from ..regions import schedule_boxes
from ..story import Scene, VideoSettings
from .overlay import MIN_TEXT_HEIGHT, draw_paragraph, draw_text, text_size

BACKGROUND_COLOR = (38, 42, 52)
ANIMATIC_LABEL = "ANIMATIC (plan preview)"


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
    schedule = schedule_boxes(scene, video.num_frames, video.num_frames, video.keyframe_boxes)
    size = text_size(height)
    border = max(height // 160, 1)
    base = np.empty((height, width, 3), np.uint8)
    base[:] = BACKGROUND_COLOR
    frames = np.empty((video.num_frames, height, width, 3), np.uint8)
    for t, regions in enumerate(schedule):
        frame = frames[t]
        frame[:] = base
        for key, region in zip(track_keys([r.name for r in regions]), regions):
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
