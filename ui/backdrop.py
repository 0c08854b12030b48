"""The picture under the box editor: a blank frame with a grid and the keyframe's time and background.

Drawn with Pillow (no tensor math); when a scene has a chosen render, its frame at the keyframe's time
could stand here instead, which is why the picture is made per keyframe.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dreamrunner.story import NUM_KEYFRAMES, Scene, Story

from .board import CanvasSize


def keyframe_time(story: Story, index: int) -> float:
    """Seconds into the scene at which keyframe `index` sits (first and last keyframes at the ends)."""
    video = story.settings.video
    return index * (video.num_frames - 1) / (NUM_KEYFRAMES - 1) / video.fps


def keyframe_backdrop(story: Story, scene: Scene, index: int, size: CanvasSize) -> np.ndarray:
    image = Image.new("RGB", (size.width, size.height), (238, 240, 244))
    draw = ImageDraw.Draw(image)
    for step in range(1, 10):
        x, y = round(size.width * step / 10), round(size.height * step / 10)
        color = (214, 218, 226) if step != 5 else (196, 201, 212)
        draw.line([(x, 0), (x, size.height)], fill=color)
        draw.line([(0, y), (size.width, y)], fill=color)
    caption = f"keyframe {index + 1}/{NUM_KEYFRAMES}  t = {keyframe_time(story, index):.1f} s   background: {scene.background}"
    draw.rectangle([(0, size.height - 22), (size.width, size.height)], fill=(250, 250, 252))
    draw.text((8, size.height - 17), caption[:110], fill=(70, 74, 84))
    return np.asarray(image)
