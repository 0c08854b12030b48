"""The storyboard's box editor and entity table <-> the data model.

The box editor (gradio_image_annotation) speaks whole pixels of the keyframe image; the story keeps
normalized (x0, y0, x1, y1) boxes. The box editor puts a newly drawn box first in its list and reports it
while it is being drawn and again once its label dialog is answered: an unnamed new box is left alone until
then (`pending_box`), so the page is not redrawn under the open dialog. Its rotate buttons are hidden
(editor CSS); a report made on a rotated picture is turned back upright (`upright`) before it is read.
A box the user did not move comes back rounded to whole pixels, so a
box counts as moved only when it differs from the stored one by at least one pixel: opening a keyframe
never marks anything as edited. The changes themselves are made by `dreamrunner.edits`, which marks them as
the user's; this module only turns pixels and table cells into those calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dreamrunner import edits
from dreamrunner.errors import DreamRunnerError
from dreamrunner.palette import PALETTE, entity_colors, keyframe_colors
from dreamrunner.story import Entity, KeyFrame, Scene, Story

ENTITY_COLUMNS = ["name", "character", "motion", "description", "x0", "y0", "x1", "y1"]
NO_MOTION = ("", "none")


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


def css_color(color: tuple[int, int, int]) -> str:
    """The CSS form the box editor sends colours back in."""
    return "rgb({}, {}, {})".format(*color)


def to_pixels(box: tuple[float, float, float, float], size: CanvasSize) -> dict:
    x0, y0, x1, y1 = box
    return {"xmin": round(x0 * size.width), "ymin": round(y0 * size.height),
            "xmax": round(x1 * size.width), "ymax": round(y1 * size.height)}


def annotator_boxes(scene: Scene, k: int, size: CanvasSize) -> list[dict]:
    """Keyframe `k`'s boxes in the box editor's form, each in its track's colour (`dreamrunner.palette`)."""
    keyframe = scene.keyframes[k]
    return [{**to_pixels(e.box, size), "label": e.name, "color": css_color(color)}
            for e, color in zip(keyframe.entities, keyframe_colors(scene, k))]


def label_choices(story: Story, scene: Scene, k: int) -> tuple[list[str], list[str]]:
    """What the new-box dialog offers: the scene's entities (in their track colours) and the story's
    characters, those missing from keyframe `k` first, as the box editor's `label_list` and `label_colors`."""
    colors = entity_colors(scene)
    named = {name: color for (name, ordinal), color in colors.items() if ordinal == 0}
    for character in story.characters:
        if character.name not in named:
            named[character.name] = PALETTE[len(named) % len(PALETTE)]
    here = {e.name for e in scene.keyframes[k].entities}
    names = sorted(named, key=lambda name: name in here)
    return names, ["#{:02x}{:02x}{:02x}".format(*named[n]) for n in names]


def revision(scene: Scene, k: int, size: CanvasSize) -> str:
    """Identifies what the box editor shows (names and whole-pixel boxes of one keyframe).

    The box editor reports a change both when the user edits and when the app redraws it. A report whose
    boxes are the picture the tab was given (`shown_revision` equal to the tab's revision) is such an echo;
    an edit made on a picture that is no longer the stored keyframe's was made against an older layout."""
    return shown_revision(scene.id, k, annotator_boxes(scene, k, size))


def shown_revision(scene_id: str, k: int, boxes: list[dict]) -> str:
    """The revision of the boxes the box editor sent (see `revision`)."""
    try:
        shown = [((b.get("label") or "").strip(), *(round(float(b[key])) for key in ("xmin", "ymin", "xmax", "ymax")))
                 for b in boxes]
    except (KeyError, TypeError, ValueError):
        return ""
    return hashlib.sha1(repr((scene_id, k, shown)).encode("utf-8")).hexdigest()[:16]


def page_change(value, was, stored) -> str:
    """What a value a tab sent means, given `was` (what the tab was shown; None when unknown) and `stored`:
    "unchanged" (the tab sent what it showed, or what is stored), "stale" (the user changed a value another
    tab or program changed since the tab showed it) or "apply". Every text field and table cell decides so."""
    if was is not None and value == was:
        return "unchanged"
    if was is not None and stored != was:
        return "stale"
    return "apply" if value != stored else "unchanged"


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


def _unchanged(entity: Entity, box: dict, size: CanvasSize) -> bool:
    return (box.get("label") or "").strip() == entity.name and _same_box(entity, box, size)


def upright(boxes: list[dict], orientation: int | None, size: CanvasSize) -> list[dict]:
    """Boxes reported on a picture turned `orientation` quarter turns clockwise, in the upright picture's
    pixels. One clockwise turn maps (x, y) in a w x h frame to (h - y, x); each step here undoes one."""
    turns = (orientation or 0) % 4
    width = size.height if turns % 2 else size.width  # the turned picture's width
    for _ in range(turns):
        boxes = [{**b, "xmin": b["ymin"], "xmax": b["ymax"], "ymin": width - b["xmax"], "ymax": width - b["xmin"]}
                 for b in boxes]
        width = size.height if width == size.width else size.width
    return boxes


def pending_box(story: Story, scene_id: str, k: int, boxes: list[dict], size: CanvasSize) -> bool:
    """Whether the report is a box being drawn (first, unnamed) with every other box as stored: the label
    dialog is still to be answered, so nothing is applied yet."""
    old = story.scene(scene_id).keyframes[k].entities
    return (len(boxes) == len(old) + 1 and not (boxes[0].get("label") or "").strip()
            and all(_unchanged(e, b, size) for e, b in zip(old, boxes[1:])))


def apply_boxes(story: Story, scene_id: str, k: int, boxes: list[dict], size: CanvasSize) -> list[str]:
    """Turn one report of the box editor (moves, resizes, relabels, one drawn or deleted box) into edits of
    keyframe `k` (`dreamrunner.edits`). Returns what changed, in words; an empty list when nothing did."""
    where = f"scene {scene_id!r}, keyframe {k + 1}"
    old = story.scene(scene_id).keyframes[k].entities
    changes: list[str] = []
    if len(boxes) < len(old):
        # Deleted boxes: the old entities that no longer match the sent boxes in order.
        gone, j = [], 0
        for position, entity in enumerate(old):
            if j < len(boxes) and _unchanged(entity, boxes[j], size):
                j += 1
            else:
                gone.append(position)
        if j != len(boxes):
            raise BoardEditError(f"{where}: delete one box at a time (the editor sent {len(boxes)} boxes for "
                                 f"{len(old)} entities)")
        for position in reversed(gone):
            changes.append(f"deleted {edits.delete_entity(story, scene_id, k, position).name!r}")
        return changes
    if len(boxes) > len(old) + 1:
        raise BoardEditError(f"{where}: draw one box at a time (the editor sent {len(boxes)} boxes for "
                             f"{len(old)} entities)")
    drawn = boxes[0] if len(boxes) == len(old) + 1 else None
    for position, (entity, box) in enumerate(zip(old, boxes[1:] if drawn else boxes)):
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
                changes.append(f"moved {label or entity.name!r}")
    if drawn is not None:
        box = normalize(drawn, size, f"{where}, the new box")
        entity = edits.add_entity(story, scene_id, k, drawn.get("label") or "", box)
        changes.append(f"added {entity.name!r}")
    return changes


def entity_rows(keyframe: KeyFrame) -> list[list]:
    return [[e.name, e.character_id or "", e.motion or "", e.description, *e.box] for e in keyframe.entities]


def apply_rows(story: Story, scene_id: str, k: int, rows: list[list], whole_track: bool = True) -> list[str]:
    """Apply the entity table (one row per entity, in ENTITY_COLUMNS order) to keyframe `k`. With
    `whole_track`, name, character, motion and description apply to the entity on every keyframe (its track,
    `dreamrunner.edits.edit_entity(all_keyframes=True)`); the box is always this keyframe's."""
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
        fields = {f: v for f, v in fields.items() if getattr(entity, f) != v}
        if fields:
            edits.edit_entity(story, scene_id, k, position, all_keyframes=whole_track, **fields)
            changes += [f"{name or entity.name}: {f} = {v!r}" for f, v in fields.items()]
        if any(abs(a - b) > 1e-6 for a, b in zip(box, entity.box)):
            edits.edit_entity(story, scene_id, k, position, box=box)
            changes.append(f"{name or entity.name}: box = {box!r}")
    return changes


def parse_motions(text: str) -> list[str]:
    """One motion per line (or separated by ';')."""
    return [m.strip() for line in (text or "").splitlines() for m in line.split(";") if m.strip()]
