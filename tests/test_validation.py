import copy

import pytest

from dreamrunner.story import Story
from dreamrunner.validation import StoryValidationError, repair_story_data, validate_story


def _mutated(data, mutate):
    data = copy.deepcopy(data)
    mutate(data)
    return data


def _entity(data, scene=0, keyframe=0, entity=0):
    return data["scenes"][scene]["keyframes"][keyframe]["entities"][entity]


# (what is wrong, how to break a valid story, where the error must point, what it must say)
BAD_INPUTS = [
    ("x0 > x1", lambda d: _entity(d, 0, 2, 0).update(box=[0.7, 0.1, 0.2, 0.5]),
     "scene 1 ('s1'), keyframe 3, entity 1 ('witch'), box", "x0 = 0.7 must be less than x1 = 0.2"),
    ("y0 == y1", lambda d: _entity(d, 0, 1, 1).update(box=[0.7, 0.6, 0.9, 0.6]),
     "scene 1 ('s1'), keyframe 2, entity 2 ('owl'), box", "y0 = 0.6 must be less than y1 = 0.6"),
    ("box outside [0, 1]", lambda d: _entity(d).update(box=[-0.2, 0.1, 0.3, 0.5]),
     "scene 1 ('s1'), keyframe 1, entity 1 ('witch'), box", "x0 = -0.2 is outside [0, 1]"),
    ("box of 3 numbers", lambda d: _entity(d).update(box=[0.1, 0.1, 0.3]),
     "scene 1 ('s1'), keyframe 1, entity 1 ('witch'), box[3]", "is missing"),
    ("box not numbers", lambda d: _entity(d).update(box=["a", 0.1, 0.3, 0.5]),
     "scene 1 ('s1'), keyframe 1, entity 1 ('witch'), box[0]", "valid number"),
    ("empty description", lambda d: _entity(d, 0, 4, 1).update(description=""),
     "scene 1 ('s1'), keyframe 5, entity 2 ('owl'), description", "may not be empty"),
    ("missing entity name", lambda d: _entity(d, 0, 3, 0).pop("name"),
     "scene 1 ('s1'), keyframe 4, entity 1, name", "is missing"),
    ("five keyframes", lambda d: d["scenes"][0]["keyframes"].pop(),
     "scene 1 ('s1')", "has 5 keyframes, expected 6"),
    ("keyframes out of order", lambda d: d["scenes"][0]["keyframes"].reverse(),
     "scene 1 ('s1')", "keyframe at position 0 has index 5"),
    ("unknown character", lambda d: _entity(d, 0, 5, 0).update(character_id="c9"),
     "", "scene 1 ('s1'), keyframe 6, entity 1 ('witch'): character_id 'c9' is not a character of the story"),
    ("duplicate scene id", lambda d: d["scenes"].append(copy.deepcopy(d["scenes"][0])),
     "", "scene id 's1' is used twice"),
    ("bad rare token", lambda d: d["characters"][0].update(token="v1"),
     "character 1 ('c1'), token", "should match pattern"),
    ("absolute media path", lambda d: d["characters"][0].update(reference_images=["/etc/passwd"]),
     "character 1 ('c1'), reference_images, 0", "must be relative to the project folder"),
    ("escaping media path", lambda d: d["characters"][0].update(reference_images=["media/../../x.png"]),
     "character 1 ('c1'), reference_images, 0", "escapes the project folder"),
    ("unknown field", lambda d: d["scenes"][0].update(naration="typo"),
     "scene 1 ('s1'), naration", "is not a known field"),
    ("bad frame count", lambda d: d.update(settings={"video": {"num_frames": 48}}),
     "settings, video", "must be 4k+1"),
    ("missing background", lambda d: d["scenes"][0].pop("background"),
     "scene 1 ('s1'), background", "is missing"),
]


def test_the_valid_story_is_valid(simple_story_data):
    story = validate_story(simple_story_data)
    assert isinstance(story, Story)
    assert story.scenes[0].keyframes[5].entities[0].box == pytest.approx((0.5, 0.1, 0.8, 0.5))


@pytest.mark.parametrize("what,mutate,where,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_validation_names_the_failing_field(simple_story_data, what, mutate, where, message):
    with pytest.raises(StoryValidationError) as caught:
        validate_story(_mutated(simple_story_data, mutate))
    problems = caught.value.problems
    assert any(p.where == where and message in p.message for p in problems), [str(p) for p in problems]
    assert message in str(caught.value)


def test_every_problem_is_reported_at_once(simple_story_data):
    def break_two(d):
        _entity(d, 0, 0, 0).update(box=[0.5, 0.1, 0.2, 0.5])
        _entity(d, 0, 1, 1).update(description="")
    with pytest.raises(StoryValidationError) as caught:
        validate_story(_mutated(simple_story_data, break_two))
    assert len(caught.value.problems) == 2


def test_repair_reports_each_change(simple_story_data):
    def break_many(d):
        _entity(d, 0, 0, 0).update(box=[0.4, 0.1, 0.1, 0.5])      # inverted x
        _entity(d, 0, 1, 0).update(box=[-0.1, 0.2, 0.3, 1.4])     # out of range
        _entity(d, 0, 2, 1).update(box=[0.5, 0.5, 0.5, 0.9])      # zero width: dropped
        _entity(d, 0, 3, 1).update(box=[1.2, 0.5, 1.5, 0.9])      # clamps to nothing: dropped
        del d["scenes"][0]["keyframes"][4:]                        # keyframes 5, 6 missing
    data, repairs = repair_story_data(_mutated(simple_story_data, break_many))
    assert [str(r) for r in repairs] == [
        "scene 1 ('s1'), keyframe 1, entity 1 ('witch'): swapped x0 and x1 (were 0.4, 0.1)",
        "scene 1 ('s1'), keyframe 2, entity 1 ('witch'): clamped [-0.1, 0.2, 0.3, 1.4] into [0, 1] as [0.0, 0.2, 0.3, 1.0]",
        "scene 1 ('s1'), keyframe 3, entity 2 ('owl'): dropped: box [0.5, 0.5, 0.5, 0.9] has no area",
        "scene 1 ('s1'), keyframe 4, entity 2 ('owl'): clamped [1.2, 0.5, 1.5, 0.9] into [0, 1] as [1.0, 0.5, 1.0, 0.9]",
        "scene 1 ('s1'), keyframe 4, entity 2 ('owl'): dropped: box [1.0, 0.5, 1.0, 0.9] has no area",
        "scene 1 ('s1'), keyframe 5: was missing; held keyframe 4",
        "scene 1 ('s1'), keyframe 6: was missing; held keyframe 4",
    ]
    story = validate_story(data)
    scene = story.scenes[0]
    assert scene.keyframes[0].entities[0].box == (0.1, 0.1, 0.4, 0.5)
    assert scene.keyframes[1].entities[0].box == (0.0, 0.2, 0.3, 1.0)
    assert [len(k.entities) for k in scene.keyframes] == [2, 2, 1, 1, 1, 1]


def test_repair_leaves_valid_data_alone_and_does_not_mutate_its_input(simple_story_data):
    before = copy.deepcopy(simple_story_data)
    data, repairs = repair_story_data(simple_story_data)
    assert repairs == []
    assert data == before and simple_story_data == before


def test_user_edited_accepts_only_field_names(simple_story_data):
    story = validate_story(simple_story_data)
    entity = story.scenes[0].keyframes[0].entities[0]
    entity.mark_edited("box")
    assert entity.is_edited("box") and entity.user_edited == ["box"]
    with pytest.raises(ValueError, match="unknown fields"):
        entity.mark_edited("colour")
