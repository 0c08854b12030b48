"""From an LLM's raw answer to a validated plan, repairing only what is safe to repair.

Safe repairs, each reported: a code fence or prose around the JSON, single quotes / trailing commas
(a Python-literal reading), the paper's plan-string format instead of JSON, a missing motion (-> none),
a missing description (-> the name), "none" as a motion, and everything `dreamrunner.validation`
repairs (boxes swapped or clamped into [0, 1], a keyframe count other than 6). A cut-off answer is NOT
completed by guessing: the planner asks again, telling the LLM what was wrong. Anything else raises
`PlanningError` with the raw answer attached.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

from ..plan_format import parse_plan
from ..story import Character, Entity, Scene
from ..validation import Repair, StoryValidationError, repair_scene_data, validate_scene
from .base import MAX_SCENES, MIN_SCENES, PlanningError
from .schema import SceneOutline, StoryOutline

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.S)
_NO_MOTION = {"", "none", "null", "n/a", "no motion", "static", "still"}


def extract_json(raw: str, repairs: list[Repair]) -> Any:
    """The first JSON object (or array) in `raw`, tolerating fences and text around it."""
    if not isinstance(raw, str) or not raw.strip():
        raise PlanningError("the answer is empty", raw=raw if isinstance(raw, str) else None)
    text = raw.strip()
    candidates = [text]
    fenced = _FENCE.search(text)
    if fenced is not None:
        candidates.insert(0, fenced.group(1).strip())
    last_error = "no JSON object found"
    for candidate in candidates:
        start = _first_bracket(candidate)
        if start is None:
            continue
        body = candidate[start:]
        try:
            value, end = json.JSONDecoder().raw_decode(body)
        except json.JSONDecodeError as error:
            last_error = _describe_decode_error(body, error)
        except RecursionError:
            last_error = "the JSON is nested too deeply"
            continue
        else:
            if candidate is not text or start or body[end:].strip():
                repairs.append(Repair("answer", "took the JSON out of the text around it"))
            return value
        literal = _python_literal(body)
        if literal is not None:
            repairs.append(Repair("answer", "read it as a Python literal (single quotes or trailing commas)"))
            return literal
    raise PlanningError(f"the answer is not valid JSON: {last_error}", raw=raw)


def _first_bracket(text: str) -> int | None:
    positions = [p for p in (text.find("{"), text.find("[")) if p >= 0]
    return min(positions) if positions else None


def _describe_decode_error(body: str, error: json.JSONDecodeError) -> str:
    if error.pos >= len(body.rstrip()) - 1 or "Unterminated string" in error.msg:
        return f"it ends before the JSON is complete (cut off after {len(body)} characters?)"
    return f"{error.msg} at line {error.lineno}, column {error.colno}"


def _python_literal(body: str) -> Any:
    end = max(body.rfind("}"), body.rfind("]"))
    if end < 0 or len(body) > 200_000:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in LLM text are not the user's concern
            value = ast.literal_eval(body[: end + 1])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, (dict, list)) else None


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

def parse_story_answer(raw: str, num_scenes: int | None = None) -> tuple[StoryOutline, list[Repair]]:
    """A story-level answer -> `StoryOutline` (scene count checked: `num_scenes`, else 5-8)."""
    repairs: list[Repair] = []
    data = _unwrap(extract_json(raw, repairs), ("scenes",))
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
    if num_scenes is not None and len(data["scenes"]) != num_scenes:
        problems.append(f"expected exactly {num_scenes} scenes, got {len(data['scenes'])}")
    elif num_scenes is None and not MIN_SCENES <= len(data["scenes"]) <= MAX_SCENES:
        problems.append(f"expected {MIN_SCENES} to {MAX_SCENES} scenes, got {len(data['scenes'])}")
    if problems:
        raise PlanningError("the story plan is not usable:\n" + "\n".join(f"  - {p}" for p in problems),
                            raw=raw, problems=problems)
    title = _text(data.get("title")) or ""
    return StoryOutline(title=title, scenes=scenes), repairs


# ---------------------------------------------------------------- scene level

def _entity_data(item: Any, where: str, repairs: list[Repair]) -> dict | None:
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (list, tuple)) and len(item[0]) == 3:
        # The paper's form: [[name, motion, description], [x0, y0, x1, y1]]
        (name, motion, description), box = item
        item = {"name": name, "motion": motion, "description": description, "box": box}
    if not isinstance(item, dict):
        repairs.append(Repair(where, "dropped: not an entity object"))
        return None
    name, description = _text(item.get("name")), _text(item.get("description"))
    box = item.get("box", item.get("bbox"))
    if isinstance(box, dict):
        box = [box.get(k) for k in ("x0", "y0", "x1", "y1")]
    if isinstance(box, (list, tuple)) and len(box) == 4:
        try:
            box = [float(v) for v in box]
        except (TypeError, ValueError):
            pass
    if not name and not description:
        repairs.append(Repair(where, "dropped: no name and no description"))
        return None
    if not description:
        description = name
        repairs.append(Repair(where, "description was missing; used the name"))
    if not name:
        name = description
        repairs.append(Repair(where, "name was missing; used the description"))
    motion = item.get("motion")
    motion = _text(motion) if motion is not None else None
    if motion is not None and motion.lower() in _NO_MOTION:
        motion = None
    return {"name": name, "motion": motion, "description": description, "box": box}


def scene_data_from_answer(data: Any, repairs: list[Repair], raw: str) -> dict:
    """Normalize a scene-level answer's JSON into `Scene` field data (keyframes indexed by position)."""
    data = _unwrap(data, ("keyframes", "frames", "background"))
    if not isinstance(data, dict):
        raise PlanningError("the scene plan is not a JSON object", raw=raw)
    background = _text(data.get("background"))
    frames = data.get("keyframes", data.get("frames"))
    if not background:
        raise PlanningError('the scene plan has no "background"', raw=raw, problems=['"background" is missing or empty'])
    if not isinstance(frames, list) or not frames:
        raise PlanningError('the scene plan has no "keyframes" list', raw=raw, problems=['"keyframes" is missing or empty'])
    keyframes = []
    for position, frame in enumerate(frames):
        entities = frame.get("entities", frame.get("regions")) if isinstance(frame, dict) else frame
        if not isinstance(entities, list):
            repairs.append(Repair(f"keyframe {position + 1}", "dropped: it has no entity list"))
            continue
        kept = [_entity_data(item, f"keyframe {position + 1}, entity {e + 1}", repairs) for e, item in enumerate(entities)]
        keyframes.append({"index": position, "entities": [e for e in kept if e is not None]})
    if not keyframes:
        raise PlanningError("the scene plan has no usable keyframe", raw=raw, problems=["no keyframe has an entity list"])
    return {"background": background, "keyframes": keyframes}


def parse_scene_answer(raw: str, scene: Scene, characters: Sequence[Character] = ()) -> tuple[Scene, list[Repair]]:
    """A scene-level answer -> the planned `Scene`: `scene`'s id and story-level fields with the answer's
    background and keyframes, repaired, validated, with character entities bound to their characters."""
    repairs: list[Repair] = []
    label = f"scene {scene.id!r}"
    if isinstance(raw, str) and re.search(r"^\s*\"?Background\s*:", raw, re.M) and "Frame_1" in raw:
        from ..plan_format import PlanFormatError
        try:
            planned, plan_repairs = parse_plan(raw[raw.index("Background"):].strip().strip("`"), scene.id)
        except (PlanFormatError, StoryValidationError) as error:
            raise PlanningError(f"the plan string is not usable: {error}", raw=raw, problems=[str(error)]) from None
        data = {"background": planned.background, "keyframes": [k.model_dump() for k in planned.keyframes]}
        repairs.extend(plan_repairs)
        repairs.append(Repair(label, "read the paper's plan-string format instead of JSON"))
    else:
        data = scene_data_from_answer(extract_json(raw, repairs), repairs, raw)
    fields = scene.model_dump()
    fields.update(data)
    fields["user_edited"] = []
    fields, scene_repairs = repair_scene_data(fields, label)
    repairs.extend(scene_repairs)
    try:
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
