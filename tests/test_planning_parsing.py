"""Parsing LLM answers: safe repairs, clear errors, and a property test over thousands of corruptions."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dreamrunner.plan_format import format_plan
from dreamrunner.planning import PlanningError, parse_scene_answer, parse_story_answer
from dreamrunner.planning.prompts import SCENE_EXAMPLE_ANSWER, STORY_EXAMPLE_ANSWER, _characters
from dreamrunner.story import NUM_KEYFRAMES, Character, KeyFrame, Scene

CHARACTERS = [
    Character(id="mira", name="Mira", token="[v1]", description="a young witch with a pointed hat"),
    Character(id="pip", name="Pip", token="[v2]", description="a small black cat"),
]
SCENE = Scene(id="s3", description="Mira flies over the roofs with Pip.", narration="They rose.", motions=["flying"],
              background="placeholder", keyframes=[KeyFrame(index=k) for k in range(NUM_KEYFRAMES)])
GOOD = json.dumps(SCENE_EXAMPLE_ANSWER, indent=1)


def check_plan(scene: Scene) -> None:
    """What every accepted plan guarantees."""
    again = Scene.model_validate(scene.model_dump())
    assert again == scene
    assert [k.index for k in scene.keyframes] == list(range(NUM_KEYFRAMES))
    assert (scene.id, scene.narration, scene.motions) == ("s3", "They rose.", ["flying"])
    for keyframe in scene.keyframes:
        for entity in keyframe.entities:
            assert all(0.0 <= v <= 1.0 for v in entity.box) and entity.box[0] < entity.box[2] and entity.box[1] < entity.box[3]
            if entity.character_id is not None:
                token = {c.id: c.token for c in CHARACTERS}[entity.character_id]
                assert token in entity.description


def test_the_in_context_examples_are_valid_plans():
    scene, repairs = parse_scene_answer(json.dumps(SCENE_EXAMPLE_ANSWER), SCENE, CHARACTERS)
    check_plan(scene)
    assert repairs == []
    assert [e.character_id for e in scene.keyframes[0].entities] == ["mira", "pip", None]
    outline, repairs = parse_story_answer(json.dumps(STORY_EXAMPLE_ANSWER))
    assert len(outline.scenes) == 6 and repairs == []
    assert _characters(CHARACTERS, with_tokens=True)[0] == {"name": "Mira", "token": "[v1]",
                                                             "description": "a young witch with a pointed hat"}


def test_the_papers_plan_string_is_accepted():
    scene, _ = parse_scene_answer(json.dumps(SCENE_EXAMPLE_ANSWER), SCENE, CHARACTERS)
    text = format_plan(scene)
    again, repairs = parse_scene_answer("Here you go:\n" + text, SCENE, CHARACTERS)
    assert again.keyframes == scene.keyframes and again.background == scene.background
    assert any("plan-string" in str(r) for r in repairs)


def test_lenient_forms_are_repaired_and_reported():
    answer = {"plan": {"background": "a lane", "frames": [
        {"entities": [[["Mira", "none", "a witch waiting"], [0.1, 0.2, 0.3, 0.9]],
                      {"name": "Pip", "bbox": {"x0": 0.5, "y0": 0.5, "x1": "0.7", "y1": 0.9}},
                      {"motion": "walking", "description": "a lamp post", "box": [0.9, 0.1, 1.0, 0.9]}]}] * 6}}
    raw = str(answer)  # Python repr: single quotes, None
    scene, repairs = parse_scene_answer(raw, SCENE, CHARACTERS)
    check_plan(scene)
    mira, pip, lamp = scene.keyframes[0].entities
    assert (mira.motion, mira.character_id, mira.description) == (None, "mira", "a [v1] witch waiting")
    assert (pip.box, pip.description, pip.character_id) == ((0.5, 0.5, 0.7, 0.9), "[v2] Pip", "pip")
    assert (lamp.name, lamp.motion) == ("a lamp post", "walking")
    text = "\n".join(map(str, repairs))
    assert "Python literal" in text and "description was missing" in text and "name was missing" in text


@pytest.mark.parametrize("raw, message", [
    ("", "empty"),
    ("I'm sorry, I can't help with that.", "not valid JSON"),
    ('{"background": "a lane"}', "no \"keyframes\""),
    ('{"keyframes": [{"entities": []}]}', "no \"background\""),
    ('[1, 2, 3]', "not a JSON object"),
    ('{"background": "x", "keyframes": [' + '{"entities": [], ' * 3, "not valid JSON"),
])
def test_unusable_answers_are_clear_errors_with_the_raw_text(raw, message):
    with pytest.raises(PlanningError, match=message) as caught:
        parse_scene_answer(raw, SCENE, CHARACTERS)
    assert caught.value.raw == raw


def test_story_answer_problems_are_listed():
    bad = {"title": "t", "scenes": [{"scene": "", "motions": [], "narration": "n"}, "x"] + [STORY_EXAMPLE_ANSWER["scenes"][0]] * 3}
    with pytest.raises(PlanningError) as caught:
        parse_story_answer(json.dumps(bad))
    assert caught.value.problems == ['scene 1: "scene" is missing or empty', "scene 2: is not an object",
                                     "expected 5 to 8 scenes, got 5"][:2]
    outline, repairs = parse_story_answer(json.dumps({"scenes": [{"scene": "a", "motions": "walking, waving"}] * 5}))
    assert outline.scenes[0].motions == ["walking", "waving"] and outline.scenes[0].narration == "a"
    assert len(repairs) == 10


# ---------------------------------------------------------------- property test

_CHARS = st.sampled_from(list('{}[]",:.-0123456789eE \n\tabcnulltrue\\`\''))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_KEYS = ["background", "keyframes", "entities", "name", "motion", "description", "box"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def structural(draw):
    """The good answer's data with some values replaced or deleted, as JSON text."""
    data = json.loads(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "number"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "number":
            parent[path[-1]] = draw(st.floats(-3, 3, allow_nan=False) | st.sampled_from([1e308, -0.0, 2, "0.5"]))
        else:
            parent[path[-1]] = draw(_JSON)
        if not isinstance(data, dict):
            break
    if draw(st.booleans()):
        data = {draw(st.sampled_from(_KEYS + ["plan"])): data}
    return json.dumps(data)


@st.composite
def textual(draw, good: str = GOOD):
    """A good answer's text cut, spliced, duplicated or wrapped."""
    text = good
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["truncate", "delete", "insert", "duplicate", "fence", "prose"]))
        if action == "truncate":
            text = text[:position]
        elif action == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 40)):]
        elif action == "insert":
            text = text[:position] + draw(st.text(_CHARS, min_size=1, max_size=8)) + text[position:]
        elif action == "duplicate":
            text = text[:position] + text[position:position + draw(st.integers(1, 60))] + text[position:]
        elif action == "fence":
            text = "```json\n" + text + ("\n```" if draw(st.booleans()) else "")
        else:
            text = draw(st.sampled_from(["Here is the plan: ", "", "Sure!\n"])) + text + draw(st.sampled_from(["", " Hope it helps.", "}"]))
    return text


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=structural() | textual())
def test_any_corruption_gives_a_valid_plan_or_a_clear_error(raw):
    try:
        scene, _ = parse_scene_answer(raw, SCENE, CHARACTERS)
    except PlanningError as error:
        event("clear error")
        assert error.raw == raw and str(error)
    else:
        event("valid plan")
        check_plan(scene)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=textual(json.dumps(STORY_EXAMPLE_ANSWER, indent=1)) | st.text(max_size=50))
def test_any_story_answer_gives_an_outline_or_a_clear_error(raw):
    try:
        outline, _ = parse_story_answer(raw)
    except PlanningError as error:
        assert error.raw == raw
    else:
        assert 5 <= len(outline.scenes) <= 8 and all(s.scene and s.narration for s in outline.scenes)


@pytest.mark.parametrize("name, description, expected", [
    ("Mira", "a girl", "mira"),
    ("mira the witch", "someone flying", "mira"),
    ("Mira's broom", "a broom", None),
    ("cat", "A [v1] witch with a [v2] cat", "pip"),
    ("shadow", "a [v2] small black cat's shadow", "pip"),
    ("small black cat", "sleeping", "pip"),
    ("tree", "an oak tree", None),
])
def test_which_entity_is_which_character(name, description, expected):
    from dreamrunner.planning.parsing import find_character
    from dreamrunner.story import Entity

    found = find_character(Entity(name=name, description=description, box=(0, 0, 1, 1)), CHARACTERS)
    assert (found.id if found else None) == expected
