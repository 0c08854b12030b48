"""The editor and the CLI make the same story changes: each change is made once through the editor's handler
(in this process, as the page calls it) and once through the `dreamrunner` command (a real process) on two
copies of one project; the saved stories and media must be the same. Also: an edit made in the page while a
render job runs survives the job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from dreamrunner import edits
from dreamrunner.project import Project
from dreamrunner.story import Prior, RenderOverrides, RenderResult, RenderSettings
from dreamrunner.validation import validate_story
from media_files import moving_square_clip
from ui import board
from ui.editor import build_app
from ui.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    workspace = Workspace(home=tmp_path_factory.mktemp("home"))
    _, editor = build_app(workspace, workspace.install_demo())
    return editor


@pytest.fixture
def pair(tmp_path, simple_story_data):
    """Two copies of one project: (folder the editor changes, folder the CLI changes)."""
    base = Project.create(tmp_path / "base", validate_story(simple_story_data))
    with base.edit():
        story = base.story
        edits.add_character(story, "Gus")  # a character no entity uses, to remove
        story.scenes[0].motions = ["flying", "gliding"]
        for seed in (1, 2):
            path = base.media / "renders" / f"seed{seed}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            story.scenes[0].renders = [*story.scenes[0].renders, RenderResult(
                seed=seed, path=f"media/renders/seed{seed}.mp4", cache_key="k", backend="tiny", is_noise=True)]
        story.scenes[0].chosen_render = 0
    (base.media / "mira.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (80, 80), (200, 40, 40)).save(base.media / "mira.png")
    shutil.copytree(base.folder, tmp_path / "page")
    shutil.copytree(base.folder, tmp_path / "cli")
    return tmp_path / "page", tmp_path / "cli"


def cli(*args) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "dreamrunner", *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def same_result(page: Path, cli_folder: Path) -> None:
    assert Project.load(page).story == Project.load(cli_folder).story
    files = lambda folder: sorted(p.relative_to(folder).as_posix() for p in (folder / "media").rglob("*") if p.is_file())  # noqa: E731
    assert files(page) == files(cli_folder)


def finished(job):
    """The last answer of a job handler (a generator: its progress, then the page's final state)."""
    answers = list(job)
    return answers[-1]


def picture(tmp_path: Path) -> Path:
    path = tmp_path / "Side view.png"
    Image.new("RGB", (96, 96), (30, 120, 60)).save(path)
    return path


def clip(tmp_path: Path) -> Path:
    return moving_square_clip(tmp_path / "My jump.mp4")

def test_add_a_character(editor, pair):
    editor.add_character(pair[0], "Zoë Café")
    cli("character", "add", pair[1], "Zoë Café")
    same_result(*pair)
    assert Project.load(pair[0]).story.characters[-1].id == "zoe-cafe"


def test_edit_a_character_in_the_table(editor, pair):
    rows = [[c.id, c.name, c.token, c.description] for c in Project.load(pair[0]).story.characters]
    rows[0][3], rows[1][2] = "a young witch with a red scarf", "[v7]"
    editor.edit_characters(pair[0], rows)
    cli("character", "edit", pair[1], "c1", "--description", "a young witch with a red scarf")
    cli("character", "edit", pair[1], "Gus", "--token", "[v7]")
    same_result(*pair)


def test_remove_a_character(editor, pair):
    editor.remove_character(pair[0], "gus", confirmed=True)
    cli("character", "remove", pair[1], "gus")
    same_result(*pair)


def test_add_a_reference_image(editor, pair, tmp_path):
    editor.add_references(pair[0], "c1", [str(picture(tmp_path))])
    cli("character", "add-image", pair[1], "c1", picture(tmp_path))
    same_result(*pair)
    assert Project.load(pair[0]).story.characters[0].reference_images[-1] == "media/characters/c1_2.png"


@pytest.mark.parametrize("field,page_value,cli_args", [
    ("narration", "The witch waves at the owl.", ["--narration", "The witch waves at the owl."]),
    ("motions", "flying\nwaving", ["--motion", "flying", "--motion", "waving"]),
    ("background", "a dark forest", ["--background", "a dark forest"]),
    ("description", "Mira meets the owl.", ["--description", "Mira meets the owl."]),
])
def test_edit_a_scene(editor, pair, field, page_value, cli_args):
    editor.set_scene_field(pair[0], "s1", field, page_value)
    cli("scene", "edit", pair[1], "1", *cli_args)
    same_result(*pair)


def test_drag_a_box(editor, pair):
    story = Project.load(pair[0]).story
    size = board.canvas_size(story)
    scene = story.scenes[0]
    sent = board.annotator_boxes(scene, 0, size)
    sent[0].update(xmin=sent[0]["xmin"] + 72, xmax=sent[0]["xmax"] + 72, ymin=sent[0]["ymin"] + 48,
                   ymax=sent[0]["ymax"] + 48)
    editor.edit_boxes(pair[0], "s1", 0, board.revision(scene, 0, size), {"boxes": sent})
    box = board.normalize(sent[0], size, "test")
    cli("entity", "edit", pair[1], "s1", "--keyframe", "1", "--entity", "1", "--box", ",".join(map(str, box)))
    same_result(*pair)


def test_draw_a_new_box(editor, pair):
    story = Project.load(pair[0]).story
    size = board.canvas_size(story)
    scene = story.scenes[0]
    # The box editor puts a drawn box first.
    sent = [{"xmin": 72, "ymin": 48, "xmax": 216, "ymax": 240, "label": "lantern"}] + board.annotator_boxes(scene, 1, size)
    editor.edit_boxes(pair[0], "s1", 1, board.revision(scene, 1, size), {"boxes": sent})
    cli("entity", "add", pair[1], "s1", "lantern", "--keyframe", "2", "--box", "0.1,0.1,0.3,0.5")
    same_result(*pair)


def test_add_and_delete_entities(editor, pair):
    editor.add_entity(pair[0], "s1", 3)
    cli("entity", "add", pair[1], "s1", "", "--keyframe", "4")
    story = Project.load(pair[0]).story
    editor.delete_entity(pair[0], "s1", 0, board.revision(story.scenes[0], 0, board.canvas_size(story)), 1)
    cli("entity", "delete", pair[1], "s1", "--keyframe", "1", "--entity", "2")
    same_result(*pair)


def test_edit_an_entity_in_the_table(editor, pair):
    story = Project.load(pair[0]).story
    keyframe = story.scenes[0].keyframes[2]
    rows = board.entity_rows(keyframe)
    rows[1][1], rows[1][2], rows[1][3] = "Mira", "perching", "a grey owl"
    rev = board.revision(story.scenes[0], 2, board.canvas_size(story))
    editor.edit_rows(pair[0], "s1", 2, rev, False, rows)
    cli("entity", "edit", pair[1], "s1", "--keyframe", "3", "--entity", "2", "--character", "Mira", "--motion",
        "perching", "--description", "a grey owl")
    same_result(*pair)


def test_approve_and_unapprove_a_clip(editor, pair, tmp_path):
    editor.add_own_clip(pair[0], "s1", "gliding", str(clip(tmp_path)))
    cli("clips", "approve", pair[1], "s1", "--motion", "gliding", clip(tmp_path))
    same_result(*pair)
    editor.remove_approved(pair[0], "s1", "gliding", "gliding\tuser-my-jump")
    cli("clips", "unapprove", pair[1], "s1", "--motion", "gliding", "user-my-jump")
    same_result(*pair)


def test_choose_a_render(editor, pair):
    editor.choose_variant(pair[0], "s1", "media/renders/seed2.mp4")
    cli("choose", pair[1], "--scene", "s1", "--seed", "2")
    same_result(*pair)
    assert Project.load(pair[0]).story.scenes[0].chosen_render == 1


def test_delete_a_render(editor, pair):
    editor.delete_variant_of(pair[0], "s1", "media/renders/seed1.mp4")
    cli("delete-render", pair[1], "--scene", "s1", "--seed", "1")
    same_result(*pair)
    scene = Project.load(pair[0]).story.scenes[0]
    assert [r.seed for r in scene.renders] == [2] and scene.chosen_render is None  # the chosen one went


def test_bind_unbind_and_delete_a_prior(editor, pair):
    for folder in pair:
        with (project := Project.load(folder)).edit():
            edits.register_prior(project.story, Prior(id="p1", kind="motion", target="flying",
                                                      path="media/priors/p1.safetensors"), bind=False)
    editor.bind_prior(pair[0], "p1", ["s1"], 0.5)
    cli("prior", "bind", pair[1], "p1", "--scene", "s1", "--scale", "0.5")
    same_result(*pair)
    editor.unbind_prior(pair[0], "p1", [])
    cli("prior", "unbind", pair[1], "p1")
    editor.delete_prior(pair[0], "p1")
    cli("prior", "delete", pair[1], "p1")
    same_result(*pair)


def test_remove_a_bound_character_and_a_reference_image(editor, pair):
    editor.remove_reference(pair[0], "c1", 0)
    cli("character", "remove-image", pair[1], "c1", "media/mira.png")
    editor.remove_character(pair[0], "c1", confirmed=True)
    cli("character", "remove", pair[1], "c1", "--unbind")
    same_result(*pair)


def test_title_and_settings(editor, pair):
    editor.set_story_field(pair[0], "title", "The owl's night")
    editor.set_render_setting(pair[0], "steps", 12)
    editor.set_prior_setting(pair[0], "max_steps", 80)
    cli("set", pair[1], "title=The owl's night", "render.steps=12", "prior.max_steps=80")
    same_result(*pair)


def test_render_settings_of_the_story(editor, pair):
    for field, value in (("negative_prompt", "blurry, watermark"), ("dtype", "bf16"), ("size", "192x128"),
                         ("scheduler", "dpm"), ("use_dynamic_cfg", True), ("seeds", "3, 5"), ("num_frames", 25)):
        editor.set_render_setting(pair[0], field, value)
    cli("set", pair[1], "render.negative_prompt=blurry, watermark", "render.dtype=bf16", "video.width=192",
        "video.height=128", "render.scheduler=dpm", "render.use_dynamic_cfg=true", "render.seeds=[3, 5]",
        "video.num_frames=25")
    same_result(*pair)
    render = Project.load(pair[0]).story.settings.render
    assert (render.negative_prompt, render.dtype, render.use_dynamic_cfg, render.seed_list()) == \
        ("blurry, watermark", "bf16", True, [3, 5])


def test_switching_backend_switches_the_video_settings_of_another_kind(editor, pair, monkeypatch):
    """The editor's model choice, `dreamrunner set render.backend=` and `render --backend --save-settings` move the
    story to the new model's own geometry where the old one is not of its kind, in the same change, and say so."""
    import gradio as gr

    from dreamrunner.edits import backend_geometry
    from dreamrunner.story import VideoSettings

    notes = []
    monkeypatch.setattr(gr, "Info", lambda message, *args, **kwargs: notes.append(message))
    editor.set_render_setting(pair[0], "backend", "tiny-1.5")  # CogVideoX 1.0 geometry -> two latents per token
    cli("set", pair[1], "render.backend=tiny-1.5")
    same_result(*pair)
    video = Project.load(pair[0]).story.settings.video
    assert video == VideoSettings(**backend_geometry("tiny-1.5")) and video.patch_size_t == 2
    assert notes == ["video settings switched to tiny-1.5&#x27;s own: 17 frames at 16 fps, 96x64 (were 49 frames at "
                     "8 fps, 720x480; video.patch_size_t = 1: tiny-1.5 takes 2)"]
    view = editor.render_settings_view(pair[0], None)
    assert view[editor.render_shown]["backend"] == "tiny-1.5"
    assert [value for _, value in view[editor.render_size]["choices"]] == ["96x64", "1360x768"]
    assert view[editor.render_frames]["choices"] == list(range(1, 162, 16))

    # Back to a one-latent kind through the render command (saved), rendering one scene with it.
    editor.set_render_setting(pair[0], "backend", "tiny-wan")
    editor.set_render_setting(pair[0], "steps", 1, "This scene", "s1")  # --steps with --scene: the scene's own
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "render", str(pair[1]), "--scene", "1",
                             "--backend", "tiny-wan", "--steps", "1", "--save-settings", "--device", "cpu"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "video settings switched to tiny-wan's own: 9 frames at 16 fps, 96x64" in result.stderr
    page, command = Project.load(pair[0]).story, Project.load(pair[1]).story
    assert page.settings == command.settings and command.settings.video == VideoSettings(**backend_geometry("tiny-wan"))
    assert page.scenes[0].render == command.scenes[0].render == RenderOverrides(steps=1)
    assert command.scenes[0].renders[-1].backend == "tiny-wan"

    # For one run only, a backend that does not make the story's geometry is a usage error naming the fix.
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "render", str(pair[1]), "--backend", "tiny-1.5"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "add --save-settings to switch the story to tiny-1.5" in result.stderr


def test_plan_story_plans_another_story_each_press_and_its_seed_plans_it_again(editor, pair, monkeypatch):
    """Plan story takes the seed field's variant and leaves the next one there: pressing again re-plans
    differently; typing back the seed the toast named gives that plan again."""
    import gradio as gr

    from dreamrunner.story import plan_digest

    notes = []
    monkeypatch.setattr(gr, "Info", lambda message, *args, **kwargs: notes.append(message))
    folder, topic, offline = pair[0], "a witch delivers potions in the village", ("offline", "", "", "")
    plans = []
    seed = 7
    for _ in range(3):
        answer = finished(editor.plan_story(folder, topic, 4, seed, *offline, confirmed=True))
        assert answer[editor.plan_seed] == seed + 1 and f"variant {seed}: set Plan variant to {seed}" in notes[-1]
        plans.append([plan_digest(scene) for scene in Project.load(folder).story.scenes])
        seed = answer[editor.plan_seed]
    assert len(plans[0]) == 4 and plans[0] != plans[1] != plans[2] != plans[0]
    finished(editor.plan_story(folder, topic, 4, 8, *offline, confirmed=True))  # the second plan's seed, typed back
    assert [plan_digest(scene) for scene in Project.load(folder).story.scenes] == plans[1]
    # An emptied field plans with a fresh variant and names it.
    answer = finished(editor.plan_story(folder, topic, 4, None, *offline, confirmed=True))
    assert f"variant {answer[editor.plan_seed] - 1}:" in notes[-1]


def test_a_scenes_own_render_settings_and_back_to_the_story_default(editor, pair):
    from ui.render_tab import SCENE_SCOPE

    shown = editor.render_settings_view(pair[0], "s1", SCENE_SCOPE)[editor.render_shown]
    assert shown["use_default"] and shown["steps"] == 50
    for field, value in (("negative_prompt", "blurry"), ("steps", 20), ("seeds", "7")):
        shown = editor.set_render_setting(pair[0], field, value, SCENE_SCOPE, "s1", shown)[editor.render_shown]
    assert not shown["use_default"] and (shown["steps"], shown["seeds"]) == (20, "7")
    cli("set", pair[1], "--scene", "s1", "render.negative_prompt=blurry", "render.steps=20", "render.seed=7")
    same_result(*pair)
    assert Project.load(pair[0]).story.scenes[0].render == RenderOverrides(negative_prompt="blurry", steps=20, seed=7)
    assert Project.load(pair[0]).story.settings.render == RenderSettings()  # the story default stays

    view = editor.use_default_render(pair[0], "s1", True)
    cli("set", pair[1], "--scene", "1", "render=default")
    same_result(*pair)
    assert Project.load(pair[0]).story.scenes[0].render is None and view[editor.render_shown]["steps"] == 50


def test_a_stale_render_tab_does_not_write_over_a_newer_setting(editor, pair):
    from ui.render_tab import SCENE_SCOPE

    folder = pair[0]
    shown = editor.render_settings_view(folder, "s1", SCENE_SCOPE)[editor.render_shown]
    other_writer(folder, lambda story: edits.set_render_settings(story, "s1", negative_prompt="from the CLI"))
    with pytest.warns(UserWarning, match="negative prompt setting was changed elsewhere"):
        answer = editor.set_render_setting(folder, "negative_prompt", "mine", SCENE_SCOPE, "s1", shown)
    assert answer[editor.render_negative] == "from the CLI"
    # A field the other writer did not touch takes the page's change, on the scene the tab showed.
    answer = editor.set_render_setting(folder, "guidance_scale", 4.5, SCENE_SCOPE, "s2-not-shown", shown)
    story = Project.load(folder).story
    assert story.scenes[0].render == RenderOverrides(negative_prompt="from the CLI", guidance_scale=4.5)
    # A value the settings refuse is said, and the field shows the stored one.
    with pytest.warns(UserWarning, match="use_dynamic_cfg works with scheduler .*dpm.* only"):
        answer = editor.set_render_setting(folder, "scheduler", "ddim", "Story default", None, None)
        answer = editor.set_render_setting(folder, "use_dynamic_cfg", True, "Story default", None,
                                           answer[editor.render_shown])
    assert answer[editor.render_dynamic_cfg] is False


def test_an_edit_made_while_a_render_job_runs_survives_it(tmp_path, simple_story_data):
    data = dict(simple_story_data)
    data["scenes"] = [data["scenes"][0], {**data["scenes"][0], "id": "s2"}]
    project = Project.create(tmp_path / "story", validate_story(data))
    with project.edit():
        edits.set_setting(project.story, "render.steps", 3)
    workspace = Workspace(home=tmp_path / "home")
    _, editor = build_app(workspace, project.folder)
    job = editor.render_all_job(project.folder, "s1", request=None)
    next(job)  # "loading the backend": the job has taken its copy of the story
    editor.set_scene_field(project.folder, "s2", "narration", "Edited while the scenes render.")
    on_disk = lambda: Project.load(project.folder).story  # noqa: E731
    for _ in job:
        # Whatever the job has finished so far, the user's edit stays on disk all along.
        assert on_disk().scenes[1].narration == "Edited while the scenes render."
    story = on_disk()
    assert story.scenes[1].narration == "Edited while the scenes render."
    for scene in story.scenes:
        assert len(scene.renders) == 1 and project.resolve(scene.renders[0].path).is_file()


def test_replan_a_scene_keeping_edits(editor, pair):
    editor.set_scene_field(pair[0], "s1", "narration", "Kept through the re-plan.")
    cli("scene", "edit", pair[1], "s1", "--narration", "Kept through the re-plan.")
    finished(editor.replan_scene(pair[0], "s1", 0, False, 0, "offline", "", "", ""))
    cli("replan", pair[1], "--scene", "1", "--offline")
    same_result(*pair)
    assert Project.load(pair[0]).story.scenes[0].narration == "Kept through the re-plan."
    # "Another plan" is the next variant: the CLI's --seed 1.
    finished(editor.replan_scene(pair[0], "s1", 0, False, 0, "offline", "", "", "", another=True))
    cli("replan", pair[1], "--scene", "1", "--offline", "--seed", "1")
    same_result(*pair)


# -- a page showing an older version: its edits never put back what another writer saved --------------------

def other_writer(folder: Path, change) -> None:
    """Another program (a CLI command) changes the project on disk."""
    project = Project.load(folder)
    with project.edit():
        change(project.story)


def test_a_stale_page_does_not_write_back_text_it_only_showed(editor, pair):
    folder = pair[0]
    shown = editor.board_view(folder, "s1", 0)[editor.words_shown]
    story_shown = editor.story_view(folder)[editor.story_shown]
    other_writer(folder, lambda story: edits.edit_scene(story, "s1", narration="Newer words."))
    other_writer(folder, lambda story: edits.set_story_fields(story, title="Newer title"))
    # The user clicks into the narration and out again: the page sends the text it showed.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only showed, not typed: no message
        answer = editor.set_scene_field(folder, "s1", "narration", "The witch flies past the owl.", shown)
    shown = answer[editor.words_shown]
    assert answer[editor.narration] == "Newer words." and shown["narration"] == "Newer words."
    _, title, story_shown = editor.set_story_field(folder, "title", story_shown["title"], story_shown)
    assert title == "Newer title"
    # A change typed over text another writer changed meanwhile is refused (the page says so) ...
    other_writer(folder, lambda story: edits.edit_scene(story, "s1", background="a newer sky"))
    with pytest.warns(UserWarning, match="background of scene .*s1.* was changed elsewhere"):
        answer = editor.set_scene_field(folder, "s1", "background", "my sky", shown)
    assert answer[editor.background] == "a newer sky"
    story = Project.load(folder).story
    assert (story.scenes[0].narration, story.scenes[0].background, story.title) == \
        ("Newer words.", "a newer sky", "Newer title")
    # ... while a field the other writer did not touch takes the page's change.
    editor.set_scene_field(folder, "s1", "description", "Mira meets the owl.", shown)
    assert Project.load(folder).story.scenes[0].description == "Mira meets the owl."


def test_a_stale_character_table_changes_only_the_cells_typed(editor, pair):
    folder = pair[0]
    shown = editor.story_view(folder)[editor.story_shown]
    other_writer(folder, lambda story: edits.edit_character(story, "c1", description="a witch in red"))
    rows = [list(row) for row in shown["characters"]]
    rows[1][1] = "Gustav"  # the user renames the other character in the stale table
    editor.edit_characters(folder, rows, shown=shown)
    story = Project.load(folder).story
    assert (story.characters[0].description, story.characters[1].name) == ("a witch in red", "Gustav")
    rows[0][3] = "a witch in blue"  # typed over the description that changed meanwhile: refused
    with pytest.warns(UserWarning, match="description: changed elsewhere"):
        editor.edit_characters(folder, rows, shown=shown)
    assert Project.load(folder).story.characters[0].description == "a witch in red"


def test_delete_entity_from_a_stale_page_deletes_nothing(editor, pair):
    folder = pair[0]
    story = Project.load(folder).story
    rev = board.revision(story.scenes[0], 0, board.canvas_size(story))
    other_writer(folder, lambda story: edits.delete_entity(story, "s1", 0, 0))
    before = Project.load(folder).story.scenes[0].keyframes[0].entities
    with pytest.warns(UserWarning, match="keyframe was changed elsewhere"):
        editor.delete_entity(folder, "s1", 0, rev, 0)
    assert Project.load(folder).story.scenes[0].keyframes[0].entities == before


def test_unsaved_changes_that_clash_with_another_save_keep_the_page_working(editor, pair):
    folder = pair[0].resolve()
    workspace = editor.workspace
    workspace.set_autosave(False)
    try:
        with workspace.edit(folder) as project:
            edits.edit_scene(project.story, "s1", narration="Typed in the page, not saved.")
        other_writer(folder, lambda story: edits.edit_scene(story, "s1", narration="Saved by the CLI."))
        view = editor.everything(folder)  # a new tab opens the project: it loads
        assert "not saved" in view[editor.status] and "scenes[s1].narration" in view[editor.status]
        assert workspace.open(folder).story.scenes[0].narration == "Typed in the page, not saved."
        editor.revert_project(folder, "s1", 0, confirmed=True)
        assert workspace.open(folder).story.scenes[0].narration == "Saved by the CLI."
        assert folder not in workspace.conflicts
    finally:
        workspace.set_autosave(True)


def test_restoring_the_backup_never_lowers_the_revision(pair):
    from dreamrunner.project import restore_backup

    folder = pair[0]
    for words in ("one", "two", "three"):
        other_writer(folder, lambda story, words=words: edits.edit_scene(story, "s1", narration=words))
    holder = Project.load(folder)
    text = (folder / "project.json").read_text()
    (folder / "project.json").write_text(text[: len(text) // 2])  # damaged
    restore_backup(folder)
    assert Project.load(folder).revision > holder.revision
    with pytest.raises(Exception, match="scenes\\[s1\\].narration"):
        with holder.edit():  # a writer holding the damaged revision merges, it does not overwrite
            edits.edit_scene(holder.story, "s1", narration="from an old holder")


def test_edit_an_entity_track_and_the_scene_motions(editor, pair):
    story = Project.load(pair[0]).story
    rows = board.entity_rows(story.scenes[0].keyframes[2])
    rows[1][2] = "perching"
    editor.edit_rows(pair[0], "s1", 2, board.revision(story.scenes[0], 2, board.canvas_size(story)), True, rows)
    cli("entity", "edit", pair[1], "s1", "--keyframe", "3", "--entity", "2", "--motion", "perching",
        "--all-keyframes")
    same_result(*pair)
    editor.set_scene_field(pair[0], "s1", "motions", "soaring\nperching")
    cli("scene", "edit", pair[1], "s1", "--motion", "soaring", "--motion", "perching")
    same_result(*pair)


def test_plan_story_is_one_undo_step_though_each_plan_is_saved_as_it_arrives(editor, pair):
    """Plan story saves the topic, the story plan and every scene plan as they arrive (a failure keeps them);
    one undo takes the whole press back, and the next press is a step of its own."""
    folder, offline = pair[0], ("offline", "", "", "")
    original = Project.load(folder).story
    history = editor.workspace.history(folder)
    steps = len(history.undo)
    finished(editor.plan_story(folder, "a witch learns to fly over the sea", 5, 1, *offline, confirmed=True))
    first = Project.load(folder).story
    assert len(first.scenes) == 5 and len(history.undo) == steps + 1
    finished(editor.plan_story(folder, "a witch bakes bread in a mountain village", 5, 2, *offline, confirmed=True))
    assert len(history.undo) == steps + 2
    editor.workspace.undo(folder)
    assert Project.load(folder).story.model_dump(exclude={"revision"}) == first.model_dump(exclude={"revision"})
    editor.workspace.undo(folder)
    back = Project.load(folder).story
    assert back.scenes == original.scenes and back.topic == original.topic


def test_a_name_that_is_no_backend_is_refused_by_both_front_ends(editor, pair):
    from dreamrunner.backends import BACKENDS

    before = Project.load(pair[1]).story
    with pytest.raises(edits.EditError, match="'nonexistent' is not a backend; choose one of " + ", ".join(BACKENDS)):
        edits.set_backend(Project.load(pair[0]).story, "nonexistent")
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "set", str(pair[1]), "render.backend=nonexistent"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "'nonexistent' is not a backend" in result.stderr
    assert Project.load(pair[1]).story == before
