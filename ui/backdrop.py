"""The pictures of the Storyboard tab: the picture under the box editor (a blank frame with a grid, the
keyframe's time and background, and the neighbouring keyframes' boxes faintly: the onion skin) and the
strip of keyframe thumbnails.

Drawn with Pillow (no tensor math). Boxes are in their track's colour (`dreamrunner.palette`), the colour
the box editor and the animatic give the same entity. When a scene has a chosen render, its frame at the
keyframe's time could stand here instead, which is why the picture is made per keyframe.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dreamrunner.palette import keyframe_colors
from dreamrunner.story import NUM_KEYFRAMES, Scene, Story

from .board import CanvasSize

GROUND = (238, 240, 244)
ONION_ALPHA = 70  # of 255: the neighbours' boxes stay faint under the current ones


def keyframe_time(story: Story, index: int) -> float:
    """Seconds into the scene at which keyframe `index` sits (first and last keyframes at the ends)."""
    video = story.settings.video
    return index * (video.num_frames - 1) / (NUM_KEYFRAMES - 1) / video.fps


def _boxes(layer: Image.Image, scene: Scene, index: int, fill_alpha: int, line_alpha: int, width: int) -> None:
    draw = ImageDraw.Draw(layer)
    w, h = layer.size
    for entity, color in zip(scene.keyframes[index].entities, keyframe_colors(scene, index)):
        x0, y0, x1, y1 = entity.box
        corners = [(round(x0 * w), round(y0 * h)), (round(x1 * w) - 1, round(y1 * h) - 1)]
        draw.rectangle(corners, fill=(*color, fill_alpha), outline=(*color, line_alpha), width=width)


def keyframe_backdrop(story: Story, scene: Scene, index: int, size: CanvasSize) -> np.ndarray:
    """uint8 RGB [height, width, 3]: grid, caption, and the boxes of keyframes index-1 and index+1 faintly
    (the current keyframe's boxes are the box editor's own, drawn over this picture)."""
    image = Image.new("RGB", (size.width, size.height), GROUND)
    draw = ImageDraw.Draw(image)
    for step in range(1, 10):
        x, y = round(size.width * step / 10), round(size.height * step / 10)
        color = (214, 218, 226) if step != 5 else (196, 201, 212)
        draw.line([(x, 0), (x, size.height)], fill=color)
        draw.line([(0, y), (size.width, y)], fill=color)
    onion = Image.new("RGBA", image.size, (0, 0, 0, 0))
    for neighbour in (index - 1, index + 1):
        if 0 <= neighbour < NUM_KEYFRAMES:
            _boxes(onion, scene, neighbour, fill_alpha=ONION_ALPHA // 3, line_alpha=ONION_ALPHA * 2, width=2)
    image = Image.alpha_composite(image.convert("RGBA"), onion).convert("RGB")
    draw = ImageDraw.Draw(image)
    neighbours = ", ".join(str(n + 1) for n in (index - 1, index + 1) if 0 <= n < NUM_KEYFRAMES)
    caption = (f"keyframe {index + 1}/{NUM_KEYFRAMES}  t = {keyframe_time(story, index):.1f} s   faint: keyframe "
               f"{neighbours}   background: {scene.background}")
    draw.rectangle([(0, size.height - 22), (size.width, size.height)], fill=(250, 250, 252))
    draw.text((8, size.height - 17), caption[:110], fill=(70, 74, 84))
    return np.asarray(image)


def keyframe_thumbnail(scene: Scene, index: int, size: CanvasSize, width: int = 150) -> np.ndarray:
    """uint8 RGB [h, width, 3]: keyframe `index`'s boxes filled in their track colours, for the strip."""
    height = round(width * size.height / size.width)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    _boxes(layer, scene, index, fill_alpha=150, line_alpha=255, width=1)
    return np.asarray(Image.alpha_composite(Image.new("RGBA", layer.size, (*GROUND, 255)), layer).convert("RGB"))
