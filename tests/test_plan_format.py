import re

import pytest

from dreamrunner.errors import DreamRunnerError
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


# ---------------------------------------------------------------- whitespace and quoting (issue 13)

def _unquoted(plan: str) -> str:
    return plan.strip().strip('"')


VARIANTS = {
    # The published plan 5_action_binding/0093: a leading quote, blank lines between Frame lines, no closing quote.
    "published blank lines": lambda p: '"' + _unquoted(p).replace("\nFrame_", "\n\nFrame_") + "\n",
    "crlf": lambda p: p.replace("\n", "\r\n"),
    "crlf and blank lines": lambda p: p.replace("\n", "\r\n\r\n"),
    "no space after the colon": lambda p: p.replace(": [[", ":[["),
    "spaces around the colon": lambda p: p.replace(": [[", " :  [[").replace("Background:", "Background : "),
    "leading quote only": lambda p: '"' + _unquoted(p),
    "trailing quote only": lambda p: _unquoted(p) + '"',
    "no quotes": _unquoted,
    "single quotes around": lambda p: "'" + _unquoted(p) + "'",
    "indented lines and tabs": lambda p: "\n".join("\t  " + line for line in p.splitlines()),
    "blank lines with spaces": lambda p: p.replace("\nFrame_", "\n   \n\t\nFrame_"),
    "trailing blank lines": lambda p: p + "\n\n\n",
    # Second round (issue 13): what editors, chat answers and other tools make of the same plan.
    "tab in Frame\\t1": lambda p: p.replace("Frame_", "Frame\t"),
    "lower-case markers": lambda p: p.replace("Frame_", "frame_").replace("Background:", "background:"),
    "markdown bold inside the colon": lambda p: re.sub(r"(Frame_\d+|Background):", r"**\1:**", p),
    "markdown bold before the colon": lambda p: re.sub(r"(Frame_\d+):", r"**\1**:", p),
    "list bullets": lambda p: p.replace("\nFrame_", "\n- Frame_"),
    "fullwidth colons": lambda p: re.sub(r"(Frame_\d+|Background):", "\\1\uff1a", p),
    "byte-order mark": lambda p: "\ufeff" + p,
    "U+2028 line separators": lambda p: p.replace("\n", "\u2028"),
    "CR line ends": lambda p: p.replace("\n", "\r"),
}
SAMPLE = PLANS[::15]  # 20 plans of the 3 categories


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_whitespace_and_quoting_variants_give_the_same_scene(variant):
    for plan_id, plan in SAMPLE:
        expected, expected_repairs = parse_plan(plan, plan_id)
        scene, repairs = parse_plan(VARIANTS[variant](plan), plan_id)
        assert scene == expected, plan_id
        assert repairs == expected_repairs


def test_curly_quotes_are_read_as_straight_ones_and_reported():
    plan_id, plan = SAMPLE[0]
    expected, _ = parse_plan(plan, plan_id)
    for curly in (plan.replace('"', "\u201d"), plan.replace('["', "[\u201c").replace('",', "\u201d,")):
        scene, repairs = parse_plan(curly, plan_id)
        assert scene == expected
        assert any("read curly quotes as straight quotes" in str(r) for r in repairs)


def test_the_published_plan_with_blank_lines_imports():
    """5_action_binding.jsonl line 93 of the paper's repository, as published (shortened descriptions)."""
    frames = "\n\n".join(f'Frame_{k}: [["none", "none", "A bird is sitting on a branch"], [0.0, 0.0, 0.43, 1.0]], '
                         f'[["none", "none", "A squirrel is climbing the tree"], [0.57, 0.0, 1.0, 1.0]]' for k in range(1, 7))
    plan = '"Background:the background of the event: A bird sits on a branch while a squirrel climbs the tree\n' + frames + "\n"
    scene, repairs = parse_plan(plan, "0093")
    assert scene.background == "the background of the event: A bird sits on a branch while a squirrel climbs the tree"
    assert [e.description for e in scene.keyframes[5].entities] == ["A bird is sitting on a branch",
                                                                    "A squirrel is climbing the tree"]
    assert repairs == []


@pytest.mark.parametrize("box, message", [
    ("[0.1, 0.2, " + "1" * 400 + ", 0.9]", r"s, keyframe 1, entity 1 \('cat'\), box\[2\]: Input should be a valid number"),
    ("[0.1, 0.2, Infinity, 0.9]", r"s, keyframe 1, entity 1 \('cat'\), box\[2\]: Input should be a finite number"),
    ("[0.1, 0.2, NaN, 0.9]", r"s, keyframe 1, entity 1 \('cat'\), box\[2\]: Input should be a finite number"),
])
def test_numbers_that_are_not_finite_are_errors_not_crashes(box, message):
    plan = "Background:x\n" + "\n".join(f'Frame_{k}: [["cat", "none", "A cat"], {box}]' for k in range(1, 7))
    with pytest.raises(DreamRunnerError, match=message):
        parse_plan(plan, "s")


def test_percent_boxes_in_a_plan_string_are_rescaled():
    plan = "Background:x\n" + "\n".join(f'Frame_{k}: [["cat", "none", "A cat"], [10, 20, 30, 90]]' for k in range(1, 7))
    scene, repairs = parse_plan(plan, "s")
    assert scene.keyframes[0].entities[0].box == pytest.approx((0.1, 0.2, 0.3, 0.9))
    assert [str(r) for r in repairs] == ["s: the boxes were in percent (values up to 90); divided x by 100 and y by 100 "
                                         "to normalize them"]


@pytest.mark.parametrize("plan, message", [
    ("Background:x\nFrame_" + "9" * 5000 + ": []", "frame numbers run from 1 to 6"),
    ("Background:x\nFrame_1: " + "[" * 100_000, "cannot read the regions"),
    ("Background:x\nFrame_1: [[\"a\\u0000\", \"none\", \"b\"], [0, 0, 1, 1]]\x00", "cannot read the regions"),
])
def test_pathological_plans_are_clear_errors(plan, message):
    with pytest.raises(PlanFormatError, match=message):
        parse_plan(plan, "s")
