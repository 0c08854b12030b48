"""One colour per entity track, the same in the storyboard editor (boxes, onion skin, thumbnails) and the
animatic, so a creator recognises an entity by its colour everywhere.

A track is matched the way the region schedule (`dreamrunner.regions.schedule_boxes`) matches entities
between keyframes: (name, how many earlier entities of the keyframe share the name), so an entity keeps its
colour while it moves, even when names repeat (published plans name every entity "none"). Colours are given
in order of first appearance in the scene.
"""

from __future__ import annotations

from .story import Scene

Color = tuple[int, int, int]
# Distinct, saturated colours (RGB), far from the animatic's dark background and from each other.
PALETTE: tuple[Color, ...] = (
    (230, 80, 60), (60, 170, 230), (250, 200, 40), (90, 200, 90),
    (200, 90, 220), (240, 140, 40), (40, 210, 190), (240, 110, 170),
)


def track_keys(names: list[str]) -> list[tuple[str, int]]:
    """(name, ordinal among equal names) of each entity of one keyframe, in order."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        keys.append((name, seen.get(name, 0)))
        seen[name] = seen.get(name, 0) + 1
    return keys


def entity_colors(scene: Scene) -> dict[tuple[str, int], Color]:
    """One colour per entity track of the scene, in order of first appearance."""
    colors: dict[tuple[str, int], Color] = {}
    for keyframe in scene.keyframes:
        for key in track_keys([entity.name for entity in keyframe.entities]):
            if key not in colors:
                colors[key] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def keyframe_colors(scene: Scene, index: int) -> list[Color]:
    """The colour of each entity of keyframe `index`, in the keyframe's order."""
    colors = entity_colors(scene)
    return [colors[key] for key in track_keys([e.name for e in scene.keyframes[index].entities])]
