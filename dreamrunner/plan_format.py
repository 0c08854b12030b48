"""The paper's scene-plan string, as its LLM writes it and its SR3AI code reads it:

    Background: <text>
    Frame_1: [[<entity name>, <motion or "none">, <region description>], [x0, y0, x1, y1]], [[...], [...]]
    ...
    Frame_6: ...

Published plans vary: some quote with ' instead of ", some are cut short before their closing brackets,
a few have inverted boxes; the whole string may be wrapped in a literal `"`, or only start (or end) with
one; lines may be CRLF, separated by blank lines, with or without a space after the colon. Editors, chat
answers and other tools add more: lower-case `frame_1`, a tab in `Frame\t1`, list bullets and markdown
bold (`- **Frame_1:**`), fullwidth colons, a byte-order mark, CR or U+2028 line ends (U+2028 inside a
line's text stays text), curly quotes (read as straight ones, reported). Import accepts all of them and
reports each repair; export writes the canonical JSON-quoted form, and importing an
export gives the same scene. Anything else raises `PlanFormatError` (or `StoryValidationError`).
"""

from __future__ import annotations

import ast
import json
import re
import reprlib
import warnings
from typing import Any

from .errors import DreamRunnerError
from .story import NUM_KEYFRAMES, Scene
from .validation import Repair, repair_scene_data, validate_scene

# Matched against one stripped line; a line may open with the plan's stray quote, a list bullet or markdown
# bold ("- **Frame_1:** ..."), in any letter case, with a fullwidth colon. Never two runs of whitespace side
# by side: over a long run of spaces the engine would try every split of it (quadratic).
_LEAD = r"[\"'\u201c\u201d]?\s*(?:[-*\u2022][ \t]+)?(?:\*\*|__)?"
_COLON = r"\s*(?:(?:\*\*|__)\s*)?[:\uff1a](?:\*\*|__)?"
_FRAME = re.compile(_LEAD + r"Frame[_\s]*(\d+)" + _COLON + "(.*)", re.I)
_BACKGROUND = re.compile(_LEAD + "Background" + _COLON + "(.*)", re.I)
# Where a plan string starts inside a longer text (an LLM answer): a Background line, then a Frame line.
# [ \t] rather than \s, and never two runs of it side by side: either would make the search quadratic
# (from every line start over the following blank lines, or back and forth over a long run of spaces).
_LIST = r"(?:[-*\u2022][ \t]+)?(?:\*\*|__)?"
_PLAN_START = re.compile(r"^[ \t]*(?:[\"'`]+[ \t]*)?" + _LIST + r"Background[ \t]*(?:(?:\*\*|__)[ \t]*)?[:\uff1a]",
                         re.M | re.I)
_FRAME_START = re.compile(r"^[ \t]*(?:[\"'][ \t]*)?" + _LIST + r"Frame[_ \t][ \t]*\d", re.M | re.I)
# Curly quotes a word processor (or a Windows-1252 file) put where the plan's JSON has straight ones.
_CURLY = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})
_QUOTES = "\"'\u201c\u201d"  # the wrapping quote: straight, or curly from a word processor
# Where a plan's lines end: \n, \r\n or \r, and another Unicode line break (U+2028, U+0085, a form feed,
# ...) only where a Frame or Background line follows it: elsewhere it is part of the text ("a street\u2028at
# night"), as a JSON string may hold it. [ \t], not \s, in the lookahead keeps a run of breaks linear.
_LINE_BREAK = re.compile("\r\n|[\r\n]|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029](?=[ \t\"'*\\-]*(?i:Frame[_ \t]|Background[ \t]*[:\uff1a]))")
NO_MOTION = "none"


def find_plan_string(text: str) -> str | None:
    """The plan string inside a longer text (from its Background line to the end), or None when the text
    has no Background line followed by a Frame line."""
    start = _PLAN_START.search(text)
    if start is None or _FRAME_START.search(text, start.end()) is None:
        return None
    return text[start.start():].strip().strip("`")


class PlanFormatError(DreamRunnerError, ValueError):
    pass


def _read(text: str) -> Any:
    """JSON, else a Python literal (single quotes); None when neither reads it. Deep nesting, huge numbers
    and NUL bytes are unreadable, not crashes."""
    for parse in (json.loads, ast.literal_eval):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in a plan are not the user's concern
                return parse(text)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError, OverflowError):
            pass
    return None


def _parse_regions(body: str, where: str, repairs: list[Repair]) -> list:
    body = body.strip().rstrip(",").rstrip()
    if body.endswith(("]\"", "]'")):  # the plan's closing quote on its last line
        body = body[:-1]
    if body in ("", "[]"):
        return []
    regions = _read("[" + body + "]")
    if regions is not None:
        return regions
    if (straight := body.translate(_CURLY)) != body and (regions := _read("[" + straight + "]")) is not None:
        repairs.append(Repair(where, "read curly quotes as straight quotes"))
        return regions
    # A plan cut off mid-line loses its closing brackets: close what is open, if that parses.
    depth = body.count("[") - body.count("]")
    if 0 < depth <= 8:
        regions = _read("[" + body + "]" * depth + "]")
        if regions is not None:
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
        # reprlib: bounded depth and length, whatever the plan nests
        raise PlanFormatError(f"{where}: expected [[name, motion, description], [x0, y0, x1, y1]], "
                              f"got {reprlib.repr(region)}")
    (name, motion, description), box = region
    if not isinstance(box, (list, tuple)) or len(box) != 4 or any(isinstance(v, (list, tuple, dict)) for v in box):
        raise PlanFormatError(f"{where}: the box must be [x0, y0, x1, y1], got {reprlib.repr(box)}")
    return {
        "name": str(name),
        "motion": None if str(motion).strip().lower() == NO_MOTION else str(motion),
        "description": str(description),
        "box": list(box),
    }


def parse_plan(plan: str, scene_id: str = "scene", *, frame_size: tuple[int, int] | None = None,
               min_extent: float = 0.0, **scene_fields: Any) -> tuple[Scene, list[Repair]]:
    """Read a paper plan string into a validated `Scene`, repairing what is safe to repair (boxes on
    another scale are rescaled, see `dreamrunner.validation.repair_scene_data`; `frame_size` = (width,
    height) for boxes in pixels; `min_extent`: the smallest box width and height allowed, 0 for none).
    Raises `PlanFormatError` or `StoryValidationError`."""
    if not isinstance(plan, str):
        raise PlanFormatError(f"{scene_id}: the plan is not text")
    text = plan.strip().lstrip("\ufeff")  # a byte-order mark the plan's file left at its start
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        text = text[1:-1]
    background: str | None = None
    keyframes: dict[int, dict] = {}
    repairs: list[Repair] = []
    for line in _LINE_BREAK.split(text):
        line = line.strip()
        if not line:
            continue
        if (match := _BACKGROUND.match(line)) is not None:
            background = match.group(1).strip()
            if background and background[-1] in _QUOTES and background.count(background[-1]) % 2:
                background = background[:-1].rstrip()  # the plan's stray closing quote
            continue
        if (match := _FRAME.match(line)) is None:
            raise PlanFormatError(f"{scene_id}: line is neither 'Background:' nor 'Frame_k:': {line[:80]!r}")
        digits = match.group(1).lstrip("0") or "0"
        number = int(digits) if len(digits) <= 3 else 1000  # not int() of a 5000-digit number
        where = f"{scene_id}, Frame_{digits[:8]}"
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
    data, scene_repairs = repair_scene_data(data, scene_id, frame_size, min_extent)
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
