import copy
import re

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
     "settings, video", "num_frames = 48 is not 4N+1 (the VAE makes one latent of the first frame and one of every 4 "
                        "after it), e.g. 45 or 49"),
    # 45 = 4N+1 (Wan makes it) but an even latent count for CogVideoX, which would render 48 frames: the story's
    # backend (tiny, CogVideoX-shaped) refuses it by its MODEL_VIDEO row.
    ("4k+1 frame count", lambda d: d.update(settings={"video": {"num_frames": 45}}),
     "", "settings: video.num_frames = 45: tiny makes 8N+1 up to 49 frames (e.g. 41 or 49)"),
    ("huge frame count", lambda d: d.update(settings={"video": {"num_frames": 400_001}}),
     "settings, video", "num_frames = 400001 is more than any model makes: at most 161 (CogVideoX 1.5"),
    ("huge frame", lambda d: d.update(settings={"video": {"height": 480_000}}),
     "settings, video, height", "less than or equal to 2048"),
    ("NUL in a media path", lambda d: d["characters"][0].update(reference_images=["media/a\x00.png"]),
     "character 1 ('c1'), reference_images, 0", "contains the control character '\\x00'"),
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


def test_frame_counts_fit_the_vae_and_each_model_its_own():
    from dreamrunner.story import VideoSettings
    from dreamrunner.video_presets import VideoPresetError, check_video

    assert [VideoSettings(num_frames=n).latent_frames for n in (1, 9, 41, 45, 49, 81)] == [1, 3, 11, 12, 13, 21]
    for backend in ("cogvideox-2b", "cogvideox-5b", "tiny", "tiny-5b"):
        with pytest.raises(VideoPresetError, match=r"num_frames = 45: .*makes 8N\+1 up to 49 frames \(e.g. 41 or 49\)"):
            check_video(backend, 45, 480, 720)
    check_video("wan2.1-1.3b", 45, 480, 832)
    check_video("tiny-wan", 81, 64, 96)
    with pytest.raises(VideoPresetError,
                       match=r"num_frames = 85: Wan2.1-T2V-1.3B \(wan2.1-1.3b\) makes 4N\+1 up to 81"):
        check_video("wan2.1-1.3b", 85, 480, 832)
    for bad in (48, 50, 165, 400_001, 10**30):
        with pytest.raises(ValueError, match=f"num_frames = {bad} "):
            VideoSettings(num_frames=bad)


def test_retrieval_clip_size_must_be_positive_and_even():
    from dreamrunner.retrieval import RetrievalSettings

    assert RetrievalSettings(size=(720, 480)).size == (720, 480)
    for bad in ((0, 480), (-720, 480), (720, -2), (721, 480), (10**30, 480)):
        with pytest.raises(ValueError, match="must be positive even numbers"):
            RetrievalSettings(size=bad)


def _boxes(data):
    return [tuple(round(v, 9) for v in e["box"]) for k in data["scenes"][0]["keyframes"] for e in k["entities"]]


@pytest.mark.parametrize("scale,unit_x,unit_y,name", [
    (100, 100, 100, "percent"), (1000, 1000, 1000, "per-mille (0-1000)"),
    ("pixels", 720, 480, "pixels of the 720x480 frame"),
])
def test_boxes_on_another_scale_are_rescaled_as_a_whole(simple_story_data, scale, unit_x, unit_y, name):
    expected = _boxes(simple_story_data)

    def scaled(d):
        for keyframe in d["scenes"][0]["keyframes"]:
            for entity in keyframe["entities"]:
                x0, y0, x1, y1 = entity["box"]
                entity["box"] = [x0 * unit_x, y0 * unit_y, x1 * unit_x, y1 * unit_y]
    data, repairs = repair_story_data(_mutated(simple_story_data, scaled))
    assert _boxes(data) == expected
    peak = max(max(x0, x1) * unit_x for x0, _, x1, _ in expected)
    assert [str(r) for r in repairs] == [f"scene 1 ('s1'): the boxes were in {name} (values up to {peak:g}); "
                                         f"divided x by {unit_x} and y by {unit_y} to normalize them"]


def test_pixels_are_pixels_of_the_storys_own_frame(simple_story_data):
    def pixels(d):
        d["settings"] = {"video": {"width": 320, "height": 160}}
        for keyframe in d["scenes"][0]["keyframes"]:
            keyframe["entities"][1]["box"] = [224, 96, 288, 144]  # the owl, in pixels of 320x160
            keyframe["entities"][0]["box"] = [32, 16, 128, 80]
    data, repairs = repair_story_data(_mutated(simple_story_data, pixels))
    assert _boxes(data)[:2] == [(0.1, 0.1, 0.4, 0.5), (0.7, 0.6, 0.9, 0.9)]
    assert "pixels of the 320x160 frame" in str(repairs[0])


@pytest.mark.parametrize("box,message", [
    ([0.1, 0.2, 5, 0.9], "the boxes mix scales: 47 values are in [0, 1] but 1 are larger (up to 5)"),
    ([0.1, 0.2, 5000, 0.9], "the boxes mix scales"),
])
def test_mixed_scales_are_refused_not_guessed(simple_story_data, box, message):
    with pytest.raises(StoryValidationError, match=re.escape(message)):
        repair_story_data(_mutated(simple_story_data, lambda d: _entity(d).update(box=box)))


def test_scales_beyond_any_frame_are_refused(simple_story_data):
    def huge(d):
        for keyframe in d["scenes"][0]["keyframes"]:
            for entity in keyframe["entities"]:
                entity["box"] = [v * 5000 for v in entity["box"]]
    with pytest.raises(StoryValidationError, match="fit no known scale"):
        repair_story_data(_mutated(simple_story_data, huge))


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10**400, "x"])
def test_boxes_that_are_not_finite_numbers_are_not_invented(simple_story_data, value):
    data, repairs = repair_story_data(_mutated(simple_story_data, lambda d: _entity(d).update(box=[0.1, 0.1, value, 0.5])))
    assert repairs == []
    with pytest.raises(StoryValidationError, match="scene 1 \\('s1'\\), keyframe 1, entity 1 \\('witch'\\), box"):
        validate_story(data)


# ---------------------------------------------------------------- settings (issue 13, second round)

@pytest.mark.parametrize("path, value, message", [
    ("video.num_frames", True, "must be a number, not true"),  # was accepted as 1 frame
    ("render.steps", False, "must be a number, not false"),
    ("prior.motion_resolution", [True, 16], "must be a number, not [true, 16]"),
    ("render.guidance_scale", float("inf"), "finite number"),
    ("render.guidance_scale", float("nan"), "finite number"),
    ("render.guidance_scale", 1e309, "finite number"),  # json.loads("1e309") is inf
    ("prior.learning_rate", float("inf"), "finite number"),
    ("prior.weight_decay", float("-inf"), "finite number"),
    ("render.seed", 10**23, "less than or equal to 9223372036854775807"),  # torch: Overflow when unpacking long
    ("render.seed", -1, "greater than or equal to 0"),
    ("prior.seed", -5, "greater than or equal to 0"),
    ("render.variants", 100_000, "less than or equal to 64"),
    ("video.fps", 100_000, "less than or equal to 120"),
    ("video.vae_temporal", 0, "Input should be 4"),  # was a ZeroDivisionError
    ("video.patch_size", 0, "Input should be 2"),
    ("video.vae_spatial", 0, "Input should be 8"),
    ("prior.rank", 10**30, "less than or equal to 1024"),  # would reach torch as a tensor size
    ("prior.max_steps", 10**30, "less than or equal to 1000000"),
])
def test_settings_refuse_what_would_crash_later(simple_story_data, path, value, message):
    from dreamrunner.edits import EditError, set_setting
    from dreamrunner.project import dump_story

    story = Story.model_validate(simple_story_data)
    with pytest.raises(EditError, match=re.escape(message)):
        set_setting(story, path, value)
    dump_story(story)  # still storable: allow_nan=False would raise on a bare Infinity
    group, field = path.split(".")
    data = copy.deepcopy(simple_story_data)
    data.setdefault("settings", {}).setdefault(group, {})[field] = value
    with pytest.raises(StoryValidationError, match=f"settings, {group}, {field}"):
        validate_story(data)


def test_the_last_variant_seed_is_still_a_seed():
    from dreamrunner.story import MAX_SEED, RenderSettings

    assert RenderSettings(seed=MAX_SEED).seed == MAX_SEED
    assert RenderSettings(seed=MAX_SEED - 3, variants=4).variants == 4
    with pytest.raises(ValueError, match="passes the largest seed"):
        RenderSettings(seed=MAX_SEED - 2, variants=4)


def test_planner_and_retrieval_settings_share_the_number_rule():
    from dreamrunner.planning.settings import PlannerSettings
    from dreamrunner.retrieval import RetrievalSettings
    from dreamrunner.retrieval.filters import ClipFilter

    for model, field, value in [(PlannerSettings, "timeout", float("inf")), (PlannerSettings, "max_attempts", True),
                                (RetrievalSettings, "sample_fps", float("nan")), (RetrievalSettings, "size", (True, 2)),
                                (ClipFilter, "max_duration", float("inf"))]:
        with pytest.raises(ValueError, match="finite number|must be a number"):
            model(**{field: value})


def test_a_project_file_with_infinity_is_refused_by_name(tmp_path, simple_story_data):
    import json

    from dreamrunner.project import Project, dump_story

    Project.create(tmp_path / "p", Story.model_validate(simple_story_data))
    path = tmp_path / "p" / "project.json"
    text = re.sub(r'"guidance_scale": [0-9.]+', '"guidance_scale": Infinity', path.read_text())
    assert "Infinity" in text
    path.write_text(text)
    with pytest.raises(StoryValidationError, match="settings, render, guidance_scale: Input should be a finite"):
        Project.load(tmp_path / "p")
    story = Story.model_validate(simple_story_data)
    assert "Infinity" not in dump_story(story) and json.loads(dump_story(story))


def test_a_thin_box_names_the_keyframe_its_extent_came_from_by_position_in_the_answer():
    """A keyframe that is no object (null) still counts in the numbering the messages use."""
    from dreamrunner.validation import rescale_boxes

    scene = {"keyframes": [None, {"entities": [{"name": "Mira", "box": [0.1, 0.2, 0.3, 0.8]}]},
                           {"entities": [{"name": "Mira", "box": [0.5, 0.2, 0.5, 0.8]}]}]}
    repairs = []
    rescale_boxes(scene, "s", (720, 480), repairs, min_extent=0.01)
    assert [str(r) for r in repairs] == ["s, keyframe 3, entity 1 ('Mira'): box [0.5, 0.2, 0.5, 0.8] was 0 wide and "
                                         "0.6 tall; took its width from keyframe 2"]
    assert scene["keyframes"][2]["entities"][0]["box"] == pytest.approx([0.4, 0.2, 0.6, 0.8])
