import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamrunner.plan_format import parse_plan
from dreamrunner.regions import BACKGROUND, box_cells, build_region_plan, keyframe_positions, schedule_boxes
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


def test_keyframe_positions_span_the_latent_frames():
    assert keyframe_positions(6, 13).tolist() == pytest.approx([0, 2.4, 4.8, 7.2, 9.6, 12])
    assert keyframe_positions(6, 11).tolist() == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize("latent_frames", [6, 11, 16, 26])
def test_schedule_hits_the_keyframe_boxes_exactly_at_keyframe_positions(simple_scene_data, latent_frames):
    scene = Scene.model_validate(simple_scene_data)
    schedule = schedule_boxes(scene, latent_frames)
    assert len(schedule) == latent_frames
    for k, position in enumerate(keyframe_positions(6, latent_frames)):
        assert position == int(position)
        boxes = {r.name: r.box for r in schedule[int(position)]}
        assert boxes == {e.name: e.box for e in scene.keyframes[k].entities}


def test_schedule_interpolates_linearly_between_keyframes(simple_scene_data):
    scene = Scene.model_validate(simple_scene_data)
    schedule = schedule_boxes(scene, 11)  # keyframes on even latent frames
    witch = {r.name: r for r in schedule[3]}["witch"]  # halfway between keyframe indices 1 (x0 0.1) and 2 (x0 0.2)
    assert witch.box == pytest.approx((0.15, 0.1, 0.45, 0.5))
    thirteen = schedule_boxes(scene, 13)
    witch = {r.name: r for r in thirteen[1]}["witch"]  # 1/2.4 of the way from keyframe 1 to 2
    assert witch.box[0] == pytest.approx(0.1 / 2.4)


def test_descriptions_switch_at_the_midpoint_and_absent_entities_hold():
    keyframes = [[("cat", "A cat sleeping", (0.0, 0.0, 0.2, 0.2))]] * 3 + \
                [[("cat", "A cat waking", (0.4, 0.0, 0.6, 0.2)), ("dog", "A dog", (0.5, 0.5, 0.9, 0.9))]] * 3
    schedule = schedule_boxes(_scene(keyframes), 11)  # keyframes 3 and 4 sit on latent frames 4 and 6
    assert [r.description for r in schedule[4]] == ["A cat sleeping"]
    assert [r.description for r in schedule[5]] == ["A cat waking", "A dog"]  # the tie goes to the later keyframe
    assert {r.name: r.box for r in schedule[5]} == {"cat": pytest.approx((0.2, 0.0, 0.4, 0.2)), "dog": (0.5, 0.5, 0.9, 0.9)}


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
