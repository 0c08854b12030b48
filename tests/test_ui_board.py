"""The editor's glue without a browser: box-editor pixels <-> normalized boxes, the entity table, and the
workspace's last-project memory, rollback and autosave."""

from __future__ import annotations

import json

import pytest

from dreamrunner.edits import EditError
from dreamrunner.project import Project, ProjectError
from dreamrunner.story import Story
from ui import board
from ui.board import BoardEditError, CanvasSize
from ui.workspace import Workspace

SIZE = CanvasSize(720, 480)


@pytest.fixture
def story(simple_story_data) -> Story:
    return Story.model_validate(simple_story_data)


def boxes_of(keyframe, story):
    return board.annotator_boxes(story.scenes[0], keyframe.index, SIZE)


def test_an_unmoved_box_changes_nothing_and_marks_nothing(story):
    keyframe = story.scenes[0].keyframes[2]
    before = keyframe.model_copy(deep=True)
    assert board.apply_boxes(story, "s1", 2, boxes_of(keyframe, story), SIZE) == []
    assert keyframe == before


def test_a_dragged_box_is_stored_normalized_and_marked(story):
    keyframe = story.scenes[0].keyframes[0]
    sent = boxes_of(keyframe, story)
    sent[0].update(xmin=sent[0]["xmin"] + 72, xmax=sent[0]["xmax"] + 72, ymin=sent[0]["ymin"] + 48,
                   ymax=sent[0]["ymax"] + 48)
    changes = board.apply_boxes(story, "s1", 0, sent, SIZE)
    assert changes and "moved 'witch'" in changes[0]
    assert keyframe.entities[0].box == pytest.approx((0.1, 0.2, 0.4, 0.6))
    assert keyframe.entities[0].user_edited == ["box"]
    assert keyframe.entities[1].user_edited == []


def test_added_renamed_and_deleted_boxes(story):
    keyframe = story.scenes[0].keyframes[0]
    # The box editor puts a drawn box first; a named one is added (an unnamed one waits for its dialog).
    sent = [{"xmin": 0, "ymin": 0, "xmax": 72, "ymax": 48, "label": ""}] + boxes_of(keyframe, story)
    assert board.pending_box(story, "s1", 0, sent, SIZE)
    board.apply_boxes(story, "s1", 0, sent, SIZE)
    assert [e.name for e in keyframe.entities] == ["witch", "owl", "entity 3"]
    assert keyframe.entities[2].box == (0.0, 0.0, 0.1, 0.1)
    assert keyframe.user_edited == ["entities"]
    sent = boxes_of(keyframe, story)
    sent[1]["label"] = "old owl"
    board.apply_boxes(story, "s1", 0, sent, SIZE)
    assert keyframe.entities[1].name == "old owl" and keyframe.entities[1].is_edited("name")
    board.apply_boxes(story, "s1", 0, [sent[0], sent[2]], SIZE)
    assert [e.name for e in keyframe.entities] == ["witch", "entity 3"]


def test_a_box_outside_the_frame_is_refused(story):
    keyframe = story.scenes[0].keyframes[0]
    sent = boxes_of(keyframe, story)
    sent[0].update(xmin=800, xmax=900)
    with pytest.raises(BoardEditError, match="no area inside the frame"):
        board.apply_boxes(story, "s1", 0, sent, SIZE)


def test_table_edits_are_validated_and_marked(story):
    keyframe = story.scenes[0].keyframes[0]
    rows = board.entity_rows(keyframe)
    rows[1][3] = "a grey owl on a branch"
    rows[1][1] = "Mira"  # a character may be named by id, name or token
    board.apply_rows(story, "s1", 0, rows)
    owl = keyframe.entities[1]
    assert owl.description == "a grey owl on a branch" and owl.character_id == "c1"
    assert owl.user_edited == ["character_id", "description"]
    rows = board.entity_rows(keyframe)
    rows[0][4] = 2.0
    with pytest.raises(EditError, match=r"entity 1 \('witch'\), box: x0 = 2.0 is outside \[0, 1\]"):
        board.apply_rows(story, "s1", 0, rows)
    rows = board.entity_rows(keyframe)
    rows[0][1] = "nobody"
    with pytest.raises(EditError, match="'nobody' is not a character of the story"):
        board.apply_rows(story, "s1", 0, rows)


def test_workspace_remembers_the_last_project_and_rolls_back_failed_edits(tmp_path, story):
    workspace = Workspace(home=tmp_path / "home")
    folder = workspace.startup_folder()
    assert folder == (tmp_path / "home" / "projects" / "demo").resolve()
    assert (folder / "media" / "characters" / "pip_1.png").is_file()
    other = tmp_path / "other"
    workspace.create(other, story)
    assert Workspace(home=tmp_path / "home").startup_folder() == other.resolve()

    with workspace.edit(other) as project:
        project.story.scenes[0].narration = "saved at once"
    assert json.loads((other / "project.json").read_text())["story"]["scenes"][0]["narration"] == "saved at once"

    with pytest.raises(BoardEditError):
        with workspace.edit(other) as project:
            project.story.scenes[0].narration = "half done"
            raise BoardEditError("refused")
    assert workspace.open(other).story.scenes[0].narration == "saved at once"

    workspace.set_autosave(False)
    with workspace.edit(other) as project:
        project.story.scenes[0].narration = "not yet saved"
    assert workspace.is_dirty(other)
    assert Project.load(other).story.scenes[0].narration == "saved at once"
    workspace.save(other)
    assert Project.load(other).story.scenes[0].narration == "not yet saved"


def test_folders_typed_in_the_page_stay_inside_the_roots(tmp_path):
    home = tmp_path / "home"
    workspace = Workspace(home=home, roots=[tmp_path / "extra"])
    assert workspace.resolve_folder("mine") == (home / "projects" / "mine").resolve()
    assert workspace.resolve_folder(str(tmp_path / "extra" / "a" / "b")) == (tmp_path / "extra" / "a" / "b").resolve()
    (home / "projects").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (home / "projects" / "link").symlink_to(tmp_path / "outside")
    for text in (str(tmp_path), "../x", "~", str(tmp_path / "extra-2"), "link", "link/inner", "/"):
        with pytest.raises(ProjectError, match="is outside the folders this editor may use"):
            workspace.resolve_folder(text)


def test_the_project_opened_at_start_is_a_root_and_a_damaged_one_opens_the_demo(tmp_path):
    home = tmp_path / "home"
    workspace = Workspace(home=home)
    folder, problem = workspace.start(tmp_path / "elsewhere")  # app.py --project elsewhere
    assert problem is None and folder == (tmp_path / "elsewhere").resolve()
    assert workspace.resolve_folder(str(tmp_path / "elsewhere" / "sub")) == folder / "sub"

    (folder / "project.json").write_text("[]")
    folder_again, problem = Workspace(home=home).start()  # the last project, now damaged
    assert folder_again == (home / "projects" / "demo").resolve()
    assert problem.folder == folder and "not a DreamRunner Studio project" in problem.error
    assert "project.json.bak not found" in problem.backup_error
