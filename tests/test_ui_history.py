"""Undo and redo (the workspace's history of story edits), entity tracks (one edit for every keyframe, scene
motions carried onto the entities), smooth re-planning around edited keyframes, and the box editor's
reports (a box being drawn, a turned picture) - without a browser."""

from __future__ import annotations

import pytest

from dreamrunner import edits
from dreamrunner.palette import entity_colors, keyframe_colors
from dreamrunner.planning import OfflinePlanner, replan_scene
from dreamrunner.project import Project
from dreamrunner.story import Character, Story
from dreamrunner.validation import first_message
from ui import board
from ui.board import CanvasSize
from ui.messages import describe, upload_folder
from ui.workspace import HISTORY_LIMIT, UndoError, Workspace, describe_change

SIZE = CanvasSize(720, 480)
MIRA = [Character(id="mira", name="Mira", token="[v1]", description="a young witch")]


@pytest.fixture
def story(simple_story_data) -> Story:
    return Story.model_validate(simple_story_data)


@pytest.fixture
def workspace(tmp_path, story):
    workspace = Workspace(home=tmp_path / "home")
    workspace.create(tmp_path / "p", story)
    return workspace


def test_undo_and_redo_a_drag_an_added_box_and_a_replan(workspace, tmp_path):
    folder = tmp_path / "p"
    original = workspace.open(folder).story.model_copy(deep=True)
    with workspace.edit(folder) as project:
        edits.edit_entity(project.story, "s1", 0, 0, box=(0.1, 0.2, 0.4, 0.6))
    with workspace.edit(folder) as project:
        edits.add_entity(project.story, "s1", 1, "lantern", (0.1, 0.1, 0.3, 0.5))
    with workspace.edit(folder) as project:
        project.story = replan_scene(project.story, "s1", OfflinePlanner(seed=2))
    replanned = Project.load(folder).story
    assert workspace.history(folder).undo[-1].label.startswith("scene 's1'")

    workspace.undo(folder)  # the re-plan
    assert [e.name for e in Project.load(folder).story.scenes[0].keyframes[1].entities][-1] == "lantern"
    workspace.undo(folder)  # the added box
    assert [e.name for e in Project.load(folder).story.scenes[0].keyframes[1].entities] == ["witch", "owl"]
    step = workspace.undo(folder)  # the drag
    assert "'witch', box" in step.label
    assert Project.load(folder).story == original
    with pytest.raises(UndoError, match="nothing to undo"):
        workspace.undo(folder)

    for _ in range(3):
        workspace.redo(folder)
    assert Project.load(folder).story == replanned
    with pytest.raises(UndoError, match="nothing to redo"):
        workspace.redo(folder)
    # A new edit after an undo drops what could be redone.
    workspace.undo(folder)
    with workspace.edit(folder) as project:
        edits.edit_scene(project.story, "s1", narration="new words")
    assert not workspace.history(folder).redo


def test_undo_keeps_what_another_writer_saved_and_refuses_when_they_changed_the_same_place(workspace, tmp_path):
    folder = tmp_path / "p"
    with workspace.edit(folder) as project:
        edits.edit_scene(project.story, "s1", narration="mine")
    other = Project.load(folder)  # a CLI command: changes the title, saves
    with other.edit():
        edits.set_story_fields(other.story, title="Their title")
    workspace.undo(folder)
    saved = Project.load(folder).story
    assert saved.title == "Their title" and saved.scenes[0].narration == "The witch flies past the owl."

    workspace.redo(folder)
    other = Project.load(folder)
    with other.edit():
        edits.edit_scene(other.story, "s1", narration="theirs")
    with pytest.raises(UndoError, match=r"cannot undo scene 's1', narration: it was changed again since"):
        workspace.undo(folder)
    assert Project.load(folder).story.scenes[0].narration == "theirs"


def test_the_history_is_bounded(workspace, tmp_path):
    folder = tmp_path / "p"
    for n in range(HISTORY_LIMIT + 5):
        with workspace.edit(folder) as project:
            edits.edit_scene(project.story, "s1", narration=f"take {n}")
    assert len(workspace.history(folder).undo) == HISTORY_LIMIT


def test_describe_change_names_the_place(story):
    before = story.model_dump(mode="json")
    edits.edit_entity(story, "s1", 2, 1, description="an old owl")
    assert describe_change(before, story.model_dump(mode="json")) == "scene 's1', keyframe 3, 'owl', description"
    edits.set_story_fields(story, title="New")
    assert describe_change(before, story.model_dump(mode="json")).startswith("title; scene 's1'")


def test_a_motion_edited_once_reaches_all_six_keyframes_and_scene_motions_follow(story):
    rows = board.entity_rows(story.scenes[0].keyframes[2])
    rows[0][2] = "soaring"
    board.apply_rows(story, "s1", 2, rows, whole_track=True)
    scene = story.scenes[0]
    assert [k.entities[0].motion for k in scene.keyframes] == ["soaring"] * 6
    assert scene.motions == ["flying", "soaring"]  # a new motion joins the scene's motions
    # A motion replaced in the scene's list is replaced on the entities that carry it.
    edits.edit_scene(story, "s1", motions=["gliding", "soaring"])
    edits.edit_entity(story, "s1", 0, 0, all_keyframes=True, motion="gliding")
    edits.edit_scene(story, "s1", motions=["diving", "soaring"])
    assert [k.entities[0].motion for k in scene.keyframes] == ["diving"] * 6
    edits.edit_scene(story, "s1", motions=["soaring"])
    assert {k.entities[0].motion for k in scene.keyframes} == {None}
    # A name the scene already has joins that track: character, motion and description come along.
    entity = edits.add_entity(story, "s1", 1, "owl", (0.1, 0.1, 0.2, 0.2))
    assert entity.description == "An owl on a branch"


def test_replanning_around_edited_keyframes_has_no_zigzag():
    story = OfflinePlanner(seed=0).plan_story("a walk in the city street", MIRA, num_scenes=6)
    scene_id = story.scenes[0].id
    planned = [k.entities[0].box[0] for k in story.scenes[0].keyframes]
    assert planned == sorted(planned)  # Mira walks to the right
    # The example: keyframes 1 and 4 placed by hand, the others left to the planner.
    for k, left in ((0, 0.22), (3, 0.18)):
        box = story.scenes[0].keyframes[k].entities[0].box
        edits.edit_entity(story, scene_id, k, 0, box=(left, box[1], left + box[2] - box[0], box[3]))
    lefts = [k.entities[0].box[0] for k in replan_scene(story, scene_id, OfflinePlanner()).scenes[0].keyframes]
    assert lefts[0] == 0.22 and lefts[3] == 0.18
    steps = [b - a for a, b in zip(lefts, lefts[1:])]
    turns = sum(1 for a, b in zip(steps, steps[1:]) if a * b < 0)
    assert turns <= 1, lefts  # down to the edited keyframe 4, then on with the walk: no back and forth
    assert max(abs(s) for s in steps) <= 0.15, lefts


def test_another_seed_gives_another_plan_of_an_unedited_scene():
    story = OfflinePlanner(seed=0).plan_story("a walk in the city street", MIRA, num_scenes=6)
    scene_id = story.scenes[0].id
    assert replan_scene(story, scene_id, OfflinePlanner(seed=0)).scenes[0] == story.scenes[0]
    assert replan_scene(story, scene_id, OfflinePlanner(seed=1)).scenes[0].keyframes != story.scenes[0].keyframes


def test_a_drawn_box_waits_for_its_label_then_is_added_with_the_tracks_colour(story):
    scene = story.scenes[0]
    shown = board.annotator_boxes(scene, 0, SIZE)
    drawing = [{"xmin": 10, "ymin": 10, "xmax": 10, "ymax": 10, "label": ""}] + shown
    assert board.pending_box(story, "s1", 0, drawing, SIZE)
    assert not board.pending_box(story, "s1", 0, shown, SIZE)
    labelled = [{"xmin": 36, "ymin": 48, "xmax": 108, "ymax": 144, "label": "Mira"}] + shown
    assert board.apply_boxes(story, "s1", 0, labelled, SIZE) == ["added 'Mira'"]
    entities = scene.keyframes[0].entities
    assert [e.name for e in entities] == ["witch", "owl", "Mira"]
    assert entities[2].character_id == "c1" and entities[2].box == (0.05, 0.1, 0.15, 0.3)
    assert entities[0].user_edited == [] and entities[1].user_edited == []
    labels, colors = board.label_choices(story, scene, 1)  # keyframe 2 has no Mira: offered first
    assert labels == ["Mira", "witch", "owl"]
    assert colors[1] == "#{:02x}{:02x}{:02x}".format(*entity_colors(scene)[("witch", 0)])
    assert [b["color"] for b in board.annotator_boxes(scene, 0, SIZE)] == [
        board.css_color(c) for c in keyframe_colors(scene, 0)]


def test_boxes_from_a_turned_picture_are_read_upright(story):
    scene = story.scenes[0]
    shown = board.annotator_boxes(scene, 0, SIZE)
    # What the box editor sends after one clockwise turn: (x, y) -> (480 - y, x).
    turned = [{**b, "xmin": 480 - b["ymax"], "xmax": 480 - b["ymin"], "ymin": b["xmin"], "ymax": b["xmax"]}
              for b in shown]
    assert board.upright(turned, 1, SIZE) == shown
    twice = [{**b, "xmin": 720 - b["xmax"], "xmax": 720 - b["xmin"], "ymin": 480 - b["ymax"], "ymax": 480 - b["ymin"]}
             for b in shown]
    assert board.upright(twice, 2, SIZE) == shown
    assert board.apply_boxes(story, "s1", 0, board.upright(turned, 1, SIZE), SIZE) == []


def test_messages_are_plain_words(story, tmp_path):
    with pytest.raises(edits.EditError, match="the name may not be empty"):
        edits.edit_character(story, "c1", name=" ")
    try:
        story.scenes[0].keyframes[0].entities[0].description = ""
    except ValueError as error:
        assert first_message(error) == "may not be empty"
    upload = upload_folder() / "0a1b2c3d" / "my scan.png"
    assert describe(ValueError(f"cannot identify image file '{upload}'")) == "cannot identify image file 'my scan.png'"

