"""Parsing LLM answers: safe repairs and clear errors, one test per reported answer (the property test over
thousands of mutated answers is in test_parsing_properties.py)."""

from __future__ import annotations

import json

import pytest

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


def _story_of(count: int) -> dict:
    scenes = [{"scene": f"Mira crosses bridge {n} of the village.", "motions": ["walking"],
               "narration": f"Mira crossed the {n}th bridge."} for n in range(1, count + 1)]
    return {"title": "Mira's \"Long\" Walk", "scenes": scenes}


@pytest.mark.parametrize("cut_after", ['"narration": "Mira cro', '"motions": ["walk', "}, ", '{"scene"'])
def test_a_story_plan_cut_off_after_enough_whole_scenes_keeps_them_and_says_so(cut_after):
    """Qwen2.5-Coder-1.5B ran to the 1,536-token limit on three story plans in a row (docs/planning.md): every
    answer was refused as cut off. The scenes written whole before the cut are a story when there are enough."""
    text = json.dumps(_story_of(7))
    seventh = text.index('"Mira crosses bridge 7')
    cut = text.rindex(cut_after, 0, seventh) if cut_after in ("}, ", '{"scene"') else text.index(cut_after, seventh)
    outline, repairs = parse_story_answer("Here is the plan:\n```json\n" + text[:cut + len(cut_after)])
    assert outline.title == 'Mira\'s "Long" Walk'
    assert [s.scene for s in outline.scenes] == [f"Mira crosses bridge {n} of the village." for n in range(1, 7)]
    assert any("cut off after 6 whole scenes; kept them (the story may end early" in str(r) for r in repairs)


def test_a_runaway_story_plan_cut_off_after_more_scenes_than_a_story_keeps_the_first_ones():
    """14 whole scenes before the cut (a small model that never closes the list) were sent back as "expected 5 to
    8 scenes, got 14": the story ends early either way, so its first 8 are kept, and the first 7 when asked for 7."""
    text = json.dumps(_story_of(15))
    cut = text[:text.index('"scene": "Mira crosses bridge 15') + 20]
    outline, repairs = parse_story_answer(cut)
    assert [s.scene for s in outline.scenes] == [f"Mira crosses bridge {n} of the village." for n in range(1, 9)]
    assert any("cut off after 14 whole scenes; kept the first 8 (the story may end early" in str(r) for r in repairs)
    outline, _ = parse_story_answer(cut, num_scenes=7)
    assert len(outline.scenes) == 7
    with pytest.raises(PlanningError, match="expected 5 to 8 scenes, got 14"):  # whole, not cut off: asked again
        parse_story_answer(json.dumps(_story_of(14)))


@pytest.mark.parametrize("cut_in", ["null", "true", "false"])
def test_a_story_plan_cut_inside_a_word_keeps_its_whole_scenes(cut_in):
    """A cut inside null/true/false ("Expecting value", not "Unterminated string") threw 9 whole scenes away."""
    story = _story_of(12)
    for scene in story["scenes"]:
        scene["extra"] = json.loads(cut_in)
    text = json.dumps(story)
    cut = text.index(f'"extra": {cut_in}', text.index('"Mira crosses bridge 10')) + len(f'"extra": ') + 2
    outline, repairs = parse_story_answer(text[:cut])
    assert len(outline.scenes) == 8
    assert any("cut off after 9 whole scenes; kept the first 8" in str(r) for r in repairs), repairs


def test_a_story_plan_cut_after_its_closed_scene_list_keeps_it_and_its_title():
    """Cut after the list had closed ('], "characters": [{"na'), 12 scenes were refused as 12 and 7 lost the
    title, with "a bare list of scenes; wrapped it" and no word of the cut. A scene count at the end of the text
    is no scene ("1" may be the start of "12")."""
    for count, kept, early in ((12, 8, True), (7, 7, False)):
        text = json.dumps(_story_of(count))[:-1]
        for tail in (', "characters": [{"na', ""):
            outline, repairs = parse_story_answer(text + tail)
            assert len(outline.scenes) == kept and outline.title == 'Mira\'s "Long" Walk'
            assert [str(r) for r in repairs] == [
                f"answer: it was cut off after its list of {count} scenes; "
                + (f"kept the first {kept} (the story may end early: edit its last scene, or plan again)" if early
                   else "kept them")]
    # Whole, or a bare fragment of a list: not cut, as before.
    assert parse_story_answer(json.dumps(_story_of(7)))[1] == []
    assert "a bare list of scenes; wrapped it" in str(parse_story_answer(
        '"scenes": ' + json.dumps(_story_of(7)["scenes"]))[1])
    text = json.dumps(_story_of(12))
    _, repairs = parse_story_answer(text[:text.index('{"scene": "Mira crosses bridge 10')] + "1")
    assert any("cut off after 9 whole scenes" in str(r) for r in repairs)


@pytest.mark.parametrize("draft", [
    "Draft:\n" + json.dumps(_story_of(6)) + "\nFinal:\n",  # a whole draft, then the plan the server cut off
    "<think>" + json.dumps(_story_of(12)) + "</think>\n",  # a draft of 12 in the reasoning
])
def test_a_story_plan_the_server_cut_off_wins_over_a_whole_draft_before_it(draft):
    """With the server's finish reason "length", the whole draft before the cut plan was taken silently (6
    scenes, "took the JSON out of the text around it"), or a reasoning draft of 12 was refused as 12."""
    text = json.dumps(_story_of(12))
    raw = draft + text[:text.index('"scene": "Mira crosses bridge 8') + 20]
    outline, repairs = parse_story_answer(raw, cut_off=True)
    assert [s.scene for s in outline.scenes] == [f"Mira crosses bridge {n} of the village." for n in range(1, 8)]
    assert any("cut off after 7 whole scenes; kept them" in str(r) for r in repairs)
    # A whole plan followed by prose the server cut is that plan, whatever key comes after its list (a second
    # helper: with "title" after "scenes", the title was lost and the plan said to be cut; 12 scenes and a
    # "moral" after them kept 8 instead of asking again).
    for plan in (_story_of(6), {"scenes": _story_of(6)["scenes"], "title": "Real title"},
                 dict(_story_of(6), style="watercolor")):
        outline, repairs = parse_story_answer(json.dumps(plan) + "\nI hope this helps! The", cut_off=True)
        assert len(outline.scenes) == 6 and outline.title == plan["title"]
        assert not any("cut off" in str(r) for r in repairs), repairs
    with pytest.raises(PlanningError, match="expected 5 to 8 scenes, got 12"):
        parse_story_answer(json.dumps(dict(_story_of(12), moral="be kind")) + "\nprose", cut_off=True)


def test_a_story_plan_the_server_cut_too_early_is_sent_back_not_replaced_by_a_draft():
    """The whole 6-scene draft was taken silently when the plan after it was cut with 4 whole scenes."""
    text = json.dumps(_story_of(8))
    raw = json.dumps(_story_of(6)) + "\nFinal:\n" + text[:text.index('"scene": "Mira crosses bridge 5') + 20]
    with pytest.raises(PlanningError) as caught:
        parse_story_answer(raw, cut_off=True)
    assert caught.value.problems == ["it was cut off after 4 whole scene(s) of its plan; a story needs at least 5"]
    assert caught.value.raw == raw


def test_a_bare_scene_list_after_prose_with_braces_is_not_called_cut():
    outline, repairs = parse_story_answer('Here is the list {as asked}:\n"scenes": ' + json.dumps(_story_of(7)["scenes"]))
    assert len(outline.scenes) == 7 and not any("cut off" in str(r) for r in repairs)


def test_story_plans_a_third_helper_found_misread():
    """A trailing comma before the plan's last "}" was called cut after its list (the bare list was taken before
    the Python-literal reading); a plan cut after a closed list of 4 lost its title and was split to 5 unsaid;
    more than 20 braces between the plan's "{" and its list hid the cut."""
    whole = json.dumps(_story_of(6))
    for raw in (whole[:-1] + ",}", whole[:-1] + ', "mood": "calm",}'):
        outline, repairs = parse_story_answer(raw)
        assert len(outline.scenes) == 6 and outline.title == 'Mira\'s "Long" Walk'
        assert [str(r) for r in repairs] == ["answer: read it as a Python literal (single quotes or trailing commas)"]
    with pytest.raises(PlanningError) as caught:
        parse_story_answer(json.dumps(_story_of(4))[:-1] + ', "mo')
    assert caught.value.problems == ["it was cut off after 4 whole scene(s) of its plan; a story needs at least 5"]
    crowded = {"title": "Crowded", "characters": [{"name": f"c{n}", "tags": {"a": {}}} for n in range(25)],
               "scenes": _story_of(6)["scenes"]}
    outline, repairs = parse_story_answer(json.dumps(crowded)[:-1] + ', "mo')
    assert outline.title == "Crowded" and [str(r) for r in repairs] == [
        "answer: it was cut off after its list of 6 scenes; kept them"]


def test_a_cut_story_plan_whose_title_holds_raw_line_breaks_keeps_its_scenes():
    """Found by test_parsing_properties: a title with raw line breaks (invalid JSON) raised JSONDecodeError from the
    cut plan's title; a title with a bad escape has none."""
    text = json.dumps(_story_of(7)).replace("Long", "Lo\n\nng", 1)
    outline, _ = parse_story_answer(text[:text.index('"scene": "Mira crosses bridge 7') + 20])
    assert outline.title == 'Mira\'s "Lo ng" Walk' and len(outline.scenes) == 6
    text = json.dumps(_story_of(7)).replace("Long", "Lo\\qng", 1)
    outline, _ = parse_story_answer(text[:text.index('"scene": "Mira crosses bridge 7') + 20])
    assert outline.title == "" and len(outline.scenes) == 6


def test_a_cut_off_story_plan_nested_too_deeply_is_a_planning_error():
    """Found by test_parsing_properties: 1,000 nested brackets in a cut-off plan raised RecursionError."""
    text = json.dumps(_story_of(7))
    deep = text.replace('["walking"]', "[" * 1000 + "]" * 1000, 1)
    with pytest.raises(PlanningError, match="nested too deeply"):
        parse_story_answer(deep[:deep.index('"Mira crosses bridge 7') + 10])


def test_a_story_plan_cut_off_too_early_or_broken_inside_is_still_refused():
    text = json.dumps(_story_of(7))
    early = text[:text.index('"scene": "Mira crosses bridge 5') + 20]  # 4 whole scenes: fewer than 5
    with pytest.raises(PlanningError, match="ends before the JSON is complete"):
        parse_story_answer(early)
    with pytest.raises(PlanningError):  # asked for 7: 6 whole scenes are not the story
        parse_story_answer(text[:text.index('"scene": "Mira crosses bridge 7') + 20], num_scenes=7)
    broken = text.replace('"narration": "Mira crossed the 6th', '"narration" "Mira crossed the 6th')
    with pytest.raises(PlanningError):  # not cut off: a fault inside, not a reason to drop scenes 6 and 7
        parse_story_answer(broken)


@pytest.mark.parametrize("into", [2, 3, 4, 5, 6])  # after "\\u", "\\u0", ..., the whole "\\u00e9"
def test_a_story_plan_cut_inside_a_unicode_escape_keeps_its_whole_scenes(into):
    """A model writing JSON ASCII-only ("caf\\u00e9") cut at the token limit inside, or just after, such an escape:
    json says "Invalid \\uXXXX escape", not "Unterminated string", and the 6 whole scenes were thrown away."""
    story = _story_of(7)
    story["scenes"][6]["scene"] = "Mira reaches the caf\u00e9 at dusk."
    text = json.dumps(story)  # ensure_ascii: "caf\\u00e9"
    escape = text.index("\\u00e9")
    outline, repairs = parse_story_answer(text[:escape + into])
    assert len(outline.scenes) == 6
    assert any("cut off after 6 whole scenes; kept them" in str(r) for r in repairs)
    with pytest.raises(PlanningError):  # a bad escape inside, not cut off, is still sent back
        parse_story_answer(text.replace("\\u00e9", "\\u00zz"))


def test_a_cut_story_plan_kept_has_its_unpaired_surrogates_replaced():
    """A whole answer's lone "\\ud83d" becomes U+FFFD (no UTF-8 project file can store it); the scenes kept from a
    cut-off story plan skipped that, and `dreamrunner plan` died with a pydantic traceback."""
    story = _story_of(8)
    story["title"] = "Mira \ud83d"
    story["scenes"][1]["narration"] = "A star \ud83d falls."
    text = json.dumps(story)
    outline, repairs = parse_story_answer(text[:text.index('"scene": "Mira crosses bridge 7') + 20])
    assert outline.title == "Mira \ufffd" and outline.scenes[1].narration == "A star \ufffd falls."
    assert any("unpaired surrogates" in str(r) for r in repairs)


def test_a_cut_story_plan_after_prose_naming_the_scenes_key_keeps_its_whole_scenes():
    """Prose before the plan that names the key ('it has "scenes": [a list]') was taken as the scene list."""
    text = json.dumps(_story_of(8))
    cut = text[:text.index('"scene": "Mira crosses bridge 7') + 20]
    outline, _ = parse_story_answer('The object has "title" and "scenes": [a list]. Here:\n' + cut)
    assert len(outline.scenes) == 6 and outline.title == 'Mira\'s "Long" Walk'


@pytest.mark.parametrize("before", [
    '<think>A draft: "scenes": [{"scene": "Mira flies"}]. Now the real one.</think>\n',  # a draft in the reasoning
    json.dumps(_story_of(3)) + "\nToo short; again:\n",  # a whole first draft of 3 scenes
])
def test_a_cut_story_plan_after_a_short_draft_keeps_its_whole_scenes(before):
    """The plan cut after 6 whole scenes lost to a shorter draft before it: the draft in a <think> block (read when
    the answer after it holds no whole plan) gave 1 scene, refused three times; a whole 3-scene draft was split
    into 5 and the 6 scenes of the last plan dropped."""
    text = json.dumps(_story_of(8))
    outline, repairs = parse_story_answer(before + text[:text.index('"scene": "Mira crosses bridge 7') + 20])
    assert [s.scene for s in outline.scenes] == [f"Mira crosses bridge {n} of the village." for n in range(1, 7)]
    assert any("cut off after 6 whole scenes; kept them" in str(r) for r in repairs)
    assert not any("split" in str(r) for r in repairs)


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


# ---------------------------------------------------------------- reported answers (issue 13)

def _sun_and_mira(unit_x: float, unit_y: float) -> dict:
    """The reported scene: a sun and the scene's only character, walking, boxes scaled by (unit_x, unit_y)."""
    keyframes = []
    for k in range(NUM_KEYFRAMES):
        boxes = {"sun": [0.8, 0.05, 0.95, 0.25], "Mira": [0.1 + 0.1 * k, 0.4, 0.3 + 0.1 * k, 0.95]}
        keyframes.append({"entities": [
            {"name": name, "motion": "walking" if name == "Mira" else None, "description": f"{name} in the lane",
             "box": [box[0] * unit_x, box[1] * unit_y, box[2] * unit_x, box[3] * unit_y]}
            for name, box in boxes.items()]})
    return {"background": "a village lane", "keyframes": keyframes}


@pytest.mark.parametrize("unit_x, unit_y, name", [
    (720, 480, "pixels of the 720x480 frame"), (100, 100, "percent"), (1000, 1000, "per-mille (0-1000)"),
])
def test_boxes_on_another_scale_are_rescaled_not_clamped(unit_x, unit_y, name):
    """A scene answered in pixels of the 720x480 frame made the sun full-frame and dropped Mira (and the scene's
    only motion) from every keyframe. The whole answer's scale is recognised and rescaled, with a repair."""
    scene, repairs = parse_scene_answer(json.dumps(_sun_and_mira(unit_x, unit_y)), SCENE, CHARACTERS, (720, 480))
    expected, _ = parse_scene_answer(json.dumps(_sun_and_mira(1, 1)), SCENE, CHARACTERS)
    for got, want in zip(scene.keyframes, expected.keyframes):
        assert [e.name for e in got.entities] == ["sun", "Mira"]
        for a, b in zip(got.entities, want.entities):
            assert a.box == pytest.approx(b.box) and a.motion == b.motion
    assert scene.keyframes[0].entities[0].box == pytest.approx((0.8, 0.05, 0.95, 0.25))
    assert f"the boxes were in {name}" in "\n".join(map(str, repairs))


def test_pixels_are_pixels_of_the_given_frame():
    scene, repairs = parse_scene_answer(json.dumps(_sun_and_mira(480, 320)), SCENE, CHARACTERS, (480, 320))
    assert scene.keyframes[5].entities[1].box == pytest.approx((0.6, 0.4, 0.8, 0.95))
    assert "pixels of the 480x320 frame" in str(repairs[0])


def test_boxes_that_mix_scales_are_sent_back():
    answer = _sun_and_mira(1, 1)
    answer["keyframes"][2]["entities"][1]["box"] = [30, 40, 50, 95]
    with pytest.raises(PlanningError, match="the boxes mix scales") as caught:
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert "write every box normalized to [0, 1]" in caught.value.problems[0]


@pytest.mark.parametrize("value, shown", [
    ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("NaN", "NaN"), ("1e400", "Infinity"),
    ("1" + "0" * 400, "100000000000...(401 characters)"), ("true", "True"), ('"wide"', "'wide'"),
])
def test_boxes_that_are_not_finite_numbers_are_sent_back_never_invented(value, shown):
    """A box with Infinity became an invented box; a 400-digit integer raised OverflowError."""
    raw = GOOD.replace("0.78", value, 1)
    with pytest.raises(PlanningError) as caught:
        parse_scene_answer(raw, SCENE, CHARACTERS)
    assert caught.value.problems == [f"keyframe 1, entity 3 ('chimney'): box holds {shown}, not a finite number"]
    assert caught.value.raw == raw


def test_a_huge_integer_in_a_plan_string_answer_is_an_error():
    text = format_plan(parse_scene_answer(GOOD, SCENE, CHARACTERS)[0]).replace("0.78", "1" + "0" * 400, 1)
    with pytest.raises(PlanningError, match="the plan string is not usable"):
        parse_scene_answer(text, SCENE, CHARACTERS)


@pytest.mark.parametrize("prose", [
    "The boxes are [x0, y0, x1, y1]: left, top, right, bottom. Here is the plan:\n",
    "Boxes use [0, 1] coordinates {normalized}. Plan:\n```json\n",
    "[Note] I kept every keyframe.\n",
])
def test_a_plan_after_prose_with_brackets_is_read(prose):
    """Was refused ("Expecting value at line 1, column 2"); after 3 such answers `plan` exited with no project."""
    scene, repairs = parse_scene_answer(prose + GOOD + "\n```", SCENE, CHARACTERS)
    assert scene == parse_scene_answer(GOOD, SCENE, CHARACTERS)[0]
    assert [str(r) for r in repairs] == ["answer: took the JSON out of the text around it"]
    story = json.dumps(STORY_EXAMPLE_ANSWER)
    outline, _ = parse_story_answer(prose + story)
    assert outline == parse_story_answer(story)[0]


@pytest.mark.parametrize("before", [
    "<think>The user wants a plan. A draft: {\"background\": \"draft\", \"keyframes\": []}</think>\n",
    "<thinking>{\"keyframes\": [1, 2</thinking>",
    "Let me think about the boxes [x0, y0...]. </think>\n\n",  # the server kept the opening tag
    'An entity looks like {"name": "Mira", "box": [0.1, 0.2, 0.3, 0.4]}. The plan:\n',  # not the expected object
])
def test_reasoning_and_example_objects_before_the_plan_are_skipped(before):
    scene, _ = parse_scene_answer(before + GOOD, SCENE, CHARACTERS)
    assert scene.background == SCENE_EXAMPLE_ANSWER["background"]
    assert scene == parse_scene_answer(GOOD, SCENE, CHARACTERS)[0]


def test_an_answer_only_inside_a_reasoning_block_is_still_found():
    scene, _ = parse_scene_answer("<think>" + GOOD, SCENE, CHARACTERS)
    assert scene.background == SCENE_EXAMPLE_ANSWER["background"]


def test_an_answer_followed_by_60000_newlines_is_read():
    """Took 25.7 s (a quadratic multiline regex); the property test bounds the time of every case."""
    scene, _ = parse_scene_answer(GOOD + "\n" * 60_000, SCENE, CHARACTERS)
    assert scene == parse_scene_answer(GOOD, SCENE, CHARACTERS)[0]
    outline, _ = parse_story_answer(json.dumps(STORY_EXAMPLE_ANSWER) + "\n" * 60_000)
    assert len(outline.scenes) == 6


@pytest.mark.parametrize("raw, message", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"background": "x", "keyframes": [' + "1" * 5000 + "]}", "a number in it has too many digits"),
    ('{"background": "x", "keyframes": [{"entities": [' * 40, "cut off"),
])
def test_pathological_answers_are_clear_errors(raw, message):
    with pytest.raises(PlanningError, match=message):
        parse_scene_answer(raw, SCENE, CHARACTERS)


def test_unpaired_surrogates_in_answer_text_are_replaced_and_reported():
    raw = GOOD.replace("tiled village", "tiled \\ud800 village", 1)
    scene, repairs = parse_scene_answer(raw, SCENE, CHARACTERS)
    assert scene.background.startswith("tiled \ufffd village")
    assert any("unpaired surrogates" in str(r) for r in repairs)


# ---------------------------------------------------------------- more reported answers (issue 13, second round)

def test_one_normalized_box_among_per_mille_boxes_is_sent_back_not_shrunk():
    """Was accepted with Mira's keyframe-3 box shrunk to [0.0003, 0.0003, 0.0005, 0.0009] (exit 0 in `plan`)."""
    answer = _sun_and_mira(1000, 1000)
    answer["keyframes"][2]["entities"][1]["box"] = [0.3, 0.4, 0.5, 0.95]
    with pytest.raises(PlanningError, match="the boxes mix scales") as caught:
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS, (720, 480))
    assert caught.value.problems == [
        "scene 's3', keyframe 3, entity 2 ('Mira'): the boxes mix scales: the others are in per-mille (0-1000), but "
        "this box [0.3, 0.4, 0.5, 0.95] would be 0.0002 x 0.00055 of the frame in it; write every box normalized "
        "to [0, 1]"]


def test_a_zero_width_box_takes_its_width_from_the_nearest_keyframe_and_is_reported():
    """A zero-width box dropped the character from its keyframe; then it was sent back, and Qwen2.5-Coder-1.5B
    wrote Luna's [0.5, 0.2, 0.5, 0.8] three times and the story failed (docs/planning.md, GPU run 2). The
    same entity's width in the nearest keyframe, centred where the line is, is a repair, said so."""
    answer = _sun_and_mira(1, 1)
    answer["keyframes"][2]["entities"][1]["box"] = [0.5, 0.4, 0.5, 0.95]
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    check_plan(scene)
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.4, 0.4, 0.6, 0.95])  # keyframe 2's 0.2 width
    assert any(str(r).startswith("scene 's3', keyframe 3, entity 2 ('Mira'): box [0.5, 0.4, 0.5, 0.95] was 0 wide "
                                 "and 0.55 tall; took its width from keyframe 2") for r in repairs)
    # At the frame's edge the borrowed width stays inside the frame.
    answer["keyframes"][2]["entities"][1]["box"] = [1.0, 0.4, 1.0, 0.95]
    scene, _ = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.8, 0.4, 1.0, 0.95])


def test_a_zero_width_box_takes_its_width_from_the_same_entity_named_in_another_case():
    """'mira' in one keyframe is the same Mira as 'Mira' in the others (find_character matches names casefolded),
    yet her zero-width box there found no keyframe to take a width from and the scene plan was sent back."""
    answer = _sun_and_mira(1, 1)
    answer["keyframes"][2]["entities"][1].update(name=" mira", box=[0.5, 0.4, 0.5, 0.95])
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.4, 0.4, 0.6, 0.95])  # keyframe 2's 0.2 width
    assert any("took its width from keyframe 2" in str(r) for r in repairs)


@pytest.mark.parametrize("unit_x, unit_y", [(1000, 1000), (720, 480)])  # per-mille, pixels of the 720x480 frame
def test_a_thin_box_in_another_scale_is_widened_as_a_normalized_one_is(unit_x, unit_y):
    """Mira's [500, 400, 503, 950] among per-mille boxes (0.003 wide) was sent back as "the boxes mix scales",
    which it is not: the same box in [0, 1] takes its width from the nearest keyframe, and so does this one."""
    answer = _sun_and_mira(unit_x, unit_y)
    answer["keyframes"][2]["entities"][1]["box"] = [0.5 * unit_x, 0.4 * unit_y, 0.503 * unit_x, 0.95 * unit_y]
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS, (720, 480))
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.4015, 0.4, 0.6015, 0.95])
    assert any("0.003 wide and 0.55 tall; took its width from keyframe 2" in str(r) for r in repairs)
    # A neighbour wholly outside the frame (dropped for it, then) lends no width: its extent inside is none.
    answer["keyframes"][1]["entities"][1]["box"] = [1.01 * unit_x, 0.4 * unit_y, 1.04 * unit_x, 0.95 * unit_y]
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS, (720, 480))
    assert any("0.003 wide and 0.55 tall; took its width from keyframe 4" in str(r) for r in repairs)


@pytest.mark.parametrize("unit_x, unit_y", [(1, 1), (1000, 1000)])
def test_a_box_that_is_a_sliver_inside_the_frame_is_widened(unit_x, unit_y):
    """[0.995, 0.4, 1.01, 0.95] is 0.015 wide as written but 0.005 inside the frame: it was stored 0.005 wide, under
    the least extent. Wholly outside the frame, a box is dropped as before (the entity left the frame)."""
    answer = _sun_and_mira(unit_x, unit_y)
    answer["keyframes"][2]["entities"][1]["box"] = [0.995 * unit_x, 0.4 * unit_y, 1.01 * unit_x, 0.95 * unit_y]
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS, (720, 480))
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.8, 0.4, 1.0, 0.95])
    assert any("was 0.005 wide and 0.55 tall; took its width from keyframe 2" in str(r) for r in repairs), repairs
    # A third helper: thin as well as wholly outside ([1.2, 0.4, 1.2, 0.95], below the frame) was moved in.
    for box in ([1.01, 0.4, 1.03, 0.95], [1.02, 0.4, 1.02, 0.95], [-0.03, 0.4, -0.03, 0.95], [0.3, 1.02, 0.3, 1.04]):
        answer["keyframes"][2]["entities"][1]["box"] = [box[0] * unit_x, box[1] * unit_y, box[2] * unit_x,
                                                        box[3] * unit_y]
        scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS, (720, 480))
        assert [e.name for e in scene.keyframes[2].entities] == ["sun"], box
        assert any("dropped" in str(r) for r in repairs) and not any("took its" in str(r) for r in repairs)


def test_a_thin_inverted_box_widened_says_its_corners_were_swapped():
    """The widened box was stored in order, so the swap `repair_box` reports for any inverted box went unsaid."""
    answer = _sun_and_mira(1, 1)
    answer["keyframes"][2]["entities"][1]["box"] = [0.5, 0.95, 0.5, 0.4]
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert scene.keyframes[2].entities[1].box == pytest.approx([0.4, 0.4, 0.6, 0.95])
    assert any(str(r).endswith("took its width from keyframe 2; swapped y0 and y1 (were 0.95, 0.4)") for r in repairs), repairs


def test_a_zero_width_box_with_no_width_to_take_is_sent_back():
    answer = _sun_and_mira(1, 1)
    for keyframe in answer["keyframes"]:
        keyframe["entities"][1]["box"] = [0.5, 0.4, 0.5, 0.95]
    with pytest.raises(PlanningError, match="give every entity its real extent") as caught:
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert caught.value.problems[0].startswith("scene 's3', keyframe 1, entity 2 ('Mira'): box [0.5, 0.4, 0.5, 0.95] "
                                               "is 0 wide and 0.55 tall")


@pytest.mark.parametrize("key, first", [("index", 0), ("keyframe", 1), ("frame", 1)])
def test_numbered_keyframes_are_ordered_by_number(key, first):
    """Keyframes numbered explicitly but listed 6..1 reversed Mira's walk silently."""
    answer = _sun_and_mira(1, 1)
    for k, keyframe in enumerate(answer["keyframes"]):
        keyframe[key] = k + first
    answer["keyframes"].reverse()
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert [k.entities[1].box[0] for k in scene.keyframes] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert "ordered them by number" in str(repairs[0])


def test_duplicate_or_partial_keyframe_numbers_are_sent_back_and_missing_ones_reported():
    answer = _sun_and_mira(1, 1)
    for k, keyframe in enumerate(answer["keyframes"]):
        keyframe["index"] = min(k, 4)
    with pytest.raises(PlanningError, match="keyframe number.s. 4 appear more than once"):
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    del answer["keyframes"][0]["index"]
    with pytest.raises(PlanningError, match="only 5 of the 6 keyframes have an index"):
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    answer = _sun_and_mira(1, 1)
    for k, keyframe in enumerate(answer["keyframes"]):
        keyframe["keyframe"] = k + 1 + (k >= 3)  # 1, 2, 3, 5, 6, 7: number 4 missing, 7 past the end
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    text = "\n".join(map(str, repairs))
    assert "keyframe 4: was missing; held keyframe 3" in text and "index 6 is not in 0..5" in text
    assert scene.keyframes[4].entities[1].box[0] == pytest.approx(0.4)


def test_a_draft_then_a_corrected_plan_takes_the_corrected_one():
    """The draft (with a zero-width box) was used and Mira dropped from keyframe 3."""
    draft = _sun_and_mira(1, 1)
    draft["keyframes"][2]["entities"][1]["box"] = [0.5, 0.4, 0.5, 0.95]
    final = _sun_and_mira(1, 1)
    raw = "Draft:\n" + json.dumps(draft) + "\nOops, keyframe 3 has a zero-width box. Corrected:\n" + json.dumps(final)
    scene, repairs = parse_scene_answer(raw, SCENE, CHARACTERS)
    assert scene == parse_scene_answer(json.dumps(final), SCENE, CHARACTERS)[0]
    assert "it holds 2 plans (a draft, then corrections?); took the last one" in str(repairs[0])
    story = dict(STORY_EXAMPLE_ANSWER, title="Final")
    outline, _ = parse_story_answer(json.dumps(dict(story, title="Draft")) + "\nBetter:\n" + json.dumps(story))
    assert outline.title == "Final"


def test_a_plan_after_hundreds_of_bracketed_prose_fragments_is_read():
    """More than 64 failed starts before the plan made a valid answer "not valid JSON"."""
    prose = "The box [x0, y0, x1, y1] of {each} entity. " * 500
    scene, _ = parse_scene_answer(prose + GOOD, SCENE, CHARACTERS)
    assert scene == parse_scene_answer(GOOD, SCENE, CHARACTERS)[0]
    outline, _ = parse_story_answer(prose + json.dumps(STORY_EXAMPLE_ANSWER))
    assert len(outline.scenes) == 6


def test_a_missing_box_is_held_from_the_nearest_keyframe_and_reported():
    """A small model (Qwen2.5-Coder-0.5B) left Bolt's and Nana's boxes out of keyframe 1 and the plan was refused
    three times; the same entity's box in the nearest keyframe is taken instead, and said so."""
    answer = json.loads(GOOD)
    first = answer["keyframes"][0]["entities"][0]
    name, later = first["name"], answer["keyframes"][1]["entities"][0]
    assert later["name"] == name
    first.pop("box")
    scene, repairs = parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    check_plan(scene)
    held = next(e for e in scene.keyframes[0].entities if e.name == name)
    assert held.box == next(e for e in scene.keyframes[1].entities if e.name == name).box
    assert any("had no box; held the one of keyframe 2" in str(r) for r in repairs)
    for keyframe in answer["keyframes"]:  # with no box for it anywhere, the LLM is asked again
        for entity in keyframe["entities"]:
            if entity["name"] == name:
                entity["box"] = None
    with pytest.raises(PlanningError, match="box must be") as caught:
        parse_scene_answer(json.dumps(answer), SCENE, CHARACTERS)
    assert "got None" in caught.value.problems[0]
