"""The paper's scene-plan string, as its LLM writes it and its SR3AI code reads it:

    Background: <text>
    Frame_1: [[<entity name>, <motion or "none">, <region description>], [x0, y0, x1, y1]], [[...], [...]]
    ...
    Frame_6: ...

Published plans vary: some quote with ' instead of ", some are cut short before their closing brackets,
a few have inverted boxes. Import accepts all of them and reports each repair; export writes the
canonical JSON-quoted form, and importing an export gives the same scene.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from .errors import DreamRunnerError
from .story import NUM_KEYFRAMES, Scene
from .validation import Repair, repair_scene_data, validate_scene

_FRAME = re.compile(r"^\s*Frame_(\d+)\s*:(.*)$")
_BACKGROUND = re.compile(r"^\s*Background\s*:(.*)$")
NO_MOTION = "none"


class PlanFormatError(DreamRunnerError, ValueError):
    pass


def _parse_regions(body: str, where: str, repairs: list[Repair]) -> list:
    body = body.strip().rstrip(",")
    if body in ("", "[]"):
        return []
    text = "[" + body + "]"
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    # A plan cut off mid-line loses its closing brackets: close what is open, if that parses.
    depth = body.count("[") - body.count("]")
    if depth > 0:
        closed = "[" + body + "]" * depth + "]"
        for parse in (json.loads, ast.literal_eval):
            try:
                regions = parse(closed)
            except (ValueError, SyntaxError):
                continue
            repairs.append(Repair(where, f"closed {depth} unclosed bracket(s) at the end of the line"))
            return regions
    raise PlanFormatError(f"{where}: cannot read the regions {body[:80]!r}")


def _entity(region: Any, where: str) -> dict:
    if (
        not isinstance(region, (list, tuple))
        or len(region) != 2
        or not isinstance(region[0], (list, tuple))
        or len(region[0]) != 3
    ):
        raise PlanFormatError(f"{where}: expected [[name, motion, description], [x0, y0, x1, y1]], got {region!r}")
    (name, motion, description), box = region
    return {
        "name": str(name),
        "motion": None if str(motion).strip().lower() == NO_MOTION else str(motion),
        "description": str(description),
        "box": list(box) if isinstance(box, (list, tuple)) else box,
    }


def parse_plan(plan: str, scene_id: str = "scene", **scene_fields: Any) -> tuple[Scene, list[Repair]]:
    """Read a paper plan string into a validated `Scene`, repairing what is safe to repair."""
    text = plan.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    background: str | None = None
    keyframes: dict[int, dict] = {}
    repairs: list[Repair] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if (match := _BACKGROUND.match(line)) is not None:
            background = match.group(1).strip()
            continue
        if (match := _FRAME.match(line)) is None:
            raise PlanFormatError(f"{scene_id}: line is neither 'Background:' nor 'Frame_k:': {line.strip()[:80]!r}")
        number = int(match.group(1))
        where = f"{scene_id}, Frame_{number}"
        if not 1 <= number <= NUM_KEYFRAMES:
            raise PlanFormatError(f"{where}: frame numbers run from 1 to {NUM_KEYFRAMES}")
        if number - 1 in keyframes:
            raise PlanFormatError(f"{where}: appears twice")
        regions = _parse_regions(match.group(2), where, repairs)
        entities = [_entity(region, f"{where}, region {i + 1}") for i, region in enumerate(regions)]
        keyframes[number - 1] = {"index": number - 1, "entities": entities}
    if background is None:
        raise PlanFormatError(f"{scene_id}: the plan has no 'Background:' line")
    if not keyframes:
        raise PlanFormatError(f"{scene_id}: the plan has no 'Frame_k:' lines")
    data = {"id": scene_id, "background": background, **scene_fields,
            "keyframes": [keyframes[i] for i in sorted(keyframes)]}
    data, scene_repairs = repair_scene_data(data, scene_id)
    repairs.extend(scene_repairs)
    return validate_scene(data, scene_id), repairs


def format_plan(scene: Scene) -> str:
    """Write a scene as the paper's plan string (JSON-quoted, boxes at full float precision)."""
    lines = [f"Background:{scene.background}"]
    for keyframe in scene.keyframes:
        regions = ", ".join(
            "[" + json.dumps([e.name, e.motion or NO_MOTION, e.description], ensure_ascii=False) + ", "
            + json.dumps(list(e.box)) + "]"
            for e in keyframe.entities
        )
        lines.append(f"Frame_{keyframe.index + 1}: {regions}")
    return "\n".join(lines)
