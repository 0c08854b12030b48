"""Every change a user can make to a story, in one place: the editor (`ui/`) and the CLI both call these.

Each function changes the story in place (or the project's media, where files come in) and raises `EditError`
naming what is wrong. Call them inside `Project.edit()` (CLI, library) or `Workspace.edit()` (editor): those
check the whole story afterwards, put it back as it was on any error, and save. A field a user sets by hand is
named in its `user_edited`, so re-planning keeps it (docs/planning.md).

Scenes are named by id; `find_scene` also takes a 1-based number, the way the CLI lets users address them.
Entities are named by their position in a keyframe (0-based); `all_keyframes=True` applies a change to the
same entity (its `entity_key`: character, else name) in every keyframe of the scene, its track.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import DreamRunnerError
from .project import Project
from .story import (SCENE_RENDER_FIELDS, Box, Character, ClipRef, Entity, KeyFrame, Prior, PriorBinding,
                    RenderOverrides, RenderResult, RenderSettings, Scene, Story, VideoSettings, entity_key,
                    scene_render_settings, slug, unique_id)
from .validation import first_message
from .backends import BACKENDS, backend_video_defaults, temporal_patch, vae_spatial
from .video_presets import VideoPresetError, check_video, parse_size

SCENE_FIELDS = ("description", "narration", "motions", "background")
ENTITY_FIELDS = ("name", "character_id", "motion", "description", "box")
CLIPS_DIR = "clips"
CHARACTERS_DIR = "characters"
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi"}
DEFAULT_BOX = (0.35, 0.3, 0.65, 0.8)


class EditError(DreamRunnerError):
    pass


def _set(obj: Any, field: str, value: Any, where: str) -> bool:
    """Assign a validated field; True when it changed. Pydantic's message is reshaped to name the place."""
    if getattr(obj, field) == value:
        return False
    try:
        setattr(obj, field, value)
    except ValueError as error:
        raise EditError(f"{where}, {field}: {first_message(error)}") from None
    return True


# -- story ---------------------------------------------------------------------------------------------

def set_story_fields(story: Story, **fields: str) -> list[str]:
    """Title and topic. Returns the fields that changed."""
    unknown = sorted(set(fields) - {"title", "topic"})
    if unknown:
        raise EditError(f"cannot set {unknown} of a story; settable: title, topic")
    return [f for f, v in fields.items() if _set(story, f, (v or "").strip(), "story")]


def set_setting(story: Story, path: str, value: Any) -> str | None:
    """One setting by its dotted path under `story.settings`, e.g. ``render.steps`` or ``prior.max_steps``.
    Returns a note for the user where the change also changed other settings (`set_backend`), else None."""
    *parents, field = path.split(".")
    node: Any = story.settings
    for part in parents:
        node = getattr(node, part, None)
        if node is None:
            break
    if node is None or field not in type(node).model_fields:
        raise EditError(f"there is no setting {path!r}; settings are " + ", ".join(
            f"{group}.{name}" for group in ("video", "render", "prior")
            for name in type(getattr(story.settings, group)).model_fields))
    if node is story.settings.render and field == "backend":
        return set_backend(story, value)
    if node is story.settings.render:
        set_render_settings(story, **{field: value})  # its rules (seed after seeds, ...) in one place
        return None
    _set(node, field, value, f"setting {path}")
    if node is story.settings.video:
        video = story.settings.video
        check_video(story.settings.render.backend, video.num_frames, video.height, video.width)
    return None


def backend_geometry(backend: str) -> dict:
    """The `VideoSettings` fields a backend's model was made for: its defaults, its VAE's spatial factor and its
    temporal patch."""
    return {**backend_video_defaults(backend), "patch_size_t": temporal_patch(backend),
            "vae_spatial": vae_spatial(backend)}


def set_backend(story: Story, backend: str) -> str | None:
    """The story's render backend. Where the video settings are not the new model's kind (`patch_size_t`) or
    their size or frame count is not one it makes (`video_presets.check_video`), they switch to the model's own
    (`backend_geometry`) in the same change. Returns a note saying what the video settings became, else None.
    Raises EditError for a name that is not a backend."""
    if backend not in BACKENDS:
        raise EditError(f"render.backend {backend!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    set_render_settings(story, backend=backend)
    video = story.settings.video
    if (mismatch := geometry_mismatch(video, backend)) is None:
        return None
    story.settings.video = after = VideoSettings.model_validate({**video.model_dump(), **backend_geometry(backend)})
    return (f"video settings switched to {backend}'s own: {_geometry_words(after)} (were "
            f"{_geometry_words(video)}; {mismatch})")


def geometry_mismatch(video: VideoSettings, backend: str) -> str | None:
    """Why `backend`'s model does not make `video` (its kind, `patch_size_t` or `vae_spatial`, or its size or
    frame count, `video_presets.check_video`), else None."""
    if video.patch_size_t != temporal_patch(backend):
        return f"video.patch_size_t = {video.patch_size_t}: {backend} takes {temporal_patch(backend)}"
    if video.vae_spatial != vae_spatial(backend):
        return f"video.vae_spatial = {video.vae_spatial}: {backend} takes {vae_spatial(backend)}"
    try:
        check_video(backend, video.num_frames, video.height, video.width)
    except VideoPresetError as error:
        return str(error)
    return None


def _geometry_words(video: VideoSettings) -> str:
    return f"{video.num_frames} frames at {video.fps} fps, {video.width}x{video.height}"


def _named(error: ValueError) -> str:
    """pydantic's first message led by the field it is about (a check of several fields names them itself)."""
    errors = getattr(error, "errors", None)
    place = ".".join(str(part) for part in errors()[0]["loc"]) if callable(errors) else ""
    return f"{place}: {first_message(error)}" if place else first_message(error)


def seed_fields(seeds: list[int]) -> dict:
    """The render-settings fields a list of seeds given by a user means: one seed is `seed` (its variants count
    on from it), several are the explicit `seeds`."""
    if not seeds:
        raise EditError("give at least one seed")
    return {"seed": seeds[0]} if len(seeds) == 1 else {"seeds": list(seeds)}


def set_render_settings(story: Story, scene_id: str | None = None, **fields: Any) -> list[str]:
    """Render settings (`RenderSettings` fields): the story default, or with `scene_id` that scene's override
    (`SCENE_RENDER_FIELDS`), where a field set to None takes the story default again and an override left
    with no field is dropped. Naming `seed` or `variants` without `seeds` drops an explicit seeds list. All
    fields are checked together (e.g. use_dynamic_cfg needs scheduler 'dpm'). Returns the fields that changed."""
    if fields.keys() & {"seed", "variants"} and "seeds" not in fields:
        fields = {**fields, "seeds": None if scene_id is not None else []}
    if scene_id is None:
        unknown = sorted(set(fields) - set(RenderSettings.model_fields))
        if unknown:
            raise EditError(f"there is no render setting {', '.join(unknown)}; render settings are "
                            f"{', '.join(RenderSettings.model_fields)}")
        before = story.settings.render
        try:
            after = RenderSettings.model_validate({**before.model_dump(), **fields})
        except ValueError as error:
            raise EditError(f"render settings, {_named(error)}") from None
        story.settings.render = after
        return [f for f in fields if getattr(after, f) != getattr(before, f)]
    scene = find_scene(story, scene_id)
    unknown = sorted(set(fields) - set(SCENE_RENDER_FIELDS))
    if unknown:
        raise EditError(f"scene {scene.id!r}: {', '.join(unknown)} cannot differ per scene; a scene's own render "
                        f"settings are {', '.join(SCENE_RENDER_FIELDS)} (the model, dtype and frame geometry are "
                        f"the story's)")
    before = scene.render or RenderOverrides()
    try:
        after = RenderOverrides.model_validate({**before.given(), **fields})
        merged = scene.model_copy(update={"render": after})
        scene_render_settings(story, merged)
    except ValueError as error:
        raise EditError(f"scene {scene.id!r}, render settings, {_named(error)}") from None
    scene.render = after if after.given() else None
    return [f for f in fields if getattr(after, f) != getattr(before, f)]


def use_story_render_settings(story: Story, scene_id: str) -> bool:
    """Drop a scene's own render settings: it renders with the story default. True when it had some."""
    scene = find_scene(story, scene_id)
    had = scene.render is not None
    scene.render = None
    return had


def set_video(story: Story, size: str | None = None, num_frames: int | None = None) -> list[str]:
    """Frame size (WIDTHxHEIGHT or a preset name of the story's backend, `video_presets.MODEL_VIDEO`) and frame
    count, held to what the story's backend makes (`video_presets.VideoPresetError` names what it does).
    Returns the fields that changed."""
    before = story.settings.video
    height, width = parse_size(size, story.settings.render.backend) if size else (before.height, before.width)
    frames = before.num_frames if num_frames is None else num_frames
    try:
        after = VideoSettings.model_validate({**before.model_dump(), "num_frames": frames, "height": height,
                                              "width": width})
    except ValueError as error:
        raise EditError(f"video settings, {_named(error)}") from None
    check_video(story.settings.render.backend, after.num_frames, after.height, after.width)
    story.settings.video = after
    return [f for f in ("num_frames", "height", "width") if getattr(after, f) != getattr(before, f)]


def adopt_plan(story: Story, planned: Story) -> Story:
    """A newly planned story (Plan story) in place of `story`, keeping what does not depend on the old plan:
    the title (unless the story had none), characters' reference images, settings, trained priors (bound
    again, at their old scale, to the new scenes they belong to), and approved clips, which go to every new
    scene that has their motion. What `plan_replaces` lists is lost (undo or project.json.bak bring it back)."""
    images = {c.id: c.reference_images for c in story.characters}
    characters = [c.model_copy(update={"reference_images": images.get(c.id, c.reference_images)})
                  for c in planned.characters]
    clips: dict[str, dict[str, ClipRef]] = {}
    for scene in story.scenes:
        for clip in scene.approved_clips:
            clips.setdefault(clip.motion, {}).setdefault(clip.id, clip)
    scenes = [scene.model_copy(update={"approved_clips": [c.model_copy() for m in scene.motions
                                                          for c in clips.get(m, {}).values()]})
              for scene in planned.scenes]
    adopted = planned.model_copy(update={"title": story.title or planned.title, "characters": characters,
                                         "scenes": scenes, "settings": story.settings, "priors": story.priors})
    scales = {b.prior_id: b.scale for s in story.scenes for b in s.prior_bindings}
    for prior in adopted.priors:
        if prior.id in scales:
            bind_prior(adopted, prior.id, scale=scales[prior.id])
    return adopted


def plan_replaces(story: Story) -> list[str]:
    """What Plan story would throw away, in words (empty for a story without scenes): the page asks before."""
    if not story.scenes:
        return []
    edited = sum(1 for s in story.scenes if s.user_edited or any(
        k.user_edited or any(e.user_edited for e in k.entities) for k in s.keyframes))
    clips = sum(len(s.approved_clips) for s in story.scenes)
    renders = sum(len(s.renders) for s in story.scenes)
    lost = [f"the {len(story.scenes)} scenes, their narrations and keyframe boxes"]
    if edited:
        lost.append(f"your edits in {edited} scene(s)")
    if clips:
        lost.append(f"{clips} approved clip(s) of motions the new plan does not have (the others move to the "
                    f"new scenes with their motion)")
    if renders:
        lost.append(f"{renders} render(s) from the render lists (the files stay in media/renders)")
    if own := sum(1 for s in story.scenes if s.render is not None):
        lost.append(f"the own render settings of {own} scene(s) (the story default stays)")
    return lost


def store_scene_plan(story: Story, planned: Scene) -> None:
    """A scene plan that arrived while the story is being planned (`dreamrunner plan|story`, Plan story), saved
    as it arrives so a failure or a cancel resumes after it: the scene of the same id takes its background,
    motions and keyframes; its other fields stay."""
    scene = find_scene(story, planned.id)
    scene.background = planned.background
    scene.motions = list(planned.motions)
    scene.keyframes = [keyframe.model_copy(deep=True) for keyframe in planned.keyframes]


# -- characters ----------------------------------------------------------------------------------------

def add_character(story: Story, name: str, description: str = "", token: str | None = None) -> Character:
    """A new character with the one id rule (`story.slug`) and the next free rare token [vN]."""
    name = (name or "").strip()
    if not name:
        raise EditError("give the new character a name")
    if any(c.name.casefold() == name.casefold() for c in story.characters):
        raise EditError(f"the story already has a character named {name!r}; give the new one another name")
    tokens = {c.token for c in story.characters}
    if token is None:
        number = 1
        while f"[v{number}]" in tokens:
            number += 1
        token = f"[v{number}]"
    elif token in tokens:
        raise EditError(f"token {token} is taken by another character")
    try:
        character = Character(id=unique_id(slug(name, "character"), {c.id for c in story.characters}), name=name,
                              token=token, description=(description or "").strip())
    except ValueError as error:
        raise EditError(f"character {name!r}: {first_message(error)}") from None
    story.characters = [*story.characters, character]
    return character


def edit_character(story: Story, character_id: str, **fields: str) -> list[str]:
    """Name, token and description (the id is fixed: entities and priors refer to it)."""
    unknown = sorted(set(fields) - {"name", "token", "description"})
    if unknown:
        raise EditError(f"cannot set {unknown} of a character; settable: name, token, description")
    character = find_character(story, character_id)
    changed = []
    for field, value in fields.items():
        value = str(value if value is not None else "").strip()
        if field == "name" and not value:
            raise EditError(f"character {character.id!r}: the name may not be empty")
        if field == "name" and any(c.id != character.id and c.name.casefold() == value.casefold()
                                   for c in story.characters):
            raise EditError(f"another character is already named {value!r}")
        if field == "token" and any(c.id != character.id and c.token == value for c in story.characters):
            raise EditError(f"token {value} is taken by another character; each needs its own, e.g. [v1], [v2]")
        if _set(character, field, value, f"character {character.id!r}"):
            changed.append(field)
    return changed


def remove_character(story: Story, character_id: str, unbind: bool = False) -> None:
    """Remove a character. Bound entities are refused unless `unbind`: then they keep their boxes as plain
    entities, and the character's subject priors (and their bindings) go too."""
    character = find_character(story, character_id)
    used = [f"{s.id} keyframe {k.index + 1}" for s in story.scenes for k in s.keyframes
            if any(e.character_id == character.id for e in k.entities)]
    priors = [p.id for p in story.priors if p.kind == "subject" and p.target == character.id]
    if (used or priors) and not unbind:
        what = []
        if used:
            what.append(f"bound to entities ({', '.join(used[:4])}{', ...' if len(used) > 4 else ''})")
        if priors:
            what.append(f"has the subject prior {', '.join(priors)}")
        raise EditError(f"character {character.id!r} is {' and '.join(what)}; remove it with its bindings "
                        f"(editor: confirm; CLI: --unbind)")
    for scene in story.scenes:
        for keyframe in scene.keyframes:
            for entity in keyframe.entities:
                if entity.character_id == character.id:
                    entity.character_id = None
                    entity.mark_edited("character_id")
    for prior_id in priors:
        delete_prior(story, prior_id)
    story.characters = [c for c in story.characters if c.id != character.id]


def find_character(story: Story, text: str) -> Character:
    """A character by its id, name or token."""
    text = (text or "").strip()
    for character in story.characters:
        if text in (character.id, character.token) or text.casefold() == character.name.casefold():
            return character
    known = ", ".join(f"{c.id} ({c.name})" for c in story.characters) or "none yet"
    raise EditError(f"{text!r} is not a character of the story; characters: {known}")


def add_reference_images(project: Project, character_id: str, paths: Iterable[str | Path]) -> list[str]:
    """Check every image first, then copy all of them as PNGs into media/characters/ (all or nothing).
    Returns the project-relative paths added."""
    from .media import load_reference_image

    character = find_character(project.story, character_id)
    images = [load_reference_image(Path(p), project.story.settings.reference_background) for p in paths]
    if not images:
        raise EditError("choose one or more image files to add")
    folder = project.media / CHARACTERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    number = len(character.reference_images) + 1
    for image in images:
        while (target := folder / f"{character.id}_{number}.png").exists():
            number += 1
        image.save(target)
        added.append(project.relative(target))
    character.reference_images = [*character.reference_images, *added]
    return added


def remove_reference_image(story: Story, character_id: str, path: str) -> None:
    """Take an image off a character's references (the file stays in media/, so undo can bring it back)."""
    character = find_character(story, character_id)
    if path not in character.reference_images:
        raise EditError(f"{path} is not a reference image of {character.id!r}; it has "
                        f"{', '.join(character.reference_images) or 'none'}")
    character.reference_images = [p for p in character.reference_images if p != path]


# -- scenes, keyframes, entities -----------------------------------------------------------------------

def find_scene(story: Story, ref: str | int) -> Scene:
    """A scene by id, or by its 1-based number."""
    text = str(ref).strip()
    for scene in story.scenes:
        if scene.id == text:
            return scene
    if text.isdigit() and 1 <= int(text) <= len(story.scenes):
        return story.scenes[int(text) - 1]
    ids = ", ".join(s.id for s in story.scenes) or "none"
    raise EditError(f"the story has no scene {text!r}; give an id ({ids}) or a number 1-{len(story.scenes)}")


def edit_scene(story: Story, scene_id: str, **fields: Any) -> list[str]:
    """Set scene fields (description, narration, motions, background) as the user's."""
    unknown = sorted(set(fields) - set(SCENE_FIELDS))
    if unknown:
        raise EditError(f"cannot edit {unknown} of a scene; editable: {', '.join(SCENE_FIELDS)}")
    scene = find_scene(story, scene_id)
    changed = []
    for field, value in fields.items():
        if field == "motions":
            value = list(dict.fromkeys(m.strip() for m in value if m.strip()))  # each motion once
        else:
            value = (value or "").strip()
        if field == "background" and not value:
            raise EditError(f"scene {scene.id!r}: the background may not be empty")
        before = scene.motions
        if _set(scene, field, value, f"scene {scene.id!r}"):
            scene.mark_edited(field)
            changed.append(field)
            if field == "motions":
                carry_motions(scene, before, value)
    return changed


def carry_motions(scene: Scene, old: list[str], new: list[str]) -> list[str]:
    """The scene's motions map onto the entities that carry them: a motion replaced in the list (a new text
    in its place) is replaced on every entity of every keyframe that carries it; an entity whose motion left
    the list without a replacement has no motion. Returns "old -> new" for each change made."""
    gone = [m for m in old if m not in new]
    renamed = {m: new[old.index(m)] for m in gone
               if old.index(m) < len(new) and new[old.index(m)] not in old}
    changes = []
    for keyframe in scene.keyframes:
        for entity in keyframe.entities:
            if entity.motion in gone:
                target = renamed.get(entity.motion)
                changes.append(f"{entity.motion} -> {target or 'no motion'}")
                entity.motion = target
                entity.mark_edited("motion")
    return list(dict.fromkeys(changes))


def _keyframe(scene: Scene, keyframe: int) -> KeyFrame:
    if not 0 <= keyframe < len(scene.keyframes):
        raise EditError(f"scene {scene.id!r} has no keyframe {keyframe + 1} (keyframes 1-{len(scene.keyframes)})")
    return scene.keyframes[keyframe]


def _entity(scene: Scene, keyframe: int, position: int) -> Entity:
    frame = _keyframe(scene, keyframe)
    if not 0 <= position < len(frame.entities):
        raise EditError(f"scene {scene.id!r}, keyframe {keyframe + 1} has no entity {position + 1} "
                        f"(it has {len(frame.entities)})")
    return frame.entities[position]


def _track(scene: Scene, key: str) -> list[Entity]:
    """The entity with `key` in every keyframe where it appears."""
    return [e for k in scene.keyframes for e in k.entities if entity_key(e) == key]


def add_entity(story: Story, scene_id: str, keyframe: int, name: str, box: Box | None = None,
               character_id: str | None = None, motion: str | None = None, description: str | None = None,
               all_keyframes: bool = False) -> Entity:
    """A user's entity on one keyframe (or all six); it survives re-planning. A name that is a character's
    binds the entity to that character unless `character_id` says otherwise."""
    scene = find_scene(story, scene_id)
    name = (name or "").strip() or f"entity {len(_keyframe(scene, keyframe).entities) + 1}"
    # A name the scene already has joins that entity's track: its character, motion and description come along.
    track = next((e for k in scene.keyframes for e in k.entities if e.name.casefold() == name.casefold()), None)
    if track is not None:
        character_id = character_id if character_id is not None else track.character_id
        motion = motion if motion is not None else track.motion
        description = description if description is not None else track.description
    if character_id is None:
        character_id = next((c.id for c in story.characters if c.name.casefold() == name.casefold()), None)
    else:
        character_id = find_character(story, character_id).id
    where = f"scene {scene.id!r}, keyframe {keyframe + 1}, new entity {name!r}"
    try:
        entity = Entity(name=name, character_id=character_id, motion=(motion or None),
                        description=(description or "").strip() or name, box=box or DEFAULT_BOX)
    except ValueError as error:
        raise EditError(f"{where}: {first_message(error)}") from None
    entity.mark_edited(*(f for f in ENTITY_FIELDS if getattr(entity, f) is not None))
    for frame in scene.keyframes if all_keyframes else [_keyframe(scene, keyframe)]:
        frame.entities = [*frame.entities, entity.model_copy(deep=True)]
        frame.mark_edited("entities")
    return entity


def edit_entity(story: Story, scene_id: str, keyframe: int, position: int, all_keyframes: bool = False,
                **fields: Any) -> list[str]:
    """Set entity fields (name, character_id, motion, description, box) as the user's.

    With `all_keyframes`, the fields apply to the entity's whole track; a box then moves every keyframe's box
    by the same change of its edges (clamped to the frame), so the track keeps its path."""
    unknown = sorted(set(fields) - set(ENTITY_FIELDS))
    if unknown:
        raise EditError(f"cannot edit {unknown} of an entity; editable: {', '.join(ENTITY_FIELDS)}")
    scene = find_scene(story, scene_id)
    entity = _entity(scene, keyframe, position)
    where = f"scene {scene.id!r}, keyframe {keyframe + 1}, entity {position + 1} ({entity.name!r})"
    if "character_id" in fields and fields["character_id"]:
        fields["character_id"] = find_character(story, fields["character_id"]).id
    if "character_id" in fields and not fields["character_id"]:
        fields["character_id"] = None
    if "motion" in fields:
        fields["motion"] = (fields["motion"] or "").strip() or None
    for field in ("name", "description"):
        if field in fields:
            fields[field] = (fields[field] or "").strip()
            if not fields[field]:
                raise EditError(f"{where}: the {field} may not be empty")
    targets = _track(scene, entity_key(entity)) if all_keyframes else [entity]
    delta = None
    if "box" in fields:
        box = tuple(float(v) for v in fields["box"])
        delta = tuple(new - old for new, old in zip(box, entity.box))
    changed: list[str] = []
    for target in targets:
        for field, value in fields.items():
            if field == "box":
                value = box if target is entity else _moved(target.box, delta)
            if _set(target, field, value, where):
                target.mark_edited(field)
                if field not in changed:
                    changed.append(field)
    if fields.get("motion") and fields["motion"] not in scene.motions:
        # The scene's motions are what clips, priors and re-planning work from: a new motion joins them.
        scene.motions = [*scene.motions, fields["motion"]]
        scene.mark_edited("motions")
    return changed


def _moved(box: Box, delta: tuple[float, ...]) -> tuple[float, float, float, float]:
    moved = [min(max(v + d, 0.0), 1.0) for v, d in zip(box, delta)]
    return tuple(round(v, 4) for v in moved)  # type: ignore[return-value]


def delete_entity(story: Story, scene_id: str, keyframe: int, position: int, all_keyframes: bool = False) -> Entity:
    """Remove an entity from one keyframe (or its whole track); re-planning will not bring it back there."""
    scene = find_scene(story, scene_id)
    entity = _entity(scene, keyframe, position)
    key = entity_key(entity)
    for index, frame in enumerate(scene.keyframes):
        if all_keyframes:
            kept = [e for e in frame.entities if entity_key(e) != key]
        elif index == keyframe:
            kept = [e for i, e in enumerate(frame.entities) if i != position]
        else:
            continue
        if len(kept) != len(frame.entities):
            frame.entities = kept
            frame.mark_edited("entities")
    return entity


# -- motion clips --------------------------------------------------------------------------------------

def approve_clip(project: Project, scene_id: str, motion: str, source: str | Path, clip_id: str | None = None,
                 caption: str = "", score: float | None = None, origin: str = "user") -> ClipRef:
    """Check a clip plays, copy it into media/clips/<scene>/<motion>/ and approve it for one motion of a scene.
    A user's own clip is named by its file (`user-<file name>`); a retrieved one keeps its catalog id."""
    from .video_io import probe_video

    scene = find_scene(project.story, scene_id)
    source = Path(source)
    clip_id = clip_id or f"user-{slug(source.stem, 'clip')}"
    if motion not in scene.motions:
        raise EditError(f"scene {scene.id!r} has no motion {motion!r}; its motions: {', '.join(scene.motions) or 'none'}")
    if any(c.id == clip_id and c.motion == motion for c in scene.approved_clips):
        raise EditError(f"{clip_id} is already approved for {motion!r} in scene {scene.id!r}")
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise EditError(f"{source.name} is not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    probe_video(source)  # a named error for a missing, undecodable or audio-only file
    target = project.media / CLIPS_DIR / slug(scene.id) / slug(motion) / f"{slug(clip_id, 'clip')}{source.suffix.lower()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    clip = ClipRef(id=clip_id, motion=motion, path=project.relative(target), caption=caption or "", score=score,
                   source=origin)
    scene.approved_clips = [*scene.approved_clips, clip]
    return clip


def unapprove_clip(story: Story, scene_id: str, motion: str, clip_id: str) -> None:
    """Take one clip off one motion of a scene (its approvals for other motions stay)."""
    scene = find_scene(story, scene_id)
    kept = [c for c in scene.approved_clips if not (c.id == clip_id and c.motion == motion)]
    if len(kept) == len(scene.approved_clips):
        raise EditError(f"{clip_id} is not approved for {motion!r} in scene {scene.id!r}")
    scene.approved_clips = kept


# -- priors --------------------------------------------------------------------------------------------

def scenes_for(story: Story, kind: str, target: str) -> list[str]:
    """The scenes a prior belongs to: those showing the character (subject) or having the motion."""
    if kind == "subject":
        return [s.id for s in story.scenes if any(e.character_id == target for k in s.keyframes for e in k.entities)]
    return [s.id for s in story.scenes if target in s.motions]


def register_prior(story: Story, prior: Prior, bind: bool = True, scale: float = 1.0) -> list[str]:
    """Add a trained or imported prior (replacing one with its id); with `bind`, bind it to the scenes it belongs
    to with strength `scale`. Returns the scenes bound."""
    # A prior registered again keeps its place, as its bindings do (bind_prior).
    if any(p.id == prior.id for p in story.priors):
        story.priors = [prior if p.id == prior.id else p for p in story.priors]
    else:
        story.priors = [*story.priors, prior]
    return bind_prior(story, prior.id, scale=scale) if bind else []


def bind_prior(story: Story, prior_id: str, scene_ids: Iterable[str] | None = None, scale: float = 1.0) -> list[str]:
    """Bind a prior to scenes (default: those it belongs to) with a strength; an existing binding's scale is
    updated. Returns the scene ids bound."""
    prior = _prior(story, prior_id)
    scenes = ([find_scene(story, s) for s in scene_ids] if scene_ids is not None
              else [find_scene(story, s) for s in scenes_for(story, prior.kind, prior.target)])
    for scene in scenes:
        binding = PriorBinding(prior_id=prior.id, scale=scale)
        # An existing binding keeps its place (re-registering an unchanged prior changes nothing).
        bindings = [binding if b.prior_id == prior.id else b for b in scene.prior_bindings]
        if binding not in bindings:
            bindings.append(binding)
        if bindings != scene.prior_bindings:
            scene.prior_bindings = bindings
    return [s.id for s in scenes]


def unbind_prior(story: Story, prior_id: str, scene_ids: Iterable[str] | None = None) -> list[str]:
    """Unbind a prior from scenes (default: all). Returns the scene ids it was removed from."""
    _prior(story, prior_id)
    scenes = [find_scene(story, s) for s in scene_ids] if scene_ids is not None else story.scenes
    removed = []
    for scene in scenes:
        kept = [b for b in scene.prior_bindings if b.prior_id != prior_id]
        if len(kept) != len(scene.prior_bindings):
            scene.prior_bindings = kept
            removed.append(scene.id)
    return removed


def delete_prior(story: Story, prior_id: str) -> Prior:
    """Remove a prior and its bindings (the file stays in media/priors: a trained prior is reused, not lost)."""
    prior = _prior(story, prior_id)
    unbind_prior(story, prior.id)
    story.priors = [p for p in story.priors if p.id != prior.id]
    return prior


def _prior(story: Story, prior_id: str) -> Prior:
    for prior in story.priors:
        if prior.id == prior_id:
            return prior
    raise EditError(f"the story has no prior {prior_id!r}; priors: {', '.join(p.id for p in story.priors) or 'none'}")


# -- renders -------------------------------------------------------------------------------------------

def store_renders(project: Project, scene_id: str, results: list[RenderResult]) -> None:
    """Record finished renders of a scene (what a render job hands back). A render of the same plan and seed
    replaces the earlier one in its place, new ones are added at the end; renders of other plans or seeds stay listed while their files exist. The user's
    chosen variant stays chosen while it renders the same plan; otherwise the first new render is chosen."""
    scene = find_scene(project.story, scene_id)
    chosen = scene.renders[scene.chosen_render] if scene.chosen_render is not None else None
    new = {(r.cache_key, r.seed): r for r in results}
    renders = [new.pop((r.cache_key, r.seed), r) for r in scene.renders]
    renders = [r for r in renders if r in results or project.resolve(r.path).is_file()] + list(new.values())
    paths = [r.path for r in renders]
    scene.chosen_render = None
    scene.renders = renders
    if chosen is not None and chosen.path in paths and (not results or chosen.cache_key == results[0].cache_key):
        scene.chosen_render = paths.index(chosen.path)
    elif renders:
        scene.chosen_render = paths.index(results[0].path) if results else 0


def delete_render(story: Story, scene_id: str, seed: int, cache_key: str | None = None) -> RenderResult:
    """Take a variant (by seed, and its cache key or a prefix of it where several share the seed) off a scene's render list (the Render tab's history). Its file stays in media/renders,
    so undo brings it back and rendering the same plan and settings again finds it instead of re-rendering.
    When it was the variant export uses, the scene has none chosen afterwards (export uses its animatic)."""
    scene = find_scene(story, scene_id)
    matches = [i for i, r in enumerate(scene.renders) if r.seed == seed and r.cache_key.startswith(cache_key or "")]
    if not matches:
        raise EditError(f"scene {scene.id!r} has no render with seed {seed}"
                        + (f" and key {cache_key[:16]}" if cache_key else "")
                        + f"; it has seeds {sorted({r.seed for r in scene.renders})}")
    if len(matches) > 1:
        raise EditError(f"scene {scene.id!r} has {len(matches)} renders with seed {seed} (other settings); name one "
                        f"by its key: {', '.join(scene.renders[i].cache_key[:16] for i in matches)}")
    position = matches[0]
    render = scene.renders[position]
    chosen = scene.chosen_render
    scene.chosen_render = None
    scene.renders = [r for i, r in enumerate(scene.renders) if i != position]
    if chosen is not None and chosen != position:
        scene.chosen_render = chosen - (chosen > position)
    return render


def choose_render(story: Story, scene_id: str, seed: int, cache_key: str | None = None) -> RenderResult:
    """Make a variant the one export uses for a scene: the newest render with `seed` (and `cache_key`)."""
    scene = find_scene(story, scene_id)
    for position in reversed(range(len(scene.renders))):
        render = scene.renders[position]
        if render.seed == seed and cache_key in (None, render.cache_key):
            scene.chosen_render = position
            return render
    raise EditError(f"scene {scene.id!r} has no render with seed {seed}; it has seeds "
                    f"{sorted({r.seed for r in scene.renders})}")
