import pytest

from dreamrunner.plan_format import PlanFormatError, format_plan, parse_plan
from dreamrunner.story import NUM_KEYFRAMES

from published_plans import fixture_plans

PLANS = fixture_plans()


def test_there_are_300_published_plans():
    assert len(PLANS) == 300


@pytest.mark.parametrize("plan_id,plan", PLANS, ids=[p[0] for p in PLANS])
def test_every_published_plan_imports_and_round_trips(plan_id, plan):
    scene, _ = parse_plan(plan, plan_id)
    assert len(scene.keyframes) == NUM_KEYFRAMES
    assert all(keyframe.entities for keyframe in scene.keyframes)
    again, repairs = parse_plan(format_plan(scene), plan_id)
    assert again == scene
    assert repairs == []


def test_import_reads_the_plan_fields():
    plan = ('"Background:A park\nFrame_1: [["dog", "running", "A dog running"], [0.0, 0.1, 0.5, 0.6]], '
            '[["none", "none", "A bench"], [0.5, 0.5, 1.0, 1.0]]\n'
            + "\n".join(f'Frame_{k}: [["dog", "running", "A dog running"], [0.1, 0.1, 0.6, 0.6]]' for k in range(2, 7))
            + '"')
    scene, repairs = parse_plan(plan, "s")
    assert scene.background == "A park"
    first = scene.keyframes[0].entities
    assert [(e.name, e.motion, e.description, e.box) for e in first] == [
        ("dog", "running", "A dog running", (0.0, 0.1, 0.5, 0.6)),
        ("none", None, "A bench", (0.5, 0.5, 1.0, 1.0)),
    ]
    assert repairs == []


def test_inverted_box_in_a_published_plan_is_repaired_and_reported():
    candle = [plan for _, plan in PLANS if "[0.4, 0.6, 0.6, 0.5]" in plan]
    assert len(candle) == 1, "the published candle plan with an inverted box is in the fixtures"
    scene, repairs = parse_plan(candle[0], "candle")
    assert [str(r) for r in repairs] == [
        "candle, keyframe 5, entity 1 ('candle'): swapped y0 and y1 (were 0.6, 0.5)",
        "candle, keyframe 6, entity 1 ('candle'): swapped y0 and y1 (were 0.7, 0.4)",
    ]
    assert scene.keyframes[4].entities[0].box == (0.4, 0.5, 0.6, 0.6)


def test_single_quoted_and_truncated_lines_are_read():
    lines = ["Background:x"] + [f"Frame_{k}: [['cat', 'none', 'A cat'], [0.1, 0.2, 0.3, 0.4]]" for k in range(1, 6)]
    lines.append('Frame_6: [["cat", "none", "A cat"], [0.1, 0.2, 0.3, 0.4')
    scene, repairs = parse_plan("\n".join(lines), "s")
    assert scene.keyframes[5].entities[0].box == (0.1, 0.2, 0.3, 0.4)
    assert any("unclosed bracket" in str(r) for r in repairs)


def test_missing_frames_are_held_from_the_neighbour():
    plan = "Background:x\nFrame_1: [[\"cat\", \"none\", \"A cat\"], [0.1, 0.2, 0.3, 0.4]]\n" \
           "Frame_4: [[\"cat\", \"none\", \"A cat\"], [0.5, 0.2, 0.7, 0.4]]"
    scene, repairs = parse_plan(plan, "s")
    assert [k.entities[0].box[0] for k in scene.keyframes] == [0.1, 0.1, 0.1, 0.5, 0.5, 0.5]
    assert [str(r) for r in repairs] == [
        "s, keyframe 2: was missing; held keyframe 1",
        "s, keyframe 3: was missing; held keyframe 1",
        "s, keyframe 5: was missing; held keyframe 4",
        "s, keyframe 6: was missing; held keyframe 4",
    ]


@pytest.mark.parametrize("plan,message", [
    ("Frame_1: [[\"a\", \"none\", \"b\"], [0, 0, 1, 1]]", "no 'Background:' line"),
    ("Background:x", "no 'Frame_k:' lines"),
    ("Background:x\nScene 1: hello", "neither 'Background:' nor 'Frame_k:'"),
    ("Background:x\nFrame_7: []", "frame numbers run from 1 to 6"),
    ("Background:x\nFrame_1: [[\"a\", \"b\"], [0, 0, 1, 1]]", "Frame_1, region 1: expected [[name, motion, description]"),
    ("Background:x\nFrame_1: {oops", "Frame_1: cannot read the regions"),
    ("Background:x\nFrame_1: []\nFrame_1: []", "Frame_1: appears twice"),
])
def test_malformed_plans_give_a_clear_error(plan, message):
    with pytest.raises(PlanFormatError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_plan(plan, "s")
