"""The storyboard's box editor and entity table <-> the data model.

The box editor (gradio_image_annotation) speaks whole pixels of the keyframe image; the story keeps
normalized (x0, y0, x1, y1) boxes. A box the user did not move comes back rounded to whole pixels, so a
box counts as moved only when it differs from the stored one by at least one pixel: opening a keyframe
never marks anything as edited. Every applied change marks the field user-edited (`mark_edited`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
    """Identifies what the box editor shows (names and pixel boxes of one keyframe).

    The box editor reports a change both when the user edits and when the app redraws it; an event
    whose revision is not the stored keyframe's was made against an older picture and is not applied.
    """
    shown = [(e.name, *to_pixels(e.box, size).values()) for e in keyframe.entities]
    return hashlib.sha1(repr((scene_id, keyframe.index, shown)).encode("utf-8")).hexdigest()[:16]


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


def _new_entity(story: Story, label: str, box: tuple[float, float, float, float], number: int) -> Entity:
    name = label.strip() or f"entity {number}"
    character = next((c.id for c in story.characters if c.name.lower() == name.lower()), None)
    entity = Entity(name=name, character_id=character, description=name, box=box)
    entity.mark_edited("name", "description", "box")
    return entity


def apply_boxes(story: Story, keyframe: KeyFrame, boxes: list[dict], size: CanvasSize, where: str) -> list[str]:
    """Apply one edit of the box editor (moves, resizes, relabels, one added or deleted box) to a keyframe.

    Returns what changed, in words; an empty list when nothing did.
    """
    old = keyframe.entities
    changes: list[str] = []
    if len(boxes) < len(old):
        # Deleted boxes: keep the old entities that still match the sent boxes in order.
        kept: list[Entity] = []
        j = 0
        for entity in old:
            if j < len(boxes) and (boxes[j].get("label") or "") == entity.name and _same_box(entity, boxes[j], size):
                kept.append(entity)
                j += 1
            else:
                changes.append(f"deleted {entity.name!r}")
        if j != len(boxes):
            raise BoardEditError(f"{where}: delete one box at a time (the editor sent {len(boxes)} boxes for "
                                 f"{len(old)} entities)")
        keyframe.entities = kept
        keyframe.mark_edited("entities")
        return changes
    for position, (entity, box) in enumerate(zip(old, boxes), start=1):
        label = (box.get("label") or "").strip()
        if label and label != entity.name:
            changes.append(f"renamed {entity.name!r} to {label!r}")
            entity.name = label
            entity.mark_edited("name")
        if not _same_box(entity, box, size):
            entity.box = normalize(box, size, f"{where}, entity {position} ({entity.name!r})")
            entity.mark_edited("box")
            changes.append(f"moved {entity.name!r} to {list(entity.box)}")
    if len(boxes) > len(old):
        added = []
        for number, box in enumerate(boxes[len(old):], start=len(old) + 1):
            entity = _new_entity(story, box.get("label") or "", normalize(box, size, f"{where}, new box"), number)
            added.append(entity)
            changes.append(f"added {entity.name!r}")
        keyframe.entities = [*old, *added]
        keyframe.mark_edited("entities")
    return changes


def entity_rows(keyframe: KeyFrame) -> list[list]:
    return [[e.name, e.character_id or "", e.motion or "", e.description, *e.box] for e in keyframe.entities]


def _character_id(story: Story, text: str, where: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    for character in story.characters:
        if text in (character.id, character.name, character.token):
            return character.id
    known = ", ".join(f"{c.id} ({c.name})" for c in story.characters) or "none yet"
    raise BoardEditError(f"{where}: {text!r} is not a character of the story; characters: {known}")


def apply_rows(story: Story, keyframe: KeyFrame, rows: list[list], where: str) -> list[str]:
    """Apply the entity table (one row per entity, in ENTITY_COLUMNS order) to a keyframe."""
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if len(rows) != len(keyframe.entities):
        raise BoardEditError(f"{where}: the table has {len(rows)} rows for {len(keyframe.entities)} entities; "
                             "add entities with 'Add entity' or by drawing a box, delete them with 'Delete entity'")
    changes = []
    for position, (entity, row) in enumerate(zip(keyframe.entities, rows), start=1):
        here = f"{where}, entity {position} ({entity.name!r})"
        if len(row) != len(ENTITY_COLUMNS):
            raise BoardEditError(f"{here}: expected the columns {ENTITY_COLUMNS}")
        name, character, motion, description = (str(cell if cell is not None else "").strip() for cell in row[:4])
        try:
            box = tuple(float(cell) for cell in row[4:])
        except (TypeError, ValueError):
            raise BoardEditError(f"{here}: x0, y0, x1, y1 must be numbers between 0 and 1, got {row[4:]}") from None
        values = {"name": name, "character_id": _character_id(story, character, here),
                  "motion": None if motion.lower() in NO_MOTION else motion, "description": description}
        if any(abs(a - b) > 1e-6 for a, b in zip(box, entity.box)):
            values["box"] = box
        for field, value in values.items():
            if getattr(entity, field) == value:
                continue
            if field in ("name", "description") and not value:
                raise BoardEditError(f"{here}: {field} may not be empty")
            try:
                setattr(entity, field, value)
            except ValueError as error:
                raise BoardEditError(f"{here}, {field}: {_first_message(error)}") from None
            entity.mark_edited(field)
            changes.append(f"{entity.name}: {field} = {value!r}")
    return changes


def _first_message(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        return errors()[0]["msg"].removeprefix("Value error, ")
    return str(error)


def add_entity(story: Story, keyframe: KeyFrame) -> Entity:
    number = len(keyframe.entities) + 1
    entity = _new_entity(story, f"entity {number}", (0.35, 0.3, 0.65, 0.8), number)
    keyframe.entities = [*keyframe.entities, entity]
    keyframe.mark_edited("entities")
    return entity


def delete_entity(keyframe: KeyFrame, position: int) -> Entity:
    if not 0 <= position < len(keyframe.entities):
        raise BoardEditError(f"keyframe {keyframe.index + 1} has no entity {position + 1}")
    removed = keyframe.entities[position]
    keyframe.entities = [e for i, e in enumerate(keyframe.entities) if i != position]
    keyframe.mark_edited("entities")
    return removed


def parse_motions(text: str) -> list[str]:
    """One motion per line (or separated by ';')."""
    return [m.strip() for line in (text or "").splitlines() for m in line.split(";") if m.strip()]
