"""Re-planning keeps every field the user edited, unless asked to replace it."""

from __future__ import annotations

import json

import pytest

from dreamrunner.planning import (
    LLMPlanner,
    OfflinePlanner,
    PlannerSettings,
    PlanningError,
    replan_scene,
    replan_story,
)
from dreamrunner.planning.prompts import STORY_EXAMPLE_ANSWER
from dreamrunner import edits
from dreamrunner.edits import EditError
from dreamrunner.story import Character, Story

from llm_server import LLMServer
from planning_answers import scene_answer

CHARACTERS = [
    Character(id="mira", name="Mira", token="[v1]", description="a young witch"),
    Character(id="bolt", name="Bolt", token="[v2]", description="a small silver robot"),
]
NEW_BOX = (0.05, 0.1, 0.3, 0.5)


def changed(story: Story, edit, *args, **fields) -> Story:
    """A copy of `story` with one edit of dreamrunner.edits applied (the input stays as it was)."""
    copy = story.model_copy(deep=True)
    edit(copy, *args, **fields)
    return copy


@pytest.fixture
def story() -> Story:
    return OfflinePlanner(seed=0).plan_story("a journey across the desert", CHARACTERS, num_scenes=6)


def assert_shifted(track, planned, anchor):
    """Every box of `track` but the anchor's is the planned box moved by the anchor's offset from its plan
    (boxes slid back from an edge of the frame excepted)."""
    offset = [a - b for a, b in zip(track[anchor], planned[anchor])]
    assert track != planned
    inside = [k for k, box in enumerate(track) if k != anchor and 0 < box[0] and box[2] < 1 and 0 < box[1] and box[3] < 1]
    assert inside
    for k in inside:
        assert [a - b for a, b in zip(track[k], planned[k])] == pytest.approx(offset, abs=2e-4), k


def boxes(scene, name):
    return [next(e.box for e in k.entities if e.name == name) for k in scene.keyframes]


def test_replan_scene_keeps_an_edited_narration_and_box(story):
    edited = changed(story, edits.edit_scene, "s2", narration="Mira's own words.")
    mira = [e.name for e in edited.scene("s2").keyframes[2].entities].index("Mira")
    edited = changed(edited, edits.edit_entity, "s2", 2, mira, box=NEW_BOX)
    assert edited.scene("s2").user_edited == ["narration"]
    assert edited.scene("s2").keyframes[2].entities[mira].user_edited == ["box"]
    before = edited.model_dump()

    # The re-plan really changes the layout: without edits, seed 1 moves Mira elsewhere.
    fresh = replan_scene(story, "s2", OfflinePlanner(seed=1)).scene("s2")
    assert boxes(fresh, "Mira") != boxes(story.scene("s2"), "Mira")

    result = replan_scene(edited, "s2", OfflinePlanner(seed=1))
    scene = result.scene("s2")
    assert scene.narration == "Mira's own words." and scene.user_edited == ["narration"]
    mira_boxes = boxes(scene, "Mira")
    assert mira_boxes[2] == NEW_BOX
    # One edited box shifts the rest of the new track by its own offset from the plan (smooth, not zigzag).
    assert_shifted(mira_boxes, boxes(fresh, "Mira"), anchor=2)
    assert next(e for e in scene.keyframes[2].entities if e.name == "Mira").user_edited == ["box"]
    # Everything else follows the new plan; other scenes are untouched; the input story is unchanged.
    assert boxes(scene, "Bolt") == boxes(fresh, "Bolt")
    assert [s for s in result.scenes if s.id != "s2"] == [s for s in edited.scenes if s.id != "s2"]
    assert edited.model_dump() == before


def test_replace_lets_the_new_plan_win(story):
    edited = changed(changed(story, edits.edit_scene, "s2", background="a red canyon"), edits.edit_entity, "s2", 2, 0, box=NEW_BOX)
    fresh = replan_scene(story, "s2", OfflinePlanner(seed=1)).scene("s2")
    kept = replan_scene(edited, "s2", OfflinePlanner(seed=1), replace={"box"}).scene("s2")
    assert kept.background == "a red canyon" and kept.keyframes == fresh.keyframes
    everything = replan_scene(edited, "s2", OfflinePlanner(seed=1), replace={"*"}).scene("s2")
    assert everything.background == fresh.background and everything.user_edited == []
    with pytest.raises(PlanningError, match="cannot replace \\['boxes'\\]"):
        replan_scene(edited, "s2", OfflinePlanner(), replace={"boxes"})


def test_a_deleted_entity_stays_deleted_and_an_added_one_stays(story):
    assert story.scene("s3").keyframes[0].entities[1].name == "Bolt"
    lantern = dict(name="lantern", description="a glowing lantern on the sand", box=(0.45, 0.7, 0.55, 0.9))
    edited = changed(story, edits.delete_entity, "s3", 0, 1, all_keyframes=True)
    for k in range(3):
        edits.add_entity(edited, "s3", k, **lantern)
    assert all(k.user_edited == ["entities"] for k in edited.scene("s3").keyframes)
    result = replan_scene(edited, "s3", OfflinePlanner(seed=1)).scene("s3")
    fresh = replan_scene(story, "s3", OfflinePlanner(seed=1)).scene("s3")
    for k, keyframe in enumerate(result.keyframes):
        names = [e.name for e in keyframe.entities]
        assert names == (["Mira", "lantern"] if k < 3 else ["Mira"])
        # Mira was not edited: she follows the new plan.
        assert keyframe.entities[0] == next(e for e in fresh.keyframes[k].entities if e.name == "Mira")
    assert result.keyframes[0].entities[1].box == lantern["box"]
    # Freeing the keyframes brings Bolt back and drops nothing the user edited.
    freed = replan_scene(edited, "s3", OfflinePlanner(seed=1), replace={"entities"}).scene("s3")
    assert sorted(e.name for e in freed.keyframes[0].entities) == ["Bolt", "Mira", "lantern"]
    assert sorted(e.name for e in freed.keyframes[4].entities) == ["Bolt", "Mira"]


def test_an_edited_entity_the_new_plan_lacks_is_kept(story):
    data = story.model_dump()
    # A scene that names only Mira: the new plan has only her.
    data["scenes"][0].update(description="Mira is walking alone.", narration="Mira sets off.")
    edited = changed(Story.model_validate(data), edits.edit_entity, "s1", 4, 1, description="Bolt waiting in the shade")
    result = replan_scene(edited, "s1", OfflinePlanner()).scene("s1")
    assert [e.name for e in result.keyframes[0].entities] == ["Mira"]
    assert [e.name for e in result.keyframes[4].entities] == ["Mira", "Bolt"]
    assert result.keyframes[4].entities[1].description == "Bolt waiting in the shade"


def test_a_locked_layout_and_the_non_plan_fields_are_kept(story):
    data = story.model_dump()
    data["scenes"][3]["user_edited"] = ["keyframes"]
    data["scenes"][3]["renders"] = [{"seed": 1, "path": "media/r.mp4", "cache_key": "k", "backend": "tiny", "is_noise": True}]
    locked = Story.model_validate(data)
    result = replan_scene(locked, "s4", OfflinePlanner(seed=1)).scene("s4")
    assert result.keyframes == locked.scene("s4").keyframes and result.renders == locked.scene("s4").renders
    assert result.background == replan_scene(story, "s4", OfflinePlanner(seed=1)).scene("s4").background


def test_edit_helpers_refuse_bad_edits(story):
    with pytest.raises(EditError, match="no scene 'zz'"):
        edits.edit_scene(story, "zz", narration="x")
    with pytest.raises(EditError, match="cannot edit \\['id'\\]"):
        edits.edit_scene(story, "s1", id="x")
    with pytest.raises(EditError, match="no entity 10"):
        edits.edit_entity(story, "s1", 0, 9, box=NEW_BOX)
    with pytest.raises(EditError, match="no keyframe 7"):
        edits.edit_entity(story, "s1", 6, 0, box=NEW_BOX)
    with pytest.raises(EditError, match="x0 = 0.9 must be less than x1"):
        edits.edit_entity(story, "s1", 0, 0, box=(0.9, 0.1, 0.2, 0.5))
    with pytest.raises(EditError, match="no entity 10"):
        edits.delete_entity(story, "s1", 0, 9)


def test_replan_story_keeps_edited_story_fields_and_plans_from_them(story):
    edited = changed(story, edits.edit_scene, "s1", narration="My opening line.")
    edited = changed(edited, edits.edit_scene, "s3", description="Mira is riding a horse past the dunes.", motions=["riding a horse"])
    edited = changed(edited, edits.edit_entity, "s2", 0, 0, box=NEW_BOX)
    before = edited.model_dump()
    with LLMServer() as server:
        server.llm.queue(json.dumps(STORY_EXAMPLE_ANSWER), *[json.dumps(scene_answer(0.01 * i)) for i in range(6)])
        planner = LLMPlanner(PlannerSettings(base_url=server.base_url, model="m", timeout=5, http_retries=0))
        result = replan_story(edited, planner)
        scene_requests = [json.loads(r["body"]["messages"][-1]["content"]) for r in server.llm.requests[1:]]
    assert server.llm.requests[0]["body"]["messages"][-1]["content"].count('"scenes": 6')
    narrations = [s.narration for s in result.scenes]
    assert narrations[0] == "My opening line."
    assert narrations[1:] == [s["narration"] for s in STORY_EXAMPLE_ANSWER["scenes"][1:]]
    assert result.scene("s3").description == "Mira is riding a horse past the dunes."
    assert result.scene("s3").motions == ["riding a horse"]
    assert result.scene("s4").description == STORY_EXAMPLE_ANSWER["scenes"][3]["scene"]
    # The scene-level plan of s3 was asked for from the user's text, not the new outline's.
    assert scene_requests[2]["scene"] == "Mira is riding a horse past the dunes."
    assert scene_requests[0]["narration"] == "My opening line."
    assert [s.id for s in result.scenes] == [s.id for s in edited.scenes] and result.title == edited.title
    assert result.scene("s2").keyframes[0].entities[0].box == NEW_BOX
    planned = [tuple(k["entities"][0]["box"]) for k in scene_answer(0.01)["keyframes"]]
    assert_shifted([k.entities[0].box for k in result.scene("s2").keyframes], planned, anchor=0)
    assert edited.model_dump() == before
