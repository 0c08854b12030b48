"""The storyboard's box editor and entity table <-> the data model.

The box editor (gradio_image_annotation) speaks whole pixels of the keyframe image; the story keeps
normalized (x0, y0, x1, y1) boxes. A box the user did not move comes back rounded to whole pixels, so a
box counts as moved only when it differs from the stored one by at least one pixel: opening a keyframe
never marks anything as edited. The changes themselves are made by `dreamrunner.edits`, which marks them as
the user's; this module only turns pixels and table cells into those calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dreamrunner import edits
from dreamrunner.errors import DreamRunnerError
from dreamrunner.story import Entity, KeyFrame, Story

ENTITY_COLUMNS = ["name", "character", "motion", "description", "x0", "y0", "x1", "y1"]
NO_MOTION = ("", "none")
PALETTE = [(230, 97, 0), (93, 58, 155), (26, 133, 255), (212, 17, 89), (0, 158, 115), (204, 121, 167),
           (86, 180, 233), (240, 228, 66)]


class BoardEditError(DreamRunnerError):
    pass


@dataclass(frozen=True)
class CanvasSize:
    width: int
    height: int


def canvas_size(story: Story, max_width: int = 720) -> CanvasSize:
    """The keyframe image size: the video's aspect ratio, at most `max_width` pixels wide."""
    video = story.settings.video
    scale = min(1.0, max_width / video.width)
    return CanvasSize(round(video.width * scale), round(video.height * scale))


def entity_color(name: str) -> str:
    """One color per entity name, the same on every keyframe, as the CSS string the box editor sends back."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return "rgb({}, {}, {})".format(*PALETTE[digest[0] % len(PALETTE)])


def to_pixels(box: tuple[float, float, float, float], size: CanvasSize) -> dict:
    x0, y0, x1, y1 = box
    return {"xmin": round(x0 * size.width), "ymin": round(y0 * size.height),
            "xmax": round(x1 * size.width), "ymax": round(y1 * size.height)}


def annotator_boxes(keyframe: KeyFrame, size: CanvasSize) -> list[dict]:
    return [{**to_pixels(e.box, size), "label": e.name, "color": entity_color(e.name)} for e in keyframe.entities]


def revision(scene_id: str, keyframe: KeyFrame, size: CanvasSize) -> str:
    """Identifies what the box editor shows (names and whole-pixel boxes of one keyframe).

    The box editor reports a change both when the user edits and when the app redraws it. A report whose
    boxes are the picture the tab was given (`shown_revision` equal to the tab's revision) is such an echo;
    an edit made on a picture that is no longer the stored keyframe's was made against an older layout."""
    return shown_revision(scene_id, keyframe.index, annotator_boxes(keyframe, size))


def shown_revision(scene_id: str, k: int, boxes: list[dict]) -> str:
    """The revision of the boxes the box editor sent (see `revision`)."""
    try:
        shown = [((b.get("label") or "").strip(), *(round(float(b[key])) for key in ("xmin", "ymin", "xmax", "ymax")))
                 for b in boxes]
    except (KeyError, TypeError, ValueError):
        return ""
    return hashlib.sha1(repr((scene_id, k, shown)).encode("utf-8")).hexdigest()[:16]


def normalize(box: dict, size: CanvasSize, where: str) -> tuple[float, float, float, float]:
    try:
        xs = sorted((float(box["xmin"]), float(box["xmax"])))
        ys = sorted((float(box["ymin"]), float(box["ymax"])))
    except (KeyError, TypeError, ValueError):
        raise BoardEditError(f"{where}: the box editor sent a box without coordinates: {box}") from None
    clamp = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731 - a box dragged past the edge stops at it
    x0, x1 = clamp(xs[0] / size.width), clamp(xs[1] / size.width)
    y0, y1 = clamp(ys[0] / size.height), clamp(ys[1] / size.height)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise BoardEditError(f"{where}: the box has no area inside the frame; draw it inside the keyframe")
    return (round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4))


def _same_box(entity: Entity, box: dict, size: CanvasSize) -> bool:
    stored = to_pixels(entity.box, size)
    return all(abs(float(box[k]) - stored[k]) < 1 for k in stored)


def apply_boxes(story: Story, scene_id: str, k: int, boxes: list[dict], size: CanvasSize) -> list[str]:
    """Turn one report of the box editor (moves, resizes, relabels, one added or deleted box) into edits of
    keyframe `k` (`dreamrunner.edits`). Returns what changed, in words; an empty list when nothing did."""
    where = f"scene {scene_id!r}, keyframe {k + 1}"
    old = story.scene(scene_id).keyframes[k].entities
    changes: list[str] = []
    if len(boxes) < len(old):
        # Deleted boxes: the old entities that no longer match the sent boxes in order.
        gone, j = [], 0
        for position, entity in enumerate(old):
            if j < len(boxes) and (boxes[j].get("label") or "") == entity.name and _same_box(entity, boxes[j], size):
                j += 1
            else:
                gone.append(position)
        if j != len(boxes):
            raise BoardEditError(f"{where}: delete one box at a time (the editor sent {len(boxes)} boxes for "
                                 f"{len(old)} entities)")
        for position in reversed(gone):
            changes.append(f"deleted {edits.delete_entity(story, scene_id, k, position).name!r}")
        return changes
    for position, (entity, box) in enumerate(zip(old, boxes)):
        label = (box.get("label") or "").strip()
        fields = {}
        if label and label != entity.name:
            fields["name"] = label
            changes.append(f"renamed {entity.name!r} to {label!r}")
        if not _same_box(entity, box, size):
            fields["box"] = normalize(box, size, f"{where}, entity {position + 1} ({entity.name!r})")
        if fields:
            edits.edit_entity(story, scene_id, k, position, **fields)
            if "box" in fields:
                changes.append(f"moved {label or entity.name!r} to {list(fields['box'])}")
    for box in boxes[len(old):]:
        entity = edits.add_entity(story, scene_id, k, box.get("label") or "", normalize(box, size, f"{where}, new box"))
        changes.append(f"added {entity.name!r}")
    return changes


def entity_rows(keyframe: KeyFrame) -> list[list]:
    return [[e.name, e.character_id or "", e.motion or "", e.description, *e.box] for e in keyframe.entities]


def apply_rows(story: Story, scene_id: str, k: int, rows: list[list]) -> list[str]:
    """Apply the entity table (one row per entity, in ENTITY_COLUMNS order) to keyframe `k`."""
    where = f"scene {scene_id!r}, keyframe {k + 1}"
    entities = story.scene(scene_id).keyframes[k].entities
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if len(rows) != len(entities):
        raise BoardEditError(f"{where}: the table has {len(rows)} rows for {len(entities)} entities; "
                             "add entities with 'Add entity' or by drawing a box, delete them with 'Delete entity'")
    changes = []
    for position, (entity, row) in enumerate(zip(entities, rows)):
        here = f"{where}, entity {position + 1} ({entity.name!r})"
        if len(row) != len(ENTITY_COLUMNS):
            raise BoardEditError(f"{here}: expected the columns {ENTITY_COLUMNS}")
        name, character, motion, description = (str(cell if cell is not None else "").strip() for cell in row[:4])
        try:
            box = tuple(float(cell) for cell in row[4:])
        except (TypeError, ValueError):
            raise BoardEditError(f"{here}: x0, y0, x1, y1 must be numbers between 0 and 1, got {row[4:]}") from None
        fields = {"name": name, "character_id": character or None,
                  "motion": None if motion.lower() in NO_MOTION else motion, "description": description}
        if character and character != entity.character_id:
            fields["character_id"] = edits.find_character(story, character).id
        if any(abs(a - b) > 1e-6 for a, b in zip(box, entity.box)):
            fields["box"] = box
        fields = {f: v for f, v in fields.items() if getattr(entity, f) != v}
        if fields:
            edits.edit_entity(story, scene_id, k, position, **fields)
            changes += [f"{name or entity.name}: {f} = {v!r}" for f, v in fields.items()]
    return changes


def parse_motions(text: str) -> list[str]:
    """One motion per line (or separated by ';')."""
    return [m.strip() for line in (text or "").splitlines() for m in line.split(";") if m.strip()]
