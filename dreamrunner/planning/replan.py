"""Re-planning with locks: new plans that keep every field the user edited.

What is locked (names in `user_edited`, see docs/planning.md):
- Scene: "description", "narration", "motions" (story level), "background", and "keyframes" (the
  whole layout of the scene).
- KeyFrame: "entities" = the user curated this keyframe's entity list (added or deleted entities):
  the re-planned keyframe has exactly the user's entities, each updated from the new plan where it
  matches one and not edited, so a deleted entity stays deleted and an added one stays.
- Entity: "name", "motion", "description", "box", "character_id".

Entities of the old and new plan are matched per keyframe by identity: the character id for
characters, else the name (case-insensitive), then by order among equal identities. In a keyframe
that is not curated, the new plan's entities are taken (with the edited fields of their matches), and
old entities the user edited that the new plan lacks are kept too.

Boxes the user placed on some keyframes of a track (the entity across keyframes) anchor it: the
new plan's boxes on the other keyframes are shifted by an offset that varies linearly from one anchor's
offset (its edited box minus the plan's box there) to the next, so the track keeps the plan's movement and
passes smoothly through every edited box (no zigzag between edited and planned keyframes). Where the new
plan lacks the entity at an anchor, the boxes between two anchors are interpolated linearly.

`replace` names fields (at any level) whose edits the user wants replaced by the new plan; "*"
replaces them all. Fields that are not plan fields (approved clips, prior bindings, renders, the scene's
own render settings) are always carried over.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..story import Entity, KeyFrame, Scene, Story, entity_key
from .base import Planner, PlanningError, story_from_outline, with_scenes

SCENE_STORY_FIELDS = ("description", "narration", "motions")
SCENE_FIELDS = (*SCENE_STORY_FIELDS, "background", "keyframes")
ENTITY_FIELDS = ("name", "motion", "description", "box", "character_id")
KEYFRAME_FIELDS = ("entities",)
#: Every name `replace` accepts.
REPLACEABLE = frozenset({*SCENE_FIELDS, *KEYFRAME_FIELDS, *ENTITY_FIELDS, "*"})


def _check(replace: Iterable[str]) -> frozenset[str]:
    replace = frozenset(replace)
    unknown = sorted(replace - REPLACEABLE)
    if unknown:
        raise PlanningError(f"cannot replace {unknown}: the fields that can be replaced are {sorted(REPLACEABLE)}")
    return frozenset(REPLACEABLE) if "*" in replace else replace


def _locks(obj, replace: frozenset[str]) -> list[str]:
    return [f for f in obj.user_edited if f not in replace]


def _keyed(entities: list[Entity]) -> dict[tuple[str, int], Entity]:
    seen: dict[str, int] = {}
    keyed = {}
    for entity in entities:
        key = entity_key(entity)
        keyed[(key, seen.get(key, 0))] = entity
        seen[key] = seen.get(key, 0) + 1
    return keyed


def merge_entity(old: Entity | None, new: Entity | None, replace: frozenset[str]) -> Entity:
    if old is None:
        return new
    locks = _locks(old, replace)
    if new is None:
        return old.model_copy(update={"user_edited": locks})
    update = {field: getattr(old, field) for field in locks if field in ENTITY_FIELDS}
    return new.model_copy(update={**update, "user_edited": locks})


def merge_keyframe(old: KeyFrame, new: KeyFrame, replace: frozenset[str]) -> KeyFrame:
    olds, news = _keyed(old.entities), _keyed(new.entities)
    locks = _locks(old, replace)
    if "entities" in locks:
        entities = [merge_entity(entity, news.get(key), replace) for key, entity in olds.items()]
    else:
        entities = [merge_entity(olds.get(key), entity, replace) for key, entity in news.items()]
        entities += [entity.model_copy(update={"user_edited": _locks(entity, replace)})
                     for key, entity in olds.items() if key not in news and _locks(entity, replace)]
    return KeyFrame(index=new.index, entities=entities, user_edited=locks)


def merge_scene(old: Scene, new: Scene, replace: Iterable[str] = frozenset()) -> Scene:
    """`new` (a fresh plan of `old`) with every field the user edited in `old` kept, unless replaced."""
    replace = _check(replace)
    locks = _locks(old, replace)
    data = {field: getattr(new if field not in locks else old, field) for field in SCENE_FIELDS}
    if "keyframes" not in locks:
        data["keyframes"] = [merge_keyframe(o, n, replace) for o, n in zip(old.keyframes, new.keyframes)]
        smooth_tracks(data["keyframes"], new.keyframes)
    carried = {f: getattr(old, f) for f in ("approved_clips", "prior_bindings", "renders", "chosen_render", "render")}
    scene = Scene(id=old.id, **data, **carried, user_edited=locks)
    return Scene.model_validate(scene.model_dump())


def _tracks(keyframes: list[KeyFrame]) -> dict[tuple[str, int], dict[int, Entity]]:
    tracks: dict[tuple[str, int], dict[int, Entity]] = {}
    for k, keyframe in enumerate(keyframes):
        for key, entity in _keyed(keyframe.entities).items():
            tracks.setdefault(key, {})[k] = entity
    return tracks


def _shifted(box, offset) -> tuple[float, float, float, float]:
    """`box` moved by `offset` (per edge), then slid back inside the frame keeping its size."""
    x0, y0, x1, y1 = (v + d for v, d in zip(box, offset))
    width, height = min(max(x1 - x0, 0.01), 1.0), min(max(y1 - y0, 0.01), 1.0)
    x0, y0 = min(max(x0, 0.0), 1.0 - width), min(max(y0, 0.0), 1.0 - height)
    return tuple(round(v, 4) for v in (x0, y0, x0 + width, y0 + height))  # type: ignore[return-value]


def smooth_tracks(merged: list[KeyFrame], planned: list[KeyFrame]) -> None:
    """Fit each track's planned boxes through its edited ones (see the module notes). Changes `merged`
    in place; edited boxes and tracks without edited boxes are left as they are."""
    plan = _tracks(planned)
    for key, track in _tracks(merged).items():
        anchors = sorted(k for k, e in track.items() if e.is_edited("box"))
        if not anchors or len(anchors) == len(track):
            continue
        planned_boxes = {k: e.box for k, e in plan.get(key, {}).items()}
        offsets = {a: (tuple(v - p for v, p in zip(track[a].box, planned_boxes[a])) if a in planned_boxes else None)
                   for a in anchors}
        for k, entity in track.items():
            if entity.is_edited("box"):
                continue
            before = [a for a in anchors if a < k]
            after = [a for a in anchors if a > k]
            a, b = (before[-1] if before else None), (after[0] if after else None)
            if a is not None and b is not None:
                t = (k - a) / (b - a)
                if offsets[a] is not None and offsets[b] is not None and k in planned_boxes:
                    offset = tuple((1 - t) * u + t * v for u, v in zip(offsets[a], offsets[b]))
                    box = _shifted(planned_boxes[k], offset)
                else:
                    box = _shifted(tuple((1 - t) * u + t * v for u, v in zip(track[a].box, track[b].box)),
                                   (0.0,) * 4)
            else:
                nearest = a if a is not None else b
                if offsets[nearest] is None or k not in planned_boxes:
                    continue
                box = _shifted(planned_boxes[k], offsets[nearest])
            entity.box = box


def replan_scene(story: Story, scene_id: str, planner: Planner, replace: Iterable[str] = frozenset()) -> Story:
    """A new story whose scene `scene_id` has a new frame-level plan (made from its current story-level
    fields), keeping the user's edits except those named in `replace`. `story` is not modified."""
    replace = _check(replace)
    try:
        old = story.scene(scene_id)
    except KeyError:
        raise PlanningError(f"the story has no scene {scene_id!r}") from None
    merged = merge_scene(old, planner.plan_scene(story, scene_id), replace)
    return with_scenes(story, [merged if s.id == scene_id else s for s in story.scenes])


def replan_story(story: Story, planner: Planner, replace: Iterable[str] = frozenset()) -> Story:
    """A new plan of the whole story (same number of scenes, same scene ids), keeping the user's edits:
    edited story-level fields of a scene stay and its new frame-level plan is made from them; then frame
    edits are kept as in `replan_scene`. `story` is not modified. An empty story is planned afresh."""
    replace = _check(replace)
    if not story.scenes:
        fresh = planner.plan_story(story.topic, story.characters)
        return with_scenes(story.model_copy(update={"title": story.title or fresh.title}), fresh.scenes)
    outline = planner.plan_outline(story.topic, story.characters, num_scenes=len(story.scenes))
    if len(outline.scenes) != len(story.scenes):
        raise PlanningError(f"the planner gave {len(outline.scenes)} scenes for a story of {len(story.scenes)}")
    planned = story_from_outline(outline, story.topic, story.characters)
    # Story level first: the new outline, except what the user wrote.
    staged = []
    for old, new in zip(story.scenes, planned.scenes):
        locks = _locks(old, replace)
        update = {f: getattr(new, f) for f in SCENE_STORY_FIELDS if f not in locks}
        staged.append(old.model_copy(update=update))
    staged_story = with_scenes(story, staged)
    # Scene level from the merged story-level fields.
    scenes = [merge_scene(scene, planner.plan_scene(staged_story, scene.id), replace) for scene in staged_story.scenes]
    return with_scenes(story.model_copy(update={"title": story.title or outline.title}), scenes)
