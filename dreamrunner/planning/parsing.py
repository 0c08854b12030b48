"""From an LLM's raw answer to a validated plan, repairing only what is safe to repair.

Safe repairs, each reported: reasoning blocks (`<think>...</think>`) and prose or a code fence around the
JSON, single quotes / trailing commas (a Python-literal reading), the paper's plan-string format instead
of JSON, boxes written on another scale than [0, 1] (percent, 0-1000, pixels of the story's frame: the
scale of the whole answer, see `dreamrunner.validation.box_scale`), a missing motion (-> none), a
missing description (-> the name), "none" as a motion, and everything `dreamrunner.validation` repairs
(boxes swapped or clamped into [0, 1], a keyframe count other than 6). A cut-off answer, a box holding
Infinity, NaN or a number too large for a float, and boxes that mix scales are NOT guessed at: the
planner asks again, telling the LLM what was wrong. Every outcome is a plan or a `PlanningError` with the
raw answer attached, in time linear in the answer's length.
"""

from __future__ import annotations

import ast
import json
import re
import reprlib
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..plan_format import PlanFormatError, find_plan_string, parse_plan
from ..story import Character, Entity, Scene
from ..validation import (MIN_BOX_EXTENT, Repair, StoryValidationError, finite_number, nearest_first,
                          repair_scene_data, validate_scene)
from .base import MAX_SCENES, MIN_SCENES, PlanningError
from .schema import SceneOutline, StoryOutline

_NO_MOTION = {"", "none", "null", "n/a", "no motion", "static", "still"}
# A `{` or `[` that may start a JSON value or Python literal: what follows it could begin a key or an
# element. Other brackets ("{{", "[x0, y0]" in prose) are skipped by the regex engine, not tried one by one.
_BRACKET = re.compile(r"""\{\s*["'}]|\[\s*[\[\]{"'(\-0-9tfnNI]""")
_OPENING_RUN = re.compile(r"[\[{\s]+")
# Reasoning models write their thoughts (drafts, examples of the JSON) in such blocks before the answer.
_REASONING_TAGS = ("think", "thinking", "reasoning", "reflection", "analysis")
_REASONING_OPEN = re.compile(r"<(%s)>" % "|".join(_REASONING_TAGS), re.I)
_REASONING_CLOSE = {tag: re.compile(rf"</{tag}>", re.I) for tag in _REASONING_TAGS}
_LONE_CLOSE = re.compile(r"</(?:%s)>" % "|".join(_REASONING_TAGS), re.I)
# Characters that failed starts may read, per character of the answer: a failed start may read to the end
# of the answer (a cut-off value nested many deep), so this budget, not a count of starts, keeps the search
# linear in the answer's length. Prose with thousands of short bracketed fragments ("[x0, y0]": each fails
# at once) spends a few characters per fragment and still reaches the plan after it.
_FAILED_READ_BUDGET = 64
_MAX_LITERAL_STARTS = 4
_TRAILING_COMMA = re.compile(r",\s*[\]}]")


def _without_reasoning(text: str) -> str:
    """`text` without its reasoning blocks; an unclosed block runs to the end, and a closing tag whose
    opening tag the server dropped ends the reasoning there."""
    parts, position = [], 0
    while (opening := _REASONING_OPEN.search(text, position)) is not None:
        parts.append(text[position:opening.start()])
        closing = _REASONING_CLOSE[opening.group(1).lower()].search(text, opening.end())
        position = len(text) if closing is None else closing.end()
    parts.append(text[position:])
    kept = "".join(parts)
    last = None
    for last in _LONE_CLOSE.finditer(kept):
        pass
    return kept if last is None else kept[last.end():]


@dataclass
class _Found:
    value: Any
    start: int
    end: int
    fragment: bool  # inside the span of an earlier start that failed: a piece of a broken value


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> tuple[Any, int, int]:
    """The JSON value starting at `start` -> (value, end, characters read). Reads growing windows of the
    text, not the text: `JSONDecodeError` counts lines from the start of the string it was given, which
    over the whole answer makes each failed start cost the answer's length (thousands of "[x0, y0]" in
    prose would be quadratic). A value cut by the window (an error at its end, or an unterminated string)
    is read again in a window four times larger. Raises `JSONDecodeError` with `pos` in `text`."""
    window, read = 64, 0
    while True:
        chunk = text[start:start + window]
        read += len(chunk)
        cut = start + window < len(text)
        try:
            value, end = decoder.raw_decode(chunk)
        except json.JSONDecodeError as error:
            if cut and (error.pos >= len(chunk) - 16 or error.msg.startswith("Unterminated string")):
                window *= 4  # 16: longer than any token ("-Infinity") an error may point back to
                continue
            error.pos += start  # lineno/colno are computed later, for the one error reported
            error.read = read
            raise
        return value, start + end, read


def _json_values(text: str) -> tuple[list[_Found], list[int], str | None]:
    """Every JSON value starting at a `{` or `[` of `text`, outermost first (what a value holds is not
    listed again), the starts that failed, and what was wrong at the one that read furthest."""
    decoder = json.JSONDecoder()
    found: list[_Found] = []
    failures: list[int] = []
    content_end = len(text.rstrip())
    position, budget, broken_until = 0, _FAILED_READ_BUDGET * len(text) + 4096, -1
    furthest, problem = -1, None  # problem: the furthest error, described once at the end
    while budget > 0 and (match := _BRACKET.search(text, position)) is not None:
        start = match.start()
        try:
            value, end, _ = _decode_at(decoder, text, start)
        except json.JSONDecodeError as error:
            budget -= error.read
            failures.append(start)
            position = start + 1
            broken_until = max(broken_until, error.pos)
            if error.pos > furthest:
                furthest, problem = error.pos, error
        except (ValueError, RecursionError) as error:  # a 5000-digit number; nesting past the recursion limit
            budget -= len(text) - start + 1  # how far it read is unknown: charge the rest of the answer
            failures.append(start)
            position, broken_until = start + 1, len(text)
            if isinstance(error, RecursionError):
                # Every start in this run of opening brackets nests as deep: skip the run, not one bracket.
                position = _OPENING_RUN.match(text, start).end()
            if furthest < len(text):
                furthest = len(text)
                problem = ("the JSON is nested too deeply" if isinstance(error, RecursionError)
                           else "a number in it has too many digits")
        else:
            found.append(_Found(value, start, end, start < broken_until))
            position = end
    if isinstance(problem, json.JSONDecodeError):
        problem = _describe_decode_error(text, content_end, problem)
    return found, failures, problem


def _describe_decode_error(text: str, content_end: int, error: json.JSONDecodeError) -> str:
    if error.pos >= content_end - 1 or "Unterminated string" in error.msg:
        return f"it ends before the JSON is complete (cut off after {len(text)} characters?)"
    line = text.count("\n", 0, error.pos) + 1
    return f"{error.msg} at line {line}, column {error.pos - text.rfind(chr(10), 0, error.pos)}"


def _pythonic(text: str) -> bool:
    """Whether the text has what only a Python literal has: single quotes, None/True/False, a trailing comma."""
    return any(word in text for word in ("'", "None", "True", "False")) or _TRAILING_COMMA.search(text) is not None


def _python_literal(text: str, start: int) -> Any:
    """The Python literal (single quotes, trailing commas, None) from `start` to the last bracket."""
    end = max(text.rfind("}"), text.rfind("]"))
    if end < start or end - start > 200_000:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in LLM text are not the user's concern
            value = ast.literal_eval(text[start: end + 1])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        return None
    return value if isinstance(value, (dict, list)) else None


def _wanted_literal(text: str, failures: list[int], accept: Callable[[Any], bool]) -> Any:
    """The first Python literal read at one of the first failed JSON starts that `accept` takes; None if none."""
    for start in failures[:_MAX_LITERAL_STARTS] if _pythonic(text) else ():
        value = _python_literal(text, start)
        if value is not None and accept(value):
            return value
    return None


def answer_text(raw: Any) -> str:
    """The answer with its reasoning blocks left out; `PlanningError` for an empty answer."""
    if not isinstance(raw, str) or not raw.strip():
        raise PlanningError("the answer is empty", raw=raw if isinstance(raw, str) else None)
    return _without_reasoning(raw).strip() or raw.strip()


def extract_json(raw: str, repairs: list[Repair], wanted: Callable[[Any], bool] = lambda value: True) -> Any:
    """The JSON value in an answer, from any position: the LAST value `wanted` accepts (the object with
    the expected keys: reasoning models write a draft first and the corrected plan after it; an example
    object without those keys, before or after, is not taken), else the first complete value; tolerating
    reasoning blocks, fences, prose (with brackets of its own) around it and a Python-literal form.
    `PlanningError` when there is none. (A story plan cut off after a complete draft: `parse_story_answer`'s
    `cut_off`, the server's finish reason.)"""
    text = answer_text(raw)
    if text != raw.strip():
        repairs.append(Repair("answer", "left out the reasoning block before the answer"))
    sources = [text] if text == raw.strip() else [text, raw.strip()]
    first: tuple[Any, bool] | None = None
    problem = None
    for source in sources:
        found, failures, source_problem = _json_values(source)
        problem = problem or source_problem
        chosen = [item for item in found if wanted(item.value)]
        if chosen and chosen[-1].fragment and (value := _wanted_literal(source, failures, wanted)) is not None:
            # a piece of a value that failed as JSON: the whole read as a Python literal (a trailing comma) wins
            repairs.append(Repair("answer", "read it as a Python literal (single quotes or trailing commas)"))
            return _replace_surrogates(value, repairs)
        if chosen:
            item = chosen[-1]
            if len(chosen) > 1:
                repairs.append(Repair("answer", f"it holds {len(chosen)} plans (a draft, then corrections?); "
                                                "took the last one"))
            return _replace_surrogates(_taken(item.value, item.start == 0 and not source[item.end:].strip(),
                                              repairs), repairs)
        for item in found:
            if first is None and not item.fragment:
                first = (item.value, item.start == 0 and not source[item.end:].strip())
        value = _wanted_literal(source, failures, lambda value: wanted(value) or first is None)
        if value is not None:
            repairs.append(Repair("answer", "read it as a Python literal (single quotes or trailing commas)"))
            return _replace_surrogates(value, repairs)
    if first is not None:
        return _replace_surrogates(_taken(*first, repairs), repairs)
    raise PlanningError(f"the answer is not valid JSON: {problem or 'it holds no JSON object'}", raw=raw)


def _taken(value: Any, whole: bool, repairs: list[Repair]) -> Any:
    if not whole:
        repairs.append(Repair("answer", "took the JSON out of the text around it"))
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: Any, repairs: list[Repair]) -> Any:
    """Unpaired surrogates (from escapes like \\ud800) in the answer's text, replaced in place by U+FFFD:
    no UTF-8 project file could store them. Iterative: the value may be deeply nested."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        for key, item in list(node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(item, str) and not item.isascii() and _SURROGATE.search(item):
                node[key] = _SURROGATE.sub("\ufffd", item)
                count += 1
            elif isinstance(item, (dict, list)):
                stack.append(item)
    if count:
        repairs.append(Repair("answer", f"{count} text(s) held unpaired surrogates (escapes like \\ud800); "
                                        "replaced them with U+FFFD"))
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _unwrap(data: Any, keys: tuple[str, ...]) -> Any:
    """Accept {"plan": {...}}-style wrappers around the expected object."""
    for _ in range(3):
        if isinstance(data, dict) and not any(k in data for k in keys) and len(data) == 1:
            inner = next(iter(data.values()))
            if isinstance(inner, dict):
                data = inner
                continue
        break
    return data


# ---------------------------------------------------------------- story level

def _is_story(value: Any) -> bool:
    value = _unwrap(value, ("scenes",))
    if isinstance(value, dict):
        return "scenes" in value
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "scene" in v for v in value)


_SCENES_LIST = re.compile(r'"scenes"\s*:\s*\[')
_BETWEEN_ITEMS = re.compile(r"[ \t\r\n,]*")
_TITLE = re.compile(r'"title"\s*:\s*("(?:[^"\\]|\\.)*")')


def _cut_here(text: str, error: json.JSONDecodeError) -> bool:
    """Whether a JSON error is the text ending (a cut), not a fault inside it: at the very end, in an open string,
    inside a "\\u00e9" escape (json says an invalid escape) or inside null/true/false."""
    rest, end = text[error.pos:].rstrip(), len(text.rstrip())
    # at the end, or at the last character unless that closes something (",}": a trailing comma, not a cut)
    return (error.pos >= end or error.pos == end - 1 and text[end - 1] not in "}]" or "Unterminated string" in error.msg
            or error.msg.startswith("Invalid \\uXXXX escape") and len(text) - error.pos <= 6
            or bool(rest) and any(word.startswith(rest) for word in ("null", "true", "false")))


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\]]')


def _enclosing_object(text: str, start: int) -> int | None:
    """Where the object holding position `start` opens (the innermost "{" still open there, strings skipped);
    None when none is open. One scan, linear in `start`."""
    opened: list[tuple[str, int]] = []
    for match in _STRING_OR_BRACKET.finditer(text, 0, start):
        token = match.group()
        if token in "{[":
            opened.append((token, match.start()))
        elif token in "}]":
            if opened:
                opened.pop()
    braces = [position for token, position in opened if token == "{"]
    return braces[-1] if braces else None


def _cut_after(text: str, start: int) -> bool:
    """Whether the plan around a closed scene list at `start` runs to the end of the text unclosed (cut after the
    list). A whole object, or no object at all (a bare '"scenes": [...]' fragment), is not cut."""
    brace = _enclosing_object(text, start)
    if brace is None:
        return False
    try:
        json.JSONDecoder().raw_decode(text, brace)
    except RecursionError:
        return False
    except json.JSONDecodeError as error:
        return error.pos > start and _cut_here(text, error)
    return False


@dataclass
class _CutList:
    """The last "scenes" list of an answer the token limit cut: the scenes written whole before the cut, the
    plan's title, and whether the list itself had closed (the cut came after it)."""

    scenes: list
    title: str
    closed: bool


def _cut_scene_list(raw: str) -> _CutList | None:
    """The last "scenes" list of the answer when the answer was cut off in it or after it (a small model that runs
    to the token limit); None when that list is whole inside a whole plan, broken inside (another fault, said
    as it is) or nested too deeply to read. Whole scenes only, never a part of one."""
    text = answer_text(raw)
    lists = list(_SCENES_LIST.finditer(text))  # the last: prose before the plan may name the key ("scenes": [...])
    if not lists:
        return None
    found = lists[-1]
    decoder, scenes, position, closed = json.JSONDecoder(), [], found.end(), False
    while True:
        position = _BETWEEN_ITEMS.match(text, position).end()
        if position >= len(text):
            break  # cut off between two scenes
        if text[position] == "]":  # the list is whole: was the plan around it cut after it?
            if not _cut_after(text, found.start()):
                return None
            closed = True
            break
        try:
            item, position = decoder.raw_decode(text, position)
        except RecursionError:
            return None  # nested too deep to read: said as it is (`extract_json`)
        except json.JSONDecodeError as error:
            if not _cut_here(text, error):
                return None  # broken inside, not cut off: another fault, said as it is
            break
        if position >= len(text) and not isinstance(item, dict):
            break  # a number at the very end may be cut ("1" of "12"); a scene is an object
        scenes.append(item)
    # The title the plan wrote before its list (after any earlier list: a draft's title is not this plan's).
    begin = lists[-2].end() if len(lists) > 1 else 0
    titles = list(_TITLE.finditer(text, begin, found.start()))
    return _CutList(scenes, _title_text(titles[-1].group(1)) if titles else "", closed)


def _title_text(quoted: str) -> str:
    """A title's JSON string as text: raw line breaks in it kept as spaces, a bad escape gives no title."""
    try:
        return " ".join(json.loads(quoted, strict=False).split())
    except json.JSONDecodeError:
        return ""


def _keep_cut_scenes(cut: _CutList, wanted: int, most: int, repairs: list[Repair]) -> dict | None:
    """A cut-off story plan's data, when its whole scenes are at least `wanted` (the story's scene count, else the
    paper's least): the first `most` of them (a runaway list: the story ends early either way), reported, as the
    story may then end early. None when too few: the answer is sent back as cut off."""
    scenes = cut.scenes
    if len(scenes) < wanted:
        return None
    kept = "kept them" if len(scenes) <= most else f"kept the first {most}"
    where = f"its list of {len(scenes)} scenes" if cut.closed else f"{len(scenes)} whole scenes"
    early = "" if cut.closed and len(scenes) <= most else " (the story may end early: edit its last scene, or plan again)"
    repairs.append(Repair("answer", f"it was cut off after {where}; {kept}{early}"))
    return _replace_surrogates({"title": cut.title, "scenes": scenes[:most]}, repairs)


def parse_story_answer(raw: str, num_scenes: int | None = None, cut_off: bool = False,
                       ) -> tuple[StoryOutline, list[Repair]]:
    """A story-level answer -> `StoryOutline` (scene count: `num_scenes`, else 5-8; up to `NEAR_MISS` scenes off
    is repaired by splitting or merging scenes, each repair reported; farther off is a problem). `cut_off`: the
    server stopped the answer at its token limit, so the plan it cut wins over a whole draft before it (kept when
    it has enough whole scenes, else sent back as cut off)."""
    repairs: list[Repair] = []
    low, high = (num_scenes, num_scenes) if num_scenes is not None else (MIN_SCENES, MAX_SCENES)
    read: list[_CutList | None] = []  # the cut scene list, read only where a branch below needs it, and once

    def cut_list() -> _CutList | None:
        if not read:
            read.append(_cut_scene_list(raw))
        return read[0]

    def kept_or_refused() -> dict:  # the cut plan's whole scenes, or a problem for the LLM
        cut = cut_list()
        cut_repairs: list[Repair] = []
        data = _keep_cut_scenes(cut, low, high, cut_repairs)
        if data is None:
            problem = (f"it was cut off after {len(cut.scenes)} whole scene(s) of its plan; a story needs "
                       f"{low if num_scenes is not None else f'at least {low}'}")
            raise PlanningError(f"the story plan is not usable:\n  - {problem}", raw=raw, problems=[problem])
        repairs[:] = cut_repairs
        return data

    if cut_off and cut_list() is not None:  # the server cut the last plan: it wins over any whole draft before it
        data = kept_or_refused()
    else:
        try:
            data = _unwrap(extract_json(raw, repairs, _is_story), ("scenes",))
        except PlanningError as error:
            if cut_list() is None or len(cut_list().scenes) < low:
                raise error
            data = kept_or_refused()
        listed = data if isinstance(data, list) else data.get("scenes") if isinstance(data, dict) else None
        if not (isinstance(data, dict) and "scenes" in data) and cut_list() is not None:
            data = kept_or_refused()  # a bare list may be a piece of the plan cut after it
        elif (isinstance(listed, list) and len(listed) < low and cut_list() is not None
              and len(cut_list().scenes) >= low):
            data = kept_or_refused()  # a shorter draft before the plan that was cut off: the last plan wins
    if isinstance(data, list):
        data = {"title": "", "scenes": data}
        repairs.append(Repair("answer", "a bare list of scenes; wrapped it"))
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
        raise PlanningError('the answer has no "scenes" list', raw=raw)
    problems: list[str] = []
    scenes = []
    for i, item in enumerate(data["scenes"]):
        where = f"scene {i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: is not an object")
            continue
        scene = _text(item.get("scene")) or _text(item.get("description"))
        narration = _text(item.get("narration"))
        motions = item.get("motions", [])
        if isinstance(motions, str):
            motions = [m.strip() for m in motions.split(",")]
            repairs.append(Repair(where, "motions was a string; split it at commas"))
        if not isinstance(motions, list):
            problems.append(f"{where}: motions is not a list")
            continue
        motions = [m for m in (_text(m) for m in motions) if m]
        if not scene:
            problems.append(f'{where}: "scene" is missing or empty')
            continue
        if not narration:
            narration = scene
            repairs.append(Repair(where, "narration was missing; used the scene text"))
        scenes.append(SceneOutline(scene=scene, motions=list(dict.fromkeys(motions)), narration=narration))
    count = len(data["scenes"]) if problems else len(scenes)
    if not problems and low - NEAR_MISS <= count < low:
        scenes = _split_scenes(scenes, low, repairs)
    elif not problems and high < count <= high + NEAR_MISS:
        scenes = _merge_scenes(scenes, high, repairs)
    elif not low - NEAR_MISS * bool(problems) <= count <= high + NEAR_MISS * bool(problems):
        wanted = f"exactly {num_scenes}" if num_scenes is not None else f"{MIN_SCENES} to {MAX_SCENES}"
        problems.append(f"expected {wanted} scenes, got {count}")
    if problems:
        raise PlanningError("the story plan is not usable:\n" + "\n".join(f"  - {p}" for p in problems),
                            raw=raw, problems=problems)
    title = _text(data.get("title")) or ""
    return StoryOutline(title=title, scenes=scenes), repairs


NEAR_MISS = 2  # scene counts this far outside the wanted range are repaired here, not asked again


def _sentences(text: str) -> list[str]:
    return [part for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part]


def _split_scenes(scenes: list[SceneOutline], wanted: int, repairs: list[Repair]) -> list[SceneOutline]:
    """Too few scenes: the scene with the longest narration becomes two (its sentences and motions shared
    out; one sentence: the same action, begun then finished), until there are `wanted`."""
    scenes = list(scenes)
    while len(scenes) < wanted:
        i = max(range(len(scenes)), key=lambda j: (len(_sentences(scenes[j].narration)), len(scenes[j].narration)))
        scene = scenes[i]
        said = _sentences(scene.narration)
        half = max(1, len(said) // 2)
        first, second = (" ".join(said[:half]), " ".join(said[half:])) if len(said) > 1 else (scene.narration,
                                                                                            scene.narration)
        cut = max(1, len(scene.motions) // 2)
        motions = (scene.motions[:cut], scene.motions[cut:] or scene.motions) if len(scene.motions) > 1 else (
            scene.motions, scene.motions)
        scenes[i:i + 1] = [SceneOutline(scene=scene.scene, motions=list(motions[0]), narration=first),
                           SceneOutline(scene=scene.scene, motions=list(motions[1]), narration=second)]
        repairs.append(Repair("story plan", f"it had {len(scenes) - 1} scenes, {wanted} wanted: split scene {i + 1} "
                                            "into two"))
    return scenes


def _merge_scenes(scenes: list[SceneOutline], wanted: int, repairs: list[Repair]) -> list[SceneOutline]:
    """Too many scenes: the two neighbours with the shortest text together become one, until `wanted`."""
    scenes = list(scenes)
    while len(scenes) > wanted:
        i = min(range(len(scenes) - 1), key=lambda j: len(scenes[j].scene + scenes[j].narration
                                                          + scenes[j + 1].scene + scenes[j + 1].narration))
        a, b = scenes[i], scenes[i + 1]
        scenes[i:i + 2] = [SceneOutline(scene=f"{a.scene} {b.scene}", motions=list(dict.fromkeys(a.motions + b.motions))[:3],
                                        narration=f"{a.narration} {b.narration}")]
        repairs.append(Repair("story plan", f"it had {len(scenes) + 1} scenes, at most {wanted} wanted: merged "
                                            f"scenes {i + 1} and {i + 2}"))
    return scenes


# ---------------------------------------------------------------- scene level

def _short(value: Any) -> str:
    """A box value for a message: numbers as JSON wrote them (Infinity, NaN), long ones cut, the rest through
    reprlib (bounded depth: a deeply nested value must not overflow the stack while being described)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = json.dumps(value)
        return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
    return reprlib.repr(value)


def _entity_data(item: Any, where: str, repairs: list[Repair], problems: list[str]) -> dict | None:
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (list, tuple)) and len(item[0]) == 3:
        # The paper's form: [[name, motion, description], [x0, y0, x1, y1]]
        (name, motion, description), box = item
        item = {"name": name, "motion": motion, "description": description, "box": box}
    if not isinstance(item, dict):
        repairs.append(Repair(where, "dropped: not an entity object"))
        return None
    name, description = _text(item.get("name")), _text(item.get("description"))
    if not name and not description:
        repairs.append(Repair(where, "dropped: no name and no description"))
        return None
    if not description:
        description = name
        repairs.append(Repair(where, "description was missing; used the name"))
    if not name:
        name = description
        repairs.append(Repair(where, "name was missing; used the description"))
    where = f"{where} ({name!r})"
    box = item.get("box", item.get("bbox"))
    if isinstance(box, dict):
        box = [box.get(k) for k in ("x0", "y0", "x1", "y1")]
    if box is None:  # no box at all: held from the nearest keyframe that places this entity (`_hold_boxes`)
        motion = _text(item.get("motion")) if item.get("motion") is not None else None
        return {"name": name, "motion": None if motion is not None and motion.lower() in _NO_MOTION else motion,
                "description": description, "box": None, "where": where}
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        problems.append(f"{where}: box must be [x0, y0, x1, y1], got {_short(box)}")
        return None
    numbers = [finite_number(v) for v in box]
    if None in numbers:
        # Clamping Infinity or a 400-digit number into [0, 1] would invent a box: ask again instead.
        problems.append(f"{where}: box holds {_short(box[numbers.index(None)])}, not a finite number")
        return None
    motion = item.get("motion")
    motion = _text(motion) if motion is not None else None
    if motion is not None and motion.lower() in _NO_MOTION:
        motion = None
    return {"name": name, "motion": motion, "description": description, "box": numbers}


def _is_scene_plan(value: Any) -> bool:
    value = _unwrap(value, _SCENE_KEYS)
    return isinstance(value, dict) and ("keyframes" in value or "frames" in value)


_SCENE_KEYS = ("keyframes", "frames", "background")


_NUMBER_KEYS = ("index", "keyframe", "frame")


def _keyframe_indices(frames: list, repairs: list[Repair], problems: list[str]) -> list[int]:
    """Each listed keyframe's 0-based index: its own number where the answer numbers its keyframes
    ("index", "keyframe" or "frame"; 1-based unless one is 0), else its position. Numbered keyframes are
    ordered by number, not by where they are listed (a reversed list would reverse the motion); a number
    used twice, or numbers on only some keyframes, are problems for the LLM to fix. Missing numbers are
    held from the nearest keyframe later (`repair_scene_data`), reported there."""
    numbers: list[int | None] = []
    for frame in frames:
        number = None
        if isinstance(frame, dict):
            for key in _NUMBER_KEYS:
                value = frame.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**6:
                    number = value
                    break
        numbers.append(number)
    given = [n for n in numbers if n is not None]
    if not given:
        return list(range(len(frames)))
    if len(given) < len(numbers):
        problems.append(f"only {len(given)} of the {len(numbers)} keyframes have an index; number all of them "
                        "or none")
        return list(range(len(frames)))
    base = 0 if min(given) == 0 else 1
    twice = sorted(n for n, count in Counter(given).items() if count > 1)
    if twice:
        problems.append(f"keyframe number(s) {', '.join(map(str, twice))} appear more than once; give each "
                        "keyframe its own number")
    if given != sorted(given):
        repairs.append(Repair("answer", f"the keyframes were listed in the order {given}; ordered them by number"))
    return [n - base for n in given]


def _hold_boxes(keyframes: list[dict], repairs: list[Repair], problems: list[str]) -> None:
    """An entity given without a box (small models leave one out) takes the box of the same entity (by name) in
    the nearest keyframe that gives one, earlier on a tie, and the repair is reported; with none to take, the
    LLM is asked again."""
    given = [{e["name"]: e["box"] for e in keyframe["entities"] if e["box"] is not None} for keyframe in keyframes]
    for position, keyframe in enumerate(keyframes):
        for entity in keyframe["entities"]:
            if entity["box"] is not None:
                continue
            where = entity.pop("where")
            source = next(((other, given[other][entity["name"]]) for other in nearest_first(position, len(keyframes))
                           if entity["name"] in given[other]), None)
            if source is None:
                problems.append(f"{where}: box must be [x0, y0, x1, y1], got None")
                continue
            entity["box"] = list(source[1])
            repairs.append(Repair(where, f"had no box; held the one of keyframe {keyframes[source[0]]['index'] + 1}"))
    for keyframe in keyframes:
        keyframe["entities"] = [e for e in keyframe["entities"] if e["box"] is not None]


def scene_data_from_answer(data: Any, repairs: list[Repair], raw: str) -> dict:
    """Normalize a scene-level answer's JSON into `Scene` field data (keyframes indexed by position)."""
    data = _unwrap(data, _SCENE_KEYS)
    if not isinstance(data, dict):
        raise PlanningError("the scene plan is not a JSON object", raw=raw)
    background = _text(data.get("background"))
    frames = data.get("keyframes", data.get("frames"))
    if not background:
        raise PlanningError('the scene plan has no "background"', raw=raw, problems=['"background" is missing or empty'])
    if not isinstance(frames, list) or not frames:
        raise PlanningError('the scene plan has no "keyframes" list', raw=raw, problems=['"keyframes" is missing or empty'])
    keyframes = []
    problems: list[str] = []
    indices = _keyframe_indices(frames, repairs, problems)
    for position, frame in enumerate(frames):
        entities = frame.get("entities", frame.get("regions")) if isinstance(frame, dict) else frame
        if not isinstance(entities, list):
            repairs.append(Repair(f"keyframe {position + 1}", "dropped: it has no entity list"))
            continue
        kept = [_entity_data(item, f"keyframe {position + 1}, entity {e + 1}", repairs, problems)
                for e, item in enumerate(entities)]
        keyframes.append({"index": indices[position], "entities": [e for e in kept if e is not None]})
    keyframes.sort(key=lambda keyframe: keyframe["index"])
    _hold_boxes(keyframes, repairs, problems)
    if problems:
        raise PlanningError("the scene plan has unusable boxes:\n" + "\n".join(f"  - {p}" for p in problems),
                            raw=raw, problems=problems)
    if not keyframes:
        raise PlanningError("the scene plan has no usable keyframe", raw=raw, problems=["no keyframe has an entity list"])
    return {"background": background, "keyframes": keyframes}


def parse_scene_answer(raw: str, scene: Scene, characters: Sequence[Character] = (),
                       frame_size: tuple[int, int] | None = None) -> tuple[Scene, list[Repair]]:
    """A scene-level answer -> the planned `Scene`: `scene`'s id and story-level fields with the answer's
    background and keyframes, repaired, validated, with character entities bound to their characters.
    `frame_size` = (width, height) of the story's video, for boxes written in pixels (default 720x480)."""
    repairs: list[Repair] = []
    label = f"scene {scene.id!r}"
    plan = find_plan_string(answer_text(raw))
    if plan is not None:
        try:
            planned, plan_repairs = parse_plan(plan, scene.id, frame_size=frame_size, min_extent=MIN_BOX_EXTENT)
        except (PlanFormatError, StoryValidationError) as error:
            raise PlanningError(f"the plan string is not usable: {error}", raw=raw, problems=[str(error)]) from None
        data = {"background": planned.background, "keyframes": [k.model_dump() for k in planned.keyframes]}
        repairs.extend(plan_repairs)
        repairs.append(Repair(label, "read the paper's plan-string format instead of JSON"))
    else:
        data = scene_data_from_answer(extract_json(raw, repairs, _is_scene_plan), repairs, raw)
    fields = scene.model_dump()
    fields.update(data)
    fields["user_edited"] = []
    try:
        # A near-zero box would be dropped or place nothing: the LLM must give the entity its extent.
        fields, scene_repairs = repair_scene_data(fields, label, frame_size, MIN_BOX_EXTENT)
        repairs.extend(scene_repairs)
        planned = validate_scene(fields, label)
    except StoryValidationError as error:
        raise PlanningError(f"the scene plan is not valid: {error}", raw=raw,
                            problems=[str(p) for p in error.problems]) from None
    if not any(k.entities for k in planned.keyframes):
        raise PlanningError("the scene plan places no entity in any keyframe", raw=raw,
                            problems=["no keyframe has an entity with a name, a description and a box"])
    return bind_characters(planned, characters, repairs), repairs


# ---------------------------------------------------------------- characters

def _what(character: Character) -> set[str]:
    """"a small black cat" -> {"small black cat", "cat"}: what an LLM may call the character instead of its name."""
    words = re.sub(r"(?i)^(a|an|the)\s+", "", character.description.strip().rstrip(".")).casefold().split()
    return {" ".join(words), words[-1]} if words else set()


def find_character(entity: Entity, characters: Sequence[Character]) -> Character | None:
    """The character an entity stands for, by the first rule that finds one: its character id; its name equal
    to the character's name; the character's token in its name, or as the only token in its description; the
    character's name inside its name (not as a possessive: "Mira's broom" is not Mira); its name equal to what
    the character is ("cat" for "a small black cat")."""
    name = entity.name.strip().casefold()
    tokens = [c for c in characters if c.token in entity.description]
    for test in (
        lambda c: entity.character_id == c.id,
        lambda c: name == c.name.strip().casefold(),
        lambda c: c.token in entity.name or tokens == [c],
        lambda c: re.search(rf"(?<!\w){re.escape(c.name.strip())}(?!\w)(?!['’]s\b)", entity.name, re.I) is not None,
        lambda c: name in _what(c),
    ):
        for character in characters:
            if test(character):
                return character
    return None


_STOPWORDS = {"a", "an", "the", "with", "and", "of", "in", "on", "at", "to", "her", "his", "its", "their", "who", "is"}


def _phrases(character: Character) -> list[str]:
    """What may name the character in a caption: its name, then word runs of its description, longest first
    ("a small black cat" -> "small black cat", "small black", "black cat", ..., "cat")."""
    words = re.findall(r"[\w'-]+", character.description)
    runs = [" ".join(words[i:j]) for size in range(len(words), 0, -1) for i in range(len(words) - size + 1)
            for j in [i + size] if not set(w.casefold() for w in words[i:j]) <= _STOPWORDS
            and words[i].casefold() not in _STOPWORDS]
    return [character.name.strip(), *runs]


def with_token(description: str, character: Character) -> str:
    """Put the character's rare token in a region description: "A witch flying" -> "A [v1] witch flying"."""
    if character.token in description:
        return description
    for phrase in _phrases(character):
        match = re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", description, re.I) if phrase else None
        if match is not None:
            return f"{description[: match.start()]}{character.token} {description[match.start():]}"
    return f"{character.token} {character.name}, {description}"


def bind_characters(scene: Scene, characters: Sequence[Character], repairs: list[Repair] | None = None) -> Scene:
    """Every entity that is a character gets its `character_id` and the character's rare token."""
    if not characters:
        return scene
    keyframes = []
    for keyframe in scene.keyframes:
        entities = []
        for entity in keyframe.entities:
            character = find_character(entity, characters)
            if character is not None:
                description = with_token(entity.description, character)
                if repairs is not None and description != entity.description:
                    repairs.append(Repair(f"scene {scene.id!r}, keyframe {keyframe.index + 1}, {entity.name!r}",
                                          f"added character {character.id!r}'s token {character.token}"))
                entity = entity.model_copy(update={"character_id": character.id, "description": description})
            entities.append(entity)
        keyframes.append(keyframe.model_copy(update={"entities": entities}))
    return scene.model_copy(update={"keyframes": keyframes})
