"""Checks of a parsed scene plan for what matters when it is rendered, and their local repairs.

A plan can be valid and still render badly. `rendering_problems` finds, in words the LLM can act on:
- a character named in the scene (description or narration) placed in no keyframe;
- an entity with a motion whose box never moves (the motion prior has nothing to follow);
- a character's description carrying another character's token when their boxes do not overlap (the
  other character's subject LoRA would fire in this region);
- keyframes mostly held from a neighbour (missing or identical: the layout does not move);
- boxes copied from the prompt's worked example.
The LLM planner sends such problems back once; `repair_for_rendering` then repairs what can be repaired
here (places a missing character, moves a still mover, strips a foreign token) and names what it kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..story import NUM_KEYFRAMES, Box, Character, Entity, Scene, entity_key
from ..validation import Repair
from .parsing import with_token
from .prompts import SCENE_EXAMPLE_ANSWER

# Motions that keep an entity in place: their box may stay still.
_STILL = re.compile(r"\b(sit|sitt|stand|sleep|watch|wait|lie|lying|rest|look|stay|hold|read|talk|listen|think|"
                    r"smil|cry|laugh|sing|eat|drink|perch|float|hover)", re.I)
_EXAMPLE_BOXES = {tuple(round(v, 3) for v in e["box"]) for k in SCENE_EXAMPLE_ANSWER["keyframes"] for e in k["entities"]}


def _named(character: Character, scene: Scene) -> bool:
    text = f"{scene.description} {scene.narration}"
    return re.search(rf"(?<!\w){re.escape(character.name.strip())}(?!\w)", text, re.I) is not None


def _overlap(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _tracks(scene: Scene) -> dict[str, list[Entity]]:
    tracks: dict[str, list[Entity]] = {}
    for keyframe in scene.keyframes:
        for entity in keyframe.entities:
            tracks.setdefault(entity_key(entity), []).append(entity)
    return tracks


def _still_movers(scene: Scene) -> list[Entity]:
    """The first entity of each track that has a motion that moves and the same box in every keyframe."""
    return [track[0] for track in _tracks(scene).values()
            if len(track) >= 2 and track[0].motion and not _STILL.search(track[0].motion)
            and all(tuple(e.box) == tuple(track[0].box) for e in track)]


def _foreign_tokens(scene: Scene, characters: Sequence[Character]) -> list[tuple[int, Entity, Character]]:
    found = []
    by_id = {c.id: c for c in characters}
    for keyframe in scene.keyframes:
        for entity in keyframe.entities:
            if entity.character_id not in by_id:
                continue
            for other in characters:
                if other.id == entity.character_id or other.token not in entity.description:
                    continue
                shares = any(e.character_id == other.id and _overlap(e.box, entity.box) for e in keyframe.entities)
                if not shares:
                    found.append((keyframe.index, entity, other))
    return found


def _same_layout(a, b) -> bool:
    return [(e.name, tuple(e.box)) for e in a.entities] == [(e.name, tuple(e.box)) for e in b.entities]


def rendering_problems(scene: Scene, characters: Sequence[Character]) -> list[str]:
    """What would render badly in a planned scene, each as an instruction for the LLM (empty: nothing)."""
    problems = []
    placed = {e.character_id for k in scene.keyframes for e in k.entities if e.character_id}
    for character in characters:
        if character.id not in placed and _named(character, scene):
            problems.append(f"{character.name} is in this scene but in no keyframe: add an entity named "
                            f"{character.name!r} to every keyframe where {character.name} is visible")
    for entity in _still_movers(scene):
        problems.append(f"{entity.name!r} is {entity.motion} but its box is the same in every keyframe: move its "
                        "box from keyframe to keyframe in the direction of the motion")
    for index, entity, other in _foreign_tokens(scene, characters):
        problems.append(f"keyframe {index + 1}: the description of {entity.name!r} holds {other.token}, the token "
                        f"of {other.name}, whose box does not overlap it: use only {entity.name}'s own token")
    # A keyframe the answer left out is held from a neighbour (`repair_scene_data`): it repeats it too.
    held = sum(1 for a, b in zip(scene.keyframes, scene.keyframes[1:]) if _same_layout(a, b))
    if held >= NUM_KEYFRAMES // 2:
        problems.append(f"{held} of the {NUM_KEYFRAMES} keyframes are missing or repeat the one before: give "
                        f"all {NUM_KEYFRAMES} keyframes, each with the boxes at that moment")
    copied = sum(1 for k in scene.keyframes for e in k.entities if tuple(round(v, 3) for v in e.box) in _EXAMPLE_BOXES)
    if copied >= 3:
        problems.append(f"{copied} boxes are copied from the example answer: place this scene's own entities "
                        "where they are in this scene")
    return problems


def _clamped_shift(box: Box, dx: float) -> tuple[float, float, float, float]:
    dx = max(-box[0], min(1.0 - box[2], dx))
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def repair_for_rendering(scene: Scene, characters: Sequence[Character]) -> tuple[Scene, list[Repair]]:
    """The scene with what `rendering_problems` finds repaired where it can be, and every change (and every
    problem kept as it is) as a `Repair`. Returns `scene` itself when there is nothing to do."""
    label = f"scene {scene.id!r}"
    repairs: list[Repair] = []
    keyframes = [k.model_copy(deep=True) for k in scene.keyframes]
    # A foreign token: left out of the description.
    for index, entity, other in _foreign_tokens(scene, characters):
        for e in keyframes[index].entities:
            if e.name == entity.name and e.box == entity.box and other.token in e.description:
                e.description = " ".join(e.description.replace(other.token, " ").split())
                repairs.append(Repair(f"{label}, keyframe {index + 1}, {e.name!r}",
                                      f"left out {other.name}'s token {other.token} (their boxes do not overlap)"))
    # A mover whose box stands still: moved across the frame, toward the side with more room.
    for still in _still_movers(scene):
        key = entity_key(still)
        step = 0.06 if still.box[0] < 1.0 - still.box[2] else -0.06
        for keyframe in keyframes:
            for e in keyframe.entities:
                if entity_key(e) == key:
                    e.box = _clamped_shift(e.box, step * keyframe.index)
        repairs.append(Repair(f"{label}, {still.name!r}", f"is {still.motion} but its box never moved; moved it "
                                                          f"{'right' if step > 0 else 'left'} across the keyframes"))
    # A named character placed nowhere: placed where the frame is emptiest, with the scene's first motion.
    placed = {e.character_id for k in scene.keyframes for e in k.entities if e.character_id}
    for character in characters:
        if character.id in placed or not _named(character, scene):
            continue
        others = [e.box for k in keyframes for e in k.entities]
        x = min((0.05, 0.4, 0.7), key=lambda x0: sum(_overlap((x0, 0.4, x0 + 0.25, 0.95), b) for b in others))
        motion = scene.motions[0] if scene.motions else None
        step = 0.0 if motion is None or _STILL.search(motion) else (0.03 if x < 0.5 else -0.03)
        description = with_token(f"{character.description or character.name}"
                                 + (f" {motion}" if motion else ""), character)
        for keyframe in keyframes:
            box = _clamped_shift((x, 0.4, x + 0.25, 0.95), step * keyframe.index)
            keyframe.entities.append(Entity(name=character.name, character_id=character.id, motion=motion,
                                            description=description, box=box))
        repairs.append(Repair(f"{label}, {character.name!r}", "is named in the scene but was in no keyframe; placed "
                                                              "in every keyframe"))
    repaired = scene.model_copy(update={"keyframes": keyframes}) if repairs else scene
    for problem in rendering_problems(repaired, characters):
        repairs.append(Repair(label, f"kept as planned: {problem.split(':')[0]}"))
    return repaired, repairs
