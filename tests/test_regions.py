import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamrunner.plan_format import parse_plan
from dreamrunner.regions import BACKGROUND, box_cells, build_region_plan, frame_keyframes, schedule_boxes
from dreamrunner.story import Scene, VideoSettings

from published_plans import fixture_plans


def _scene(keyframes, background="bg") -> Scene:
    return Scene.model_validate({"id": "s", "background": background, "keyframes": [
        {"index": k, "entities": [
            {"name": name, "description": text, "box": list(box)} for name, text, box in entities
        ]} for k, entities in enumerate(keyframes)
    ]})


def test_default_geometry_is_cogvideox_2b():
    video = VideoSettings()
    assert video.latent_frames == 13
    assert video.token_grid == (13, 30, 45)


def released_keyframe_of_latent(latent_frames: int) -> list[int]:
    """The released code's rule, from the issue: latent 0 is the lone first pixel frame (keyframe 0), then
    each keyframe gets two latent frames."""
    return [0] + [k for k in range((latent_frames - 1) // 2) for _ in range(2)]


def keyframe_of_second(seconds: float, seconds_per_keyframe: float, keyframes: int) -> int:
    """The paper's rule in seconds: keyframe k owns the k-th second (right-closed); time 0 is keyframe 0."""
    return 0 if seconds == 0 else min(keyframes - 1, math.ceil(seconds / seconds_per_keyframe - 1e-9) - 1)


def test_latent_frames_map_to_keyframes_as_the_released_code():
    assert released_keyframe_of_latent(13) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert frame_keyframes(6, 13).tolist() == released_keyframe_of_latent(13)
    video = VideoSettings()  # 49 frames at 8 fps: one second (8 pixel frames) per keyframe
    assert frame_keyframes(6, video.latent_frames, video.num_frames).tolist() == released_keyframe_of_latent(13)
    # The same rule in seconds on pixel frames (the animatic) and for other frame counts the VAE takes.
    for frames, fps in ((49, 8), (25, 8), (97, 16), (9, 8)):
        duration = (frames - 1) / fps
        expected = [keyframe_of_second(p / fps, duration / 6, 6) for p in range(frames)]
        assert frame_keyframes(6, frames, frames).tolist() == expected, (frames, fps)
        # A latent frame shows the keyframe at the mean time of the pixel frames it packs (4 after the first).
        latents = (frames - 1) // 4 + 1
        packed = [[0]] + [list(range(4 * i - 3, 4 * i + 1)) for i in range(1, latents)]
        expected = [keyframe_of_second(float(np.mean(pixels)) / fps, duration / 6, 6) for pixels in packed]
        assert frame_keyframes(6, latents, frames).tolist() == expected, (frames, fps)
    assert frame_keyframes(6, 7, 25).tolist() == [0, 0, 1, 2, 3, 4, 5]  # 3 s: half a second, one latent each


def test_boxes_hold_within_a_keyframe_by_default(simple_scene_data):
    scene = Scene.model_validate(simple_scene_data)
    schedule = schedule_boxes(scene, 13)
    for t, keyframe in enumerate(released_keyframe_of_latent(13)):
        assert {r.name: r.box for r in schedule[t]} == {e.name: e.box for e in scene.keyframes[keyframe].entities}
    plan = build_region_plan(scene, (13, 6, 10))
    witch = plan.prompts.index("A [v1] witch flying")
    assert np.array_equal(plan.masks[witch, 1], plan.masks[witch, 2])  # both latents of keyframe 0
    assert not np.array_equal(plan.masks[witch, 2], plan.masks[witch, 3])  # keyframe 1 moved right


def test_interpolation_is_an_option_between_the_middles_of_keyframe_seconds(simple_scene_data):
    scene = Scene.model_validate(simple_scene_data)  # the witch's x0 is 0.1 * keyframe
    frames = 49
    schedule = schedule_boxes(scene, frames, frames, boxes="interpolate")
    x0 = [{r.name: r for r in regions}["witch"].box[0] for regions in schedule]
    # Keyframe k's second is (k, k + 1]; its middle, k + 0.5 s, is pixel frame 8k + 4 at 8 fps.
    for k in range(6):
        assert x0[8 * k + 4] == pytest.approx(0.1 * k)
    assert x0[8] == pytest.approx(0.05) and x0[0] == x0[4] == 0.0 and x0[48] == x0[44] == pytest.approx(0.5)
    assert np.all(np.diff(x0) >= -1e-12)
    assert {r.name: r for r in schedule[20]}["owl"].box == (0.7, 0.6, 0.9, 0.9)  # still: the same box
    latent = schedule_boxes(scene, 13, boxes="interpolate")
    # Latent frame 3 packs pixel frames 9-12, middle 10.5: 0.1 + (10.5 - 12) / 8 * 0.1 along keyframes 0 -> 1.
    assert {r.name: r for r in latent[3]}["witch"].box[0] == pytest.approx(0.1 * (10.5 - 4) / 8)
    with pytest.raises(ValueError, match="hold"):
        schedule_boxes(scene, 13, boxes="smooth")


def test_descriptions_switch_with_the_keyframe_and_absent_entities_hold():
    keyframes = [[("cat", "A cat sleeping", (0.0, 0.0, 0.2, 0.2))]] * 3 + \
                [[("cat", "A cat waking", (0.4, 0.0, 0.6, 0.2)), ("dog", "A dog", (0.5, 0.5, 0.9, 0.9))]] * 3
    for boxes in ("hold", "interpolate"):
        schedule = schedule_boxes(_scene(keyframes), 13, boxes=boxes)  # keyframe 3 starts at latent frame 7
        assert [r.description for r in schedule[6]] == ["A cat sleeping"]
        assert [r.description for r in schedule[7]] == ["A cat waking", "A dog"]
        assert {r.name: r.box for r in schedule[7]}["dog"] == (0.5, 0.5, 0.9, 0.9)
    # Latent 7 (pixel frames 25-28, middle 26.5) lies before keyframe 3's middle (28): 1.5 / 8 of the way back.
    cat = {r.name: r.box for r in schedule_boxes(_scene(keyframes), 13, boxes="interpolate")[7]}["cat"]
    assert cat == pytest.approx((0.4 - 0.4 * 1.5 / 8, 0.0, 0.6 - 0.4 * 1.5 / 8, 0.2))


def test_token_sets_match_a_hand_computed_example():
    # Grid: 2 frames of 4 rows x 6 columns. Flat index = (t * 4 + r) * 6 + c.
    keyframes = [[("a", "left", (0.0, 0.0, 0.5, 0.5)), ("b", "right", (1 / 3, 0.25, 1.0, 0.75))]] * 6
    plan = build_region_plan(_scene(keyframes, background="sky"), (2, 4, 6))
    assert plan.prompts == ("sky", "left", "right")
    # "left": rows 0-1, columns 0-2. "right": rows 1-2, columns 2-5 (round(1/3 * 6) = 2).
    left = [(t * 4 + r) * 6 + c for t in range(2) for r in (0, 1) for c in (0, 1, 2)]
    right = [(t * 4 + r) * 6 + c for t in range(2) for r in (1, 2) for c in (2, 3, 4, 5)]
    assert plan.token_indices(1).tolist() == left
    assert plan.token_indices(2).tolist() == right
    assert set(left) & set(right) == {8, 32}  # overlaps belong to both prompts: (t, r, c) = (0, 1, 2), (1, 1, 2)
    background = sorted(set(range(48)) - set(left) - set(right))
    assert plan.token_indices(BACKGROUND).tolist() == background
    assert plan.entity_names == ((), ("a",), ("b",))


def test_one_prompt_per_distinct_description_with_its_bindings():
    scene = Scene.model_validate({"id": "s", "background": "bg", "keyframes": [{"index": k, "entities": [
        {"name": "mira", "character_id": None, "motion": "dancing", "description": "Two friends dancing", "box": [0, 0, 0.5, 1]},
        {"name": "leo", "motion": "dancing", "description": "Two friends dancing", "box": [0.5, 0, 1, 1]},
    ]} for k in range(6)]})
    plan = build_region_plan(scene, (3, 4, 4))
    assert plan.prompts == ("bg", "Two friends dancing")
    assert plan.entity_names[1] == ("mira", "leo") and plan.motions[1] == ("dancing",)
    assert plan.masks[1].all() and not plan.masks[BACKGROUND].any()


def test_a_tiny_box_still_owns_the_cell_it_sits_in():
    assert box_cells((0.99, 0.99, 1.0, 1.0), 30, 45) == (slice(29, 30), slice(44, 45))
    assert box_cells((0.5, 0.5, 0.501, 0.501), 30, 45) == (slice(15, 16), slice(22, 23))


PLANS = fixture_plans()


def test_every_published_plan_builds_valid_masks_for_13_latent_frames():
    for plan_id, plan in PLANS:
        scene, _ = parse_plan(plan, plan_id)
        regions = build_region_plan(scene, (13, 30, 45))
        assert regions.masks.shape == (regions.num_prompts, 13, 30, 45)
        assert regions.masks.any(axis=0).all(), f"{plan_id}: a token without a prompt"
        assert all(text.strip() for text in regions.prompts), f"{plan_id}: a prompt without text"
        assert 2 <= regions.num_prompts <= 19


coordinate = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def random_boxes(draw):
    x0, x1 = sorted(draw(st.lists(coordinate, min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(coordinate, min_size=2, max_size=2, unique=True)))
    return (x0, y0, x1, y1)


@st.composite
def random_scenes(draw):
    names = ["a", "b", "c", "a"]
    texts = ["A fox", "A fox jumping", "A tree", "Two foxes", "A river"]
    keyframes = []
    for _ in range(6):
        count = draw(st.integers(0, 4))
        keyframes.append([(names[i], draw(st.sampled_from(texts)), draw(random_boxes())) for i in range(count)])
    return _scene(keyframes)


@settings(max_examples=300, deadline=None)
@given(scene=random_scenes(), frames=st.integers(1, 14), rows=st.integers(1, 12), cols=st.integers(1, 12))
def test_every_token_has_a_prompt_and_the_background_holds_exactly_the_uncovered(scene, frames, rows, cols):
    plan = build_region_plan(scene, (frames, rows, cols))
    assert plan.masks.any(axis=0).all()
    covered_by_entities = plan.masks[1:].any(axis=0)
    assert np.array_equal(plan.masks[BACKGROUND], ~covered_by_entities)
    schedule = schedule_boxes(scene, frames)
    for t, regions in enumerate(schedule):
        for region in regions:
            r, c = box_cells(region.box, rows, cols)
            assert plan.masks[plan.prompts.index(region.description, 1), t, r, c].all()
