"""Story changes from the command line: the same `dreamrunner.edits` calls the editor makes, one command each.

    dreamrunner character add|edit|remove|add-image|remove-image PROJECT ...
    dreamrunner scene edit PROJECT SCENE ...
    dreamrunner entity add|edit|delete PROJECT SCENE ...
    dreamrunner clips approve|unapprove PROJECT SCENE --motion M ...
    dreamrunner prior bind|unbind|delete PROJECT PRIOR ...
    dreamrunner set PROJECT KEY=VALUE ...

Scenes are given by id or 1-based number, keyframes and entities by 1-based number (as the editor shows them).
Every command loads the project, makes one change (`Project.edit`: checked, rolled back on error) and saves it;
a save over another writer's newer revision merges or stops with a message naming what both changed.
"""

from __future__ import annotations

import argparse
import json

from .. import edits
from ..errors import DreamRunnerError, UsageError
from ..project import Project


def register(subparsers: argparse._SubParsersAction) -> None:
    character = _group(subparsers, "character", "add, edit and remove characters and their reference images")
    add = _command(character, "add", "add a character (id from its name, the next free token [vN])", _character_add)
    add.add_argument("name")
    add.add_argument("--description", default="")
    add.add_argument("--image", action="append", default=[], metavar="IMAGE", help="reference image; repeatable")
    edit = _command(character, "edit", "change a character's name, token or description", _character_edit)
    edit.add_argument("character", help="id, name or token")
    for field in ("name", "token", "description"):
        edit.add_argument(f"--{field}")
    remove = _command(character, "remove", "remove a character", _character_remove)
    remove.add_argument("character", help="id, name or token")
    remove.add_argument("--unbind", action="store_true",
                        help="also unbind its entities (they stay as plain entities) and delete its subject priors")
    image = _command(character, "add-image", "add reference images (checked, copied into media/)", _image_add)
    image.add_argument("character", help="id, name or token")
    image.add_argument("images", nargs="+")
    drop = _command(character, "remove-image", "take a reference image off a character", _image_remove)
    drop.add_argument("character", help="id, name or token")
    drop.add_argument("path", help="the image's project path, as `validate` or project.json lists it")

    scene = _group(subparsers, "scene", "edit a scene's words")
    edit = _command(scene, "edit", "set a scene's description, narration, motions or background", _scene_edit)
    _scene_argument(edit)
    for field in ("description", "narration", "background"):
        edit.add_argument(f"--{field}")
    edit.add_argument("--motion", action="append", dest="motions", metavar="MOTION",
                      help="the scene's motions, replacing the old list; repeatable")

    entity = _group(subparsers, "entity", "add, edit and delete a keyframe's entities and boxes")
    add = _command(entity, "add", "add an entity to a keyframe (or all of them)", _entity_add)
    _scene_argument(add)
    add.add_argument("name")
    _where(add, entity_number=False)
    _entity_fields(add)
    edit = _command(entity, "edit", "change an entity (box, name, character, motion, description)", _entity_edit)
    _scene_argument(edit)
    _where(edit, entity_number=True)
    edit.add_argument("--name")
    _entity_fields(edit)
    delete = _command(entity, "delete", "delete an entity from a keyframe (or its whole track)", _entity_delete)
    _scene_argument(delete)
    _where(delete, entity_number=True)

    clips = _group(subparsers, "clips", "approve reference clips for a scene's motion")
    approve = _command(clips, "approve", "approve clip files (e.g. cut by `retrieve --out`) for a motion", _approve)
    _scene_argument(approve)
    approve.add_argument("--motion", required=True)
    approve.add_argument("files", nargs="+", help="video files (e.g. cut by `retrieve --out`)")
    approve.add_argument("--id", action="append", dest="ids", metavar="ID",
                         help="clip id of each file, in order (e.g. its catalog id); default user-<file name>")
    approve.add_argument("--caption", default="", help="caption for the clips (motion priors train on it)")
    unapprove = _command(clips, "unapprove", "take a clip off a motion", _unapprove)
    _scene_argument(unapprove)
    unapprove.add_argument("--motion", required=True)
    unapprove.add_argument("clip", help="clip id")

    prior = _group(subparsers, "prior", "bind, unbind and delete trained priors")
    bind = _command(prior, "bind", "bind a prior to scenes (default: the scenes it belongs to)", _bind)
    bind.add_argument("prior", help="prior id")
    bind.add_argument("--scene", action="append", metavar="SCENE", help="scene id or number; repeatable")
    bind.add_argument("--scale", type=float, default=1.0, help="strength, 0-4 (default 1)")
    unbind = _command(prior, "unbind", "unbind a prior from scenes (default: all)", _unbind)
    unbind.add_argument("prior", help="prior id")
    unbind.add_argument("--scene", action="append", metavar="SCENE", help="scene id or number; repeatable")
    delete = _command(prior, "delete", "remove a prior and its bindings (its file stays for reuse)", _delete_prior)
    delete.add_argument("prior", help="prior id")

    settings = subparsers.add_parser("set", help="set the title, topic or settings (KEY=VALUE)", description=(
        "Set story fields and settings: title=..., topic=..., or a setting by its path, e.g. render.steps=30, "
        "render.guidance_scale=6, prior.max_steps=200, video.num_frames=49. Values are read as JSON where they "
        "parse (numbers, true/false, null), else as text. With --scene, a scene's own render settings: "
        "render.steps=20 (null: the story default again) or render=default (all of them)."))
    settings.add_argument("project", help="project folder")
    settings.add_argument("values", nargs="+", metavar="KEY=VALUE")
    settings.add_argument("--scene", metavar="SCENE", help="set this scene's own render settings (id or number)")
    settings.set_defaults(run=_set)


def _group(subparsers, name: str, help_text: str) -> argparse._SubParsersAction:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _command(group, name: str, help_text: str, run) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("project", help="project folder")
    parser.set_defaults(run=lambda args: _change(args, run))
    return parser


def _scene_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", help="scene id or number (1-based)")


def _where(parser: argparse.ArgumentParser, entity_number: bool) -> None:
    parser.add_argument("--keyframe", type=int, default=1, metavar="K", help="keyframe number, 1-6 (default 1)")
    if entity_number:
        parser.add_argument("--entity", type=int, required=True, metavar="N", help="entity number in the keyframe, 1-based")
    parser.add_argument("--all-keyframes", action="store_true", help="the entity's whole track, every keyframe")


def _entity_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--box", type=_box, metavar="X0,Y0,X1,Y1", help="normalized box, e.g. 0.1,0.2,0.4,0.9")
    parser.add_argument("--character", help="bind to a character (id, name or token); '' to unbind")
    parser.add_argument("--motion", help="the entity's motion; '' for none")
    parser.add_argument("--description")


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected four numbers X0,Y0,X1,Y1, got {text!r}")
    return values  # type: ignore[return-value]


def _change(args: argparse.Namespace, run) -> int:
    project = Project.load(args.project)
    with project.edit():
        message = run(project, args)
    args.reporter.result(message, project=str(project.folder))
    return 0


def _given(args: argparse.Namespace, *names: str) -> dict:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _character_add(project: Project, args) -> str:
    character = edits.add_character(project.story, args.name, args.description)
    if args.image:
        edits.add_reference_images(project, character.id, args.image)
    return f"added character {character.id} ({character.name}, {character.token}) with {len(args.image)} image(s)"


def _character_edit(project: Project, args) -> str:
    character = edits.find_character(project.story, args.character)
    changed = edits.edit_character(project.story, character.id, **_given(args, "name", "token", "description"))
    return f"character {character.id}: " + (f"set {', '.join(changed)}" if changed else "nothing changed")


def _character_remove(project: Project, args) -> str:
    character = edits.find_character(project.story, args.character)
    edits.remove_character(project.story, character.id, unbind=args.unbind)
    return f"removed character {character.id}"


def _image_add(project: Project, args) -> str:
    character = edits.find_character(project.story, args.character)
    added = edits.add_reference_images(project, character.id, args.images)
    return f"added {len(added)} reference image(s) to {character.id}: {', '.join(added)}"


def _image_remove(project: Project, args) -> str:
    character = edits.find_character(project.story, args.character)
    edits.remove_reference_image(project.story, character.id, args.path)
    return f"removed {args.path} from {character.id} (the file stays in media/)"


def _scene_edit(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    changed = edits.edit_scene(project.story, scene.id, **_given(args, "description", "narration", "background", "motions"))
    return f"scene {scene.id}: " + (f"set {', '.join(changed)}" if changed else "nothing changed")


def _entity_edit_fields(project: Project, args) -> dict:
    fields = _given(args, "box", "motion", "description")
    if args.character is not None:
        fields["character_id"] = args.character or None
    return fields


def _entity_add(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    fields = _entity_edit_fields(project, args)
    entity = edits.add_entity(project.story, scene.id, args.keyframe - 1, args.name, all_keyframes=args.all_keyframes,
                              **fields)
    where = "every keyframe" if args.all_keyframes else f"keyframe {args.keyframe}"
    return f"scene {scene.id}: added {entity.name!r} at {list(entity.box)} to {where}"


def _entity_edit(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    fields = {**_given(args, "name"), **_entity_edit_fields(project, args)}
    if not fields:
        raise UsageError("say what to change: --box, --name, --character, --motion or --description")
    changed = edits.edit_entity(project.story, scene.id, args.keyframe - 1, args.entity - 1,
                                all_keyframes=args.all_keyframes, **fields)
    return f"scene {scene.id}, keyframe {args.keyframe}, entity {args.entity}: " + (
        f"set {', '.join(changed)}" if changed else "nothing changed")


def _entity_delete(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    entity = edits.delete_entity(project.story, scene.id, args.keyframe - 1, args.entity - 1,
                                 all_keyframes=args.all_keyframes)
    return f"scene {scene.id}: deleted {entity.name!r}" + (" from every keyframe" if args.all_keyframes else "")


def _approve(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    ids = args.ids or [None] * len(args.files)
    if len(ids) != len(args.files):
        raise UsageError(f"{len(args.files)} files but {len(ids)} --id values; give one id per file or none")
    clips = [edits.approve_clip(project, scene.id, args.motion, path, clip_id, args.caption)
             for path, clip_id in zip(args.files, ids)]
    return f"scene {scene.id}: approved {', '.join(c.id for c in clips)} for {args.motion!r}"


def _unapprove(project: Project, args) -> str:
    scene = edits.find_scene(project.story, args.scene)
    edits.unapprove_clip(project.story, scene.id, args.motion, args.clip)
    return f"scene {scene.id}: {args.clip} is no longer approved for {args.motion!r}"


def _bind(project: Project, args) -> str:
    scenes = edits.bind_prior(project.story, args.prior, args.scene, args.scale)
    return f"{args.prior}: bound to {', '.join(scenes) or 'no scene'} at scale {args.scale}"


def _unbind(project: Project, args) -> str:
    scenes = edits.unbind_prior(project.story, args.prior, args.scene)
    return f"{args.prior}: unbound from {', '.join(scenes) or 'no scene (it was not bound)'}"


def _delete_prior(project: Project, args) -> str:
    prior = edits.delete_prior(project.story, args.prior)
    return f"deleted prior {prior.id} (its file {prior.path} stays for reuse)"


def _set(args: argparse.Namespace) -> int:
    project = Project.load(args.project)
    done, notes = [], []
    with project.edit():
        for item in args.values:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"expected KEY=VALUE, got {item!r}")
            key = key.strip()
            if args.scene is not None:
                done.append(_set_scene_render(project, args.scene, key, text))
                continue
            if key in ("title", "topic"):
                edits.set_story_fields(project.story, **{key: text})
                done.append(f"{key} = {text!r}")
                continue
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            try:
                note = edits.set_setting(project.story, key, value)
            except UsageError:
                raise
            except DreamRunnerError as error:  # a value the story does not take: the command line is wrong
                raise UsageError(str(error)) from None
            if note is not None:
                notes.append(note)
            done.append(f"{key} = {value!r}")
    for note in notes:  # said once all the values are set and saved: a later bad value changes nothing
        args.reporter.note(note)
    args.reporter.result("set " + ", ".join(done), project=str(project.folder))
    return 0


def _set_scene_render(project: Project, scene_ref: str, key: str, text: str) -> str:
    scene = edits.find_scene(project.story, scene_ref)
    if key == "render" and text.strip() == "default":
        edits.use_story_render_settings(project.story, scene.id)
        return f"scene {scene.id}: render settings = the story default"
    group, _, field = key.partition(".")
    if group != "render" or not field:
        raise UsageError(f"with --scene, set render.FIELD=VALUE or render=default, not {key!r}")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    edits.set_render_settings(project.story, scene.id, **{field: value})
    return f"scene {scene.id}: {key} = {value!r}"
