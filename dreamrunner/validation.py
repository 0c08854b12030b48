"""Validation with errors that say where (scene, keyframe, entity, field) and what, and an explicit
repair step for the fixable cases that reports every change it makes.

Repair works on plain JSON-like data (what an LLM, a plan string or a hand-edited file gives) because
data with a broken box cannot become a `Story` until it is repaired.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import DreamRunnerError
from .story import NUM_KEYFRAMES, Scene, Story, VideoSettings


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class StoryValidationError(DreamRunnerError, ValueError):
    """Raised with every problem found, each naming the scene, keyframe, entity and field."""

    def __init__(self, problems: list[Problem], subject: str = "story"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the {subject} is not valid ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}")


def _get(data: Any, key: Any) -> Any:
    try:
        return data[key]
    except (KeyError, IndexError, TypeError):
        return None


def describe_location(loc: tuple, data: Any) -> str:
    """('scenes', 2, 'keyframes', 0, 'entities', 1, 'box') -> "scene 3 ('s3'), keyframe 1, entity 2 ('owl'), box"."""
    parts: list[str] = []
    node = data
    items = list(loc)
    i = 0
    labels = {"scenes": "scene", "keyframes": "keyframe", "entities": "entity", "characters": "character",
              "priors": "prior", "approved_clips": "clip", "prior_bindings": "prior binding", "renders": "render"}
    while i < len(items):
        key = items[i]
        if key in labels and i + 1 < len(items) and isinstance(items[i + 1], int):
            index = items[i + 1]
            node = _get(_get(node, key), index)
            name = _get(node, "id") if key not in ("entities", "keyframes") else _get(node, "name")
            label = f"{labels[key]} {index + 1}"
            if isinstance(name, str) and name:
                label += f" ({name!r})"
            parts.append(label)
            i += 2
            continue
        if isinstance(key, int) and parts and parts[-1].endswith("box"):
            parts[-1] += f"[{key}]"
        else:
            parts.append(str(key))
            node = _get(node, key)
        i += 1
    return ", ".join(parts)


def _plain(item: dict) -> str:
    """A pydantic error item in the words a user reads ("may not be empty", not "String should have at
    least 1 character")."""
    if item["type"] == "string_too_short" and (item.get("ctx") or {}).get("min_length") == 1:
        return "may not be empty"
    return item["msg"].removeprefix("Value error, ")


def first_message(error: ValueError) -> str:
    """The first message of a pydantic error (an assignment that failed), in plain words."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        return _plain(errors()[0])
    return str(error)


def problems_from(error: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for item in error.errors():
        message = _plain(item)
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        if item["type"] == "missing":
            message = "is missing"
        elif item["type"] == "extra_forbidden":
            message = "is not a known field"
        problems.append(Problem(describe_location(loc, data), message))
    return problems


def _unencodable(data: Any) -> list[tuple]:
    """Where `data` holds a string no UTF-8 file can store: an unpaired surrogate, which a JSON escape
    (\\ud800) or undecodable bytes given to Python leave behind. Iterative: the data may be deeply nested."""
    found, stack = [], [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    found.append(loc)
        elif isinstance(node, dict):
            stack.extend((value, (*loc, key)) for key, value in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((value, (*loc, i)) for i, value in enumerate(node))
    return sorted(found, key=str)


def _text_problems(data: Any) -> list[Problem]:
    return [Problem(describe_location(loc, data), "holds text that is not valid Unicode (an unpaired surrogate "
                    "such as \\ud800)") for loc in _unencodable(data)]


def validate_story(data: Any) -> Story:
    try:
        story = Story.model_validate(data)
    except ValidationError as error:
        raise StoryValidationError(problems_from(error, data)) from None
    if problems := _text_problems(data):
        raise StoryValidationError(problems)
    return story


def validate_scene(data: Any, label: str = "scene") -> Scene:
    try:
        scene = Scene.model_validate(data)
        problems = _text_problems(data)
    except ValidationError as error:
        problems = problems_from(error, data)
    if problems:
        problems = [Problem(f"{label}, {p.where}" if p.where else label, p.message) for p in problems]
        raise StoryValidationError(problems, subject=label) from None
    return scene


@dataclass(frozen=True)
class Repair:
    where: str
    change: str

    def __str__(self) -> str:
        return f"{self.where}: {self.change}"


def finite_number(value: Any) -> float | None:
    """A JSON number (or a numeric string) as a finite float; None for anything else: bools, text, NaN,
    infinities and integers too large for a float (a 400-digit integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _as_box(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = [finite_number(v) for v in value]
    return None if None in numbers else numbers


# The largest value still read as a normalized coordinate (a box a little past the frame edge, clamped later).
NORMALIZED_LIMIT = 1.5
# How far past a scale's edge a value may go and still be on that scale (an LLM's box a few pixels outside).
_SCALE_SLACK = 1.05


def box_scale(boxes: Sequence[Sequence[float]], frame_size: tuple[int, int]) -> tuple[str, float, float]:
    """The scale the boxes of one whole plan are written on -> (name, x unit, y unit).

    Normalized [0, 1] when no value passes `NORMALIZED_LIMIT`; else the smallest of percent (0-100),
    pixels of the `frame_size` = (width, height) frame and per-mille (0-1000, as Qwen-VL writes boxes)
    that holds every x and every y. Raises ValueError, saying why, when the boxes mix [0, 1] values with
    larger ones or fit no scale: rescaling then would guess.
    """
    values = [abs(v) for box in boxes for v in box]
    peak = max(values, default=0.0)
    if peak <= NORMALIZED_LIMIT:
        return "normalized", 1.0, 1.0
    large = sum(v > NORMALIZED_LIMIT for v in values)
    small = sum(0.0 < v <= NORMALIZED_LIMIT for v in values)
    if small > large:
        raise ValueError(f"the boxes mix scales: {small} values are in [0, 1] but {large} are larger (up to "
                         f"{peak:g}); write every box normalized to [0, 1]")
    width, height = frame_size
    xs = max(abs(v) for box in boxes for v in (box[0], box[2]))
    ys = max(abs(v) for box in boxes for v in (box[1], box[3]))
    scales = sorted([("percent", 100.0, 100.0), ("per-mille (0-1000)", 1000.0, 1000.0),
                     (f"pixels of the {width}x{height} frame", float(width), float(height))], key=lambda s: s[1] * s[2])
    for name, sx, sy in scales:
        if xs <= sx * _SCALE_SLACK and ys <= sy * _SCALE_SLACK:
            return name, sx, sy
    raise ValueError(f"box values up to x = {xs:g}, y = {ys:g} fit no known scale (normalized [0, 1], percent, "
                     f"0-1000 or pixels of the {width}x{height} frame); write every box normalized to [0, 1]")


def _swaps(box: Sequence[float]) -> list[str]:
    """What putting an inverted box [x0, y0, x1, y1] in order swaps, as its repairs say it."""
    return [f"swapped {axis}0 and {axis}1 (were {low}, {high})"
            for axis, low, high in (("x", box[0], box[2]), ("y", box[1], box[3])) if low > high]


def repair_box(box: Any, where: str, repairs: list[Repair]) -> list[float] | None:
    """Swap inverted corners, clamp into [0, 1]; None when the box has no area left (drop it). A box that is
    not 4 finite numbers is returned unchanged, for validation to refuse: clamping Infinity would invent a box."""
    values = _as_box(box)
    if values is None:
        return box
    repairs.extend(Repair(where, swap) for swap in _swaps(values))
    (x0, x1), (y0, y1) = sorted(values[0::2]), sorted(values[1::2])
    clamped = [min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1)]
    if clamped != [x0, y0, x1, y1]:
        repairs.append(Repair(where, f"clamped {[x0, y0, x1, y1]} into [0, 1] as {clamped}"))
    x0, y0, x1, y1 = clamped
    if x0 >= x1 or y0 >= y1:
        repairs.append(Repair(where, f"dropped: box {clamped} has no area"))
        return None
    return clamped


def _entity_boxes(scene: dict) -> list[tuple[str, dict, list[float]]]:
    return [(f"keyframe {k + 1}, entity {e + 1}" + (f" ({entity['name']!r})" if isinstance(entity.get("name"), str) else ""),
             entity, box)
            for k, keyframe in enumerate(scene["keyframes"]) if isinstance(keyframe, dict)
            and isinstance(keyframe.get("entities"), list) for e, entity in enumerate(keyframe["entities"])
            if isinstance(entity, dict) and (box := _as_box(entity.get("box"))) is not None]


# The smallest width and height of a box, as a share of the frame: about one token of the video model's
# latent grid is 2%, so a box under 1% places nothing. On a rescaled answer such a box is the sign of a
# box written on another scale than the rest (one [0, 1] box among 0-1000 ones).
MIN_BOX_EXTENT = 0.01


def rescale_boxes(scene: dict, label: str, frame_size: tuple[int, int], repairs: list[Repair],
                  min_extent: float = 0.0) -> None:
    """Bring every box of one scene's plain data to [0, 1] from the scale the whole scene is written on
    (`box_scale`), in place, reporting it. Raises `StoryValidationError`, naming each box, when the scale
    is mixed or unknown (a rescaled box under `MIN_BOX_EXTENT` both wide and tall, or one whose values are all
    in [0, 1], is on another scale than the rest), and when a box is under `min_extent` wide or tall after
    rescaling (0: no such check; a planner's answer uses `MIN_BOX_EXTENT`)."""
    boxes = _entity_boxes(scene)
    try:
        name, sx, sy = box_scale([box for _, _, box in boxes], frame_size)
    except ValueError as error:
        raise StoryValidationError([Problem(label, str(error))], subject=label) from None
    problems, thin = [], []
    for where, entity, (x0, y0, x1, y1) in boxes:
        width, height = abs(x1 - x0) / sx, abs(y1 - y0) / sy
        box = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        # A box thin one way only is a thin box on the answer's scale ([500, 200, 505, 800]: a line where the
        # entity stands), widened or sent back below as in a normalized answer.
        if name != "normalized" and (max(abs(x0), abs(y0), abs(x1), abs(y1)) <= NORMALIZED_LIMIT
                                     or 0 < width < MIN_BOX_EXTENT and 0 < height < MIN_BOX_EXTENT):
            problems.append(Problem(f"{label}, {where}", f"the boxes mix scales: the others are in {name}, but "
                                    f"this box {box} would be {width:.2g} x {height:.2g} of the frame in it; "
                                    "write every box normalized to [0, 1]"))
            continue
        xs, ys = (x0 / sx, x1 / sx), (y0 / sy, y1 / sy)
        if _beside_frame(*xs) or _beside_frame(*ys):
            continue  # wholly outside the frame, thin or not: dropped by `repair_box` (the entity left the frame)
        if width < min_extent or height < min_extent or min(_inside(*xs), _inside(*ys)) < min_extent:
            thin.append((where, entity, box))  # thin as written, or a sliver once clamped
    if problems:
        raise StoryValidationError(problems, subject=label)
    if name != "normalized":
        for _, entity, (x0, y0, x1, y1) in boxes:
            entity["box"] = [x0 / sx, y0 / sy, x1 / sx, y1 / sy]
        peak = max(abs(v) for _, _, box in boxes for v in box)
        repairs.append(Repair(label, f"the boxes were in {name} (values up to {peak:g}); divided x by {sx:g} and "
                                     f"y by {sy:g} to normalize them"))
    problems = [Problem(f"{label}, {where}", f"box {box} is {_extent(entity['box'])} (as a share of the frame); "
                        f"give every entity its real extent, at least {min_extent:g} of the frame each way")
                for where, entity, box in thin if not _widen_from_neighbour(scene, entity, min_extent, label, where,
                                                                           repairs)]
    if problems:
        raise StoryValidationError(problems, subject=label)


def _beside_frame(start: float, end: float) -> bool:
    """Whether [start, end] (either order) lies wholly outside [0, 1]: on an edge is inside."""
    return max(start, end) < 0.0 or min(start, end) > 1.0


def _inside(start: float, end: float) -> float:
    """The extent of [start, end] (either order) inside [0, 1]: what is left of it once clamped (`repair_box`)."""
    return max(min(max(start, end), 1.0) - max(min(start, end), 0.0), 0.0)


def _extent(box: list[float]) -> str:
    """A normalized box's width and height inside the frame (a box past an edge is clamped to it later)."""
    return f"{_inside(box[0], box[2]):.2g} wide and {_inside(box[1], box[3]):.2g} tall"


def _same_name(a: dict, b: dict) -> bool:
    """Two entities' names are one entity's in different keyframes: 'Mira' and 'mira ' (as `find_character` has it)."""
    name_a, name_b = a.get("name"), b.get("name")
    if isinstance(name_a, str) and isinstance(name_b, str):
        return name_a.strip().casefold() == name_b.strip().casefold()
    return name_a == name_b


def nearest_first(position: int, count: int) -> list[int]:
    """The keyframe positions 0..count-1 by distance from `position` (itself first), the earlier on a tie: where
    an entity's missing box or extent is taken from."""
    return sorted(range(count), key=lambda other: (abs(other - position), other))


def _widen_from_neighbour(scene: dict, entity: dict, min_extent: float, label: str, where: str,
                          repairs: list[Repair]) -> bool:
    """A normalized box too thin in a direction (a small model's [0.5, 0.2, 0.5, 0.8]: a line where the entity
    stands) takes that direction's extent from the same entity (by name) in the nearest keyframe whose box has
    it, centred where the thin box is, kept inside the frame; reported. False when no keyframe gives one (the
    LLM is then asked again)."""
    # By position in the answer, as `_entity_boxes` numbers them (a keyframe that is no object holds nothing).
    keyframes = [k["entities"] if isinstance(k, dict) and isinstance(k.get("entities"), list) else []
                 for k in scene["keyframes"]]
    position = next(i for i, entities in enumerate(keyframes) if any(e is entity for e in entities))
    x0, y0, x1, y1 = entity["box"]
    # In order and inside the frame, as `repair_box` will have it: a box past an edge is thin once clamped.
    box = [min(max(v, 0.0), 1.0) for v in (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))]
    sources = []
    for axis in (0, 1):  # x, then y
        if box[axis + 2] - box[axis] >= min_extent:
            continue
        source = next(((other, b) for other in nearest_first(position, len(keyframes)) if other != position
                       for e in keyframes[other] if isinstance(e, dict) and e is not entity
                       and _same_name(e, entity) and (b := _as_box(e.get("box"))) is not None
                       and _inside(b[axis], b[axis + 2]) >= min_extent), None)
        if source is None:
            return False
        size = _inside(source[1][axis], source[1][axis + 2])
        centre = (box[axis] + box[axis + 2]) / 2
        start = min(max(centre - size / 2, 0.0), 1.0 - size)
        box[axis], box[axis + 2] = start, start + size
        sources.append(f"its {'width' if axis == 0 else 'height'} from keyframe {source[0] + 1}")
    # the swaps said here: the box stored below is already in order, so `repair_box` would not say them
    repairs.append(Repair(f"{label}, {where}", "; ".join([f"box {[round(v, 4) for v in entity['box']]} was "
                                                          f"{_extent(entity['box'])}", f"took {' and '.join(sources)}",
                                                          *_swaps(entity["box"])])))
    entity["box"] = box
    return True


def repair_scene_data(scene: Any, label: str = "scene", frame_size: tuple[int, int] | None = None,
                      min_extent: float = 0.0) -> tuple[Any, list[Repair]]:
    """Repair one scene's plain data; returns a repaired copy and the list of changes.

    Boxes on another scale (percent, 0-1000, pixels of `frame_size` = (width, height), by default the
    default video size) are rescaled first, the scene as a whole (`box_scale`); a scene whose boxes mix
    scales, or (with `min_extent` > 0) has a box under `min_extent` wide or tall, raises
    `StoryValidationError` (see `rescale_boxes`).
    """
    repairs: list[Repair] = []
    if not isinstance(scene, dict) or not isinstance(scene.get("keyframes"), list):
        return scene, repairs
    try:
        scene = copy.deepcopy(scene)
    except RecursionError:  # deepcopy recurses: data nested hundreds deep (a hand-edited file, an LLM answer)
        raise StoryValidationError([Problem(label, "is nested too deeply")], subject=label) from None
    if frame_size is None:
        defaults = VideoSettings()
        frame_size = (defaults.width, defaults.height)
    rescale_boxes(scene, label, frame_size, repairs, min_extent)
    by_index: dict[int, dict] = {}
    for position, keyframe in enumerate(scene["keyframes"]):
        if not isinstance(keyframe, dict):
            continue
        index = keyframe.get("index", position)
        if not isinstance(index, int) or not 0 <= index < NUM_KEYFRAMES:
            repairs.append(Repair(f"{label}, keyframe {position + 1}", f"dropped: index {index!r} is not in 0..{NUM_KEYFRAMES - 1}"))
            continue
        if index in by_index:
            repairs.append(Repair(f"{label}, keyframe {position + 1}", f"dropped: a second keyframe with index {index}"))
            continue
        keyframe = dict(keyframe, index=index)
        entities = keyframe.get("entities")
        if isinstance(entities, list):
            kept = []
            for e, entity in enumerate(entities):
                if isinstance(entity, dict) and "box" in entity:
                    name = entity.get("name")
                    where = f"{label}, keyframe {index + 1}, entity {e + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
                    box = repair_box(entity["box"], where, repairs)
                    if box is None:
                        continue
                    entity = dict(entity, box=box)
                kept.append(entity)
            keyframe["entities"] = kept
        by_index[index] = keyframe
    present = sorted(by_index)
    for index in range(NUM_KEYFRAMES) if present else ():
        if index in by_index:
            continue
        # Hold the nearest keyframe the plan has, preferring the previous one.
        source = max((i for i in present if i < index), default=None)
        if source is None:
            source = min(i for i in present if i > index)
        by_index[index] = dict(copy.deepcopy(by_index[source]), index=index)
        repairs.append(Repair(f"{label}, keyframe {index + 1}", f"was missing; held keyframe {source + 1}"))
    scene["keyframes"] = [by_index[i] for i in sorted(by_index)]
    return scene, repairs


def repair_story_data(data: Any) -> tuple[Any, list[Repair]]:
    """Repair every scene of a story's plain data; returns a repaired copy and every change made.
    Raises `StoryValidationError` for a scene whose boxes mix scales (see `repair_scene_data`)."""
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        return data, []
    try:
        data = copy.deepcopy(data)
    except RecursionError:
        raise StoryValidationError([Problem("", "the story is nested too deeply")]) from None
    repairs: list[Repair] = []
    try:  # pixel boxes are pixels of the story's own frame
        video = VideoSettings.model_validate(data["settings"]["video"])
    except (KeyError, TypeError, ValidationError):
        video = VideoSettings()
    for s, scene in enumerate(data["scenes"]):
        label = f"scene {s + 1}" + (f" ({scene.get('id')!r})" if isinstance(scene, dict) and scene.get("id") else "")
        data["scenes"][s], scene_repairs = repair_scene_data(scene, label, (video.width, video.height))
        repairs.extend(scene_repairs)
    return data, repairs
