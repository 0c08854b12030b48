"""Validation with errors that say where (scene, keyframe, entity, field) and what, and an explicit
repair step for the fixable cases that reports every change it makes.

Repair works on plain JSON-like data (what an LLM, a plan string or a hand-edited file gives) because
data with a broken box cannot become a `Story` until it is repaired.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import DreamRunnerError
from .story import NUM_KEYFRAMES, Scene, Story


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


def validate_story(data: Any) -> Story:
    try:
        return Story.model_validate(data)
    except ValidationError as error:
        raise StoryValidationError(problems_from(error, data)) from None


def validate_scene(data: Any, label: str = "scene") -> Scene:
    try:
        return Scene.model_validate(data)
    except ValidationError as error:
        problems = [Problem(f"{label}, {p.where}" if p.where else label, p.message) for p in problems_from(error, data)]
        raise StoryValidationError(problems, subject=label) from None


@dataclass(frozen=True)
class Repair:
    where: str
    change: str

    def __str__(self) -> str:
        return f"{self.where}: {self.change}"


def _as_box(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def repair_box(box: Any, where: str, repairs: list[Repair]) -> list[float] | None:
    """Swap inverted corners, clamp into [0, 1]; None when the box has no area left (drop it)."""
    values = _as_box(box)
    if values is None:
        return box
    x0, y0, x1, y1 = values
    if x0 > x1:
        x0, x1 = x1, x0
        repairs.append(Repair(where, f"swapped x0 and x1 (were {values[0]}, {values[2]})"))
    if y0 > y1:
        y0, y1 = y1, y0
        repairs.append(Repair(where, f"swapped y0 and y1 (were {values[1]}, {values[3]})"))
    clamped = [min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1)]
    if clamped != [x0, y0, x1, y1]:
        repairs.append(Repair(where, f"clamped {[x0, y0, x1, y1]} into [0, 1] as {clamped}"))
    x0, y0, x1, y1 = clamped
    if x0 >= x1 or y0 >= y1:
        repairs.append(Repair(where, f"dropped: box {clamped} has no area"))
        return None
    return clamped


def repair_scene_data(scene: Any, label: str = "scene") -> tuple[Any, list[Repair]]:
    """Repair one scene's plain data; returns a repaired copy and the list of changes."""
    repairs: list[Repair] = []
    if not isinstance(scene, dict) or not isinstance(scene.get("keyframes"), list):
        return scene, repairs
    scene = copy.deepcopy(scene)
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
    """Repair every scene of a story's plain data; returns a repaired copy and every change made."""
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        return data, []
    data = copy.deepcopy(data)
    repairs: list[Repair] = []
    for s, scene in enumerate(data["scenes"]):
        label = f"scene {s + 1}" + (f" ({scene.get('id')!r})" if isinstance(scene, dict) and scene.get("id") else "")
        data["scenes"][s], scene_repairs = repair_scene_data(scene, label)
        repairs.extend(scene_repairs)
    return data, repairs
