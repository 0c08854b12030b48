"""User edits that re-planning respects: each helper returns a new story with the edited fields named in
`user_edited`, the mechanism `replan_scene` / `replan_story` read. The editor (ui/) calls these rather
than setting fields itself, so edits are always recorded the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..story import Entity, Story
from ..validation import validate_story
from .base import PlanningError
from .replan import ENTITY_FIELDS, SCENE_FIELDS, entity_key

EDITABLE_SCENE_FIELDS = tuple(f for f in SCENE_FIELDS if f != "keyframes")


def _scene_index(story: Story, scene_id: str) -> int:
    for i, scene in enumerate(story.scenes):
        if scene.id == scene_id:
            return i
    raise PlanningError(f"the story has no scene {scene_id!r}")


def _mark(node: dict, fields: Iterable[str]) -> None:
    node["user_edited"] = sorted({*node.get("user_edited", []), *fields})


def _keyframe(scene: dict, keyframe: int) -> dict:
    if not 0 <= keyframe < len(scene["keyframes"]):
        raise PlanningError(f"scene {scene['id']!r} has no keyframe {keyframe}")
    return scene["keyframes"][keyframe]


def edit_scene(story: Story, scene_id: str, **fields: Any) -> Story:
    """Set scene fields (description, narration, motions, background) as the user's."""
    unknown = sorted(set(fields) - set(EDITABLE_SCENE_FIELDS))
    if unknown:
        raise PlanningError(f"cannot edit {unknown} of a scene; editable: {list(EDITABLE_SCENE_FIELDS)}")
    data = story.model_dump()
    scene = data["scenes"][_scene_index(story, scene_id)]
    scene.update(fields)
    _mark(scene, fields)
    return validate_story(data)


def edit_entity(story: Story, scene_id: str, keyframe: int, entity: int, **fields: Any) -> Story:
    """Set fields (name, motion, description, box, character_id) of entity number `entity` of a keyframe."""
    unknown = sorted(set(fields) - set(ENTITY_FIELDS))
    if unknown:
        raise PlanningError(f"cannot edit {unknown} of an entity; editable: {list(ENTITY_FIELDS)}")
    data = story.model_dump()
    entities = _keyframe(data["scenes"][_scene_index(story, scene_id)], keyframe)["entities"]
    if not 0 <= entity < len(entities):
        raise PlanningError(f"keyframe {keyframe} of scene {scene_id!r} has no entity {entity}")
    entities[entity].update({k: list(v) if k == "box" else v for k, v in fields.items()})
    _mark(entities[entity], fields)
    return validate_story(data)


def add_entity(story: Story, scene_id: str, entity: Entity, keyframes: Iterable[int] | None = None) -> Story:
    """Add a user's entity to the given keyframes (all by default); it survives re-planning."""
    data = story.model_dump()
    scene = data["scenes"][_scene_index(story, scene_id)]
    added = entity.model_dump()
    _mark(added, [f for f in ENTITY_FIELDS if added.get(f) is not None])
    for index in range(len(scene["keyframes"])) if keyframes is None else keyframes:
        frame = _keyframe(scene, index)
        frame["entities"].append(dict(added))
        _mark(frame, ["entities"])
    return validate_story(data)


def remove_entity(story: Story, scene_id: str, entity: Entity, keyframes: Iterable[int] | None = None) -> Story:
    """Delete an entity (matched by character id, else name) from the given keyframes (all by default);
    re-planning will not bring it back there."""
    data = story.model_dump()
    scene = data["scenes"][_scene_index(story, scene_id)]
    key = entity_key(entity)
    removed = 0
    for index in range(len(scene["keyframes"])) if keyframes is None else keyframes:
        frame = _keyframe(scene, index)
        kept = [e for e in frame["entities"] if entity_key(Entity.model_validate(e)) != key]
        removed += len(frame["entities"]) - len(kept)
        frame["entities"] = kept
        _mark(frame, ["entities"])
    if not removed:
        raise PlanningError(f"scene {scene_id!r} has no entity {entity.name!r} in those keyframes")
    return validate_story(data)
