"""The metric math on constructed cases where the right answer is known, with deterministic injected encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamrunner.metrics import (
    COLUMNS,
    Encoders,
    EvalConfig,
    Event,
    MetricsError,
    VideoSample,
    character_consistency,
    evaluate,
    events_from_texts,
    fine_grained_text_alignment,
    fine_grained_video_text_alignment,
    frame_quality,
    motion_smoothness,
    sample_indices,
    scene_events,
    text_alignment,
    transition_smoothness,
    video_text_alignment,
)
from dreamrunner.metrics.frames import as_image_list
from dreamrunner.metrics.story_metrics import cosine_matrix, cosine_rows, event_frame_groups, keyframe_text
from dreamrunner.plan_format import parse_plan

COLORS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}


def _unit(x: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(x), dtype=torch.float32), dim=-1)


class PixelEncoder:
    """Images -> their centred pixels: similar pictures get similar embeddings."""

    model_id, random_weights = "pixels", False

    def encode_images(self, images):
        stack = np.stack(as_image_list(images)).astype(np.float64) / 255.0 - 0.5
        return _unit(stack.reshape(len(stack), -1))


class ColorEncoder:
    """Images -> mean colour; texts -> the colour words they name. A toy CLIP whose right answers are known."""

    model_id, random_weights = "colors", False

    def encode_images(self, images):
        stack = np.stack(as_image_list(images)).astype(np.float64) / 255.0 - 0.5
        return _unit(stack.mean(axis=(1, 2)))

    def encode_texts(self, texts):
        return _unit([np.sum([COLORS[w] for w in t.split() if w in COLORS] or [(0.0, 0.0, 0.0)], axis=0) + 1e-6
                      for t in texts])


class ColorVideoEncoder(ColorEncoder):
    """A toy ViCLIP: a clip is its mean colour."""

    def encode_videos(self, videos):
        return _unit([np.asarray(v, dtype=np.float64).mean(axis=(0, 1, 2)) / 255.0 - 0.5 for v in videos])


class BlendInterpolator:
    """The middle frame as the average of its neighbours: exact for a linear fade."""

    model_id, random_weights = "blend", False

    def interpolate(self, before, after):
        return ((before.astype(np.float64) + after.astype(np.float64)) / 2).round().astype(np.uint8)


def solid(color: str, frames: int = 4, size: int = 8) -> np.ndarray:
    rgb = [255 if c > 0 else 0 for c in COLORS[color]]
    return np.broadcast_to(np.array(rgb, np.uint8), (frames, size, size, 3)).copy()


def moving_square(frames: int = 16) -> np.ndarray:
    video = np.zeros((frames, 16, 32, 3), np.uint8)
    for t in range(frames):
        video[t, 4:12, t:t + 8] = 255
    return video


def fade(frames: int = 9) -> np.ndarray:
    levels = np.linspace(0, 240, frames).round().astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, 6, 6, 3)).copy()


# --- character consistency -------------------------------------------------------------------------------

def test_identical_frames_give_maximal_consistency():
    reference = moving_square(1)[0]
    same = np.stack([reference] * 5)
    other = moving_square(16)[8:13]
    encoder = PixelEncoder()
    # Exactly the maximum: float32 embeddings once gave 100.0002 here.
    assert character_consistency(same, [reference], encoder) == 100.0
    assert character_consistency(other, [reference], encoder) < 99.0


def test_cosines_of_float32_embeddings_are_exact_for_identical_rows_and_never_above_one():
    rng = np.random.default_rng(0)
    embeddings = _unit(rng.normal(size=(64, 768)))  # float32, normalized to about 1e-7, like the encoders give
    assert float((embeddings * embeddings).sum(-1).max()) > 1.0  # the trap: a plain float32 dot product
    matrix = cosine_matrix(embeddings, embeddings)
    assert matrix.dtype == torch.float64 and bool((matrix.diagonal() == 1.0).all()) and float(matrix.max()) <= 1.0
    assert bool((cosine_rows(embeddings, embeddings) == 1.0).all())
    opposite = cosine_matrix(embeddings, -embeddings).diagonal()
    assert float(opposite.min()) >= -1.0 and torch.allclose(opposite, torch.full_like(opposite, -1.0), atol=1e-12)
    other = embeddings.roll(1, 0)
    expected = (embeddings.double() * other.double()).sum(-1)
    assert torch.allclose(cosine_rows(embeddings, other), expected, atol=1e-6)


def test_consistency_falls_as_the_frames_drift_from_the_reference():
    video = moving_square(16)
    encoder = PixelEncoder()
    scores = [character_consistency(video[t:t + 1], [video[0]], encoder) for t in range(0, 8, 2)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


# --- text alignment ------------------------------------------------------------------------------------

def test_matching_text_beats_mismatched_text():
    encoder = ColorEncoder()
    red = solid("red")
    assert text_alignment(red, "a red ball", encoder) > text_alignment(red, "a blue ball", encoder)
    assert text_alignment(red, "a red ball", encoder) == pytest.approx(100.0)


def test_fine_grained_alignment_rewards_events_in_the_right_order():
    video = np.concatenate([solid("red"), solid("blue")])
    encoder = ColorEncoder()
    right = fine_grained_text_alignment(video, events_from_texts(["red car", "blue car"]), encoder)
    wrong = fine_grained_text_alignment(video, events_from_texts(["blue car", "red car"]), encoder)
    assert right == pytest.approx(100.0) and right > wrong
    # The full-text score cannot see order: both event texts together score the same either way round.
    assert text_alignment(video, "red blue", encoder) == pytest.approx(text_alignment(video, "blue red", encoder))


def test_video_text_alignment_and_its_fine_grained_form():
    video = np.concatenate([solid("green"), solid("red")])
    encoder = ColorVideoEncoder()
    assert video_text_alignment(solid("green"), "green", encoder) > video_text_alignment(solid("green"), "red", encoder)
    right = fine_grained_video_text_alignment(video, events_from_texts(["green", "red"]), encoder)
    wrong = fine_grained_video_text_alignment(video, events_from_texts(["red", "green"]), encoder)
    assert right == pytest.approx(100.0) and right > wrong


def test_frames_are_placed_on_the_time_axis_of_their_video():
    """Sampled frames keep their place: with times given, a few frames still land in the right events."""
    video = np.concatenate([solid("red", 1), solid("blue", 1)])
    events = [Event("red", 0.0, 0.8), Event("blue", 0.8, 1.0)]
    encoder = ColorEncoder()
    # Frame 0 sits at 0.0 and frame 1 at 0.5 of a longer video: both are in the red event, so the blue
    # frame is judged against "red" (cosine -1/3) and the blue event has no frame.
    assert fine_grained_text_alignment(video, events, encoder, times=np.array([0.0, 0.5])) == pytest.approx(
        (100 - 100 / 3) / 2, abs=1e-3)
    assert fine_grained_text_alignment(video, events, encoder, times=np.array([0.0, 1.0])) == pytest.approx(100.0)
    with pytest.raises(MetricsError, match="frame times"):
        fine_grained_text_alignment(video, events, encoder, times=np.array([0.0]))


def test_event_groups_split_at_boundaries_and_keep_the_last_frame():
    times = np.linspace(0, 1, 7)
    groups = event_frame_groups(events_from_texts(["a", "b", "c"]), times)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3], [4, 5, 6]]
    assert event_frame_groups([Event("x", 0.5, 0.6)], np.array([0.0, 1.0]))[0].size == 0
    with pytest.raises(MetricsError):
        Event("x", 0.6, 0.5)
    with pytest.raises(MetricsError):
        Event("  ", 0.0, 1.0)


def test_scene_events_follow_the_keyframes_and_merge_repeats():
    plan = "Background: a park\n" + "\n".join(
        f'Frame_{k + 1}: [["girl", "{m}", "a girl {m} in the park"], [0.1, 0.1, 0.5, 0.9]]'
        for k, m in enumerate(["walking", "walking", "walking", "waving", "waving", "sitting"]))
    scene, _ = parse_plan(plan, "s1")
    events = scene_events(scene)
    assert [e.text for e in events] == ["a girl walking in the park", "a girl waving in the park",
                                        "a girl sitting in the park"]
    # Keyframe k owns the k-th sixth of the video (the region schedule's rule: one second each at 6 s).
    assert [x for e in events for x in (e.start, e.end)] == pytest.approx([0.0, 0.5, 0.5, 5 / 6, 5 / 6, 1.0])
    assert keyframe_text(scene, 0) == "a girl walking in the park"


# --- transitions and motion ----------------------------------------------------------------------------

def test_a_shuffled_video_scores_lower_transition_smoothness():
    video = moving_square(16)
    shuffled = video[np.random.default_rng(0).permutation(len(video))]
    encoder = PixelEncoder()
    assert transition_smoothness(video, encoder) > transition_smoothness(shuffled, encoder) + 5
    assert transition_smoothness(np.stack([video[0]] * 4), encoder) == 100.0
    assert transition_smoothness(video[:1], encoder) is None


def test_motion_smoothness_is_perfect_for_a_linear_fade_and_drops_when_shuffled():
    video = fade(9)
    shuffled = video[[0, 5, 2, 8, 4, 1, 6, 3, 7]]
    assert motion_smoothness(video, BlendInterpolator()) == 100.0
    assert motion_smoothness(shuffled, BlendInterpolator()) < 90.0
    assert motion_smoothness(video[:2], BlendInterpolator()) is None


def test_quality_scores_are_checked_against_the_frame_count():
    class Bright:
        model_id, random_weights = "bright", False

        def score_images(self, images):
            return np.array([image.mean() / 255.0 for image in images])

    assert frame_quality(fade(9), Bright()) == pytest.approx(fade(9).mean() / 255.0 * 100)

    class Broken(Bright):
        def score_images(self, images):
            return np.zeros(1)

    with pytest.raises(MetricsError, match="1,"):
        frame_quality(fade(9), Broken())


# --- sampling and inputs -------------------------------------------------------------------------------

def test_sampling_spreads_frames_evenly_and_keeps_the_ends():
    indices = sample_indices(49, 16)
    assert len(indices) == 16 and indices[0] == 0 and indices[-1] == 48
    assert np.all(np.diff(indices) >= 3) and np.all(np.diff(indices) <= 4)
    assert sample_indices(9, None).tolist() == list(range(9))
    assert sample_indices(9, 50).tolist() == list(range(9))
    assert sample_indices(9, 1).tolist() == [4]
    with pytest.raises(MetricsError):
        sample_indices(9, 0)


def test_frames_may_be_pil_images_and_bad_frames_are_refused():
    from PIL import Image

    red = solid("red", 2)
    encoder = ColorEncoder()
    assert text_alignment([Image.fromarray(f) for f in red], "red", encoder) == pytest.approx(100.0)
    with pytest.raises(MetricsError, match="uint8"):
        text_alignment(red.astype(np.float32), "red", encoder)
    with pytest.raises(MetricsError, match="uint8"):
        character_consistency(red[..., :2], [red[0]], PixelEncoder())


# --- the evaluation pipeline over injected encoders ---------------------------------------------------

def test_evaluate_scores_what_it_can_and_skips_the_rest_with_reasons():
    encoders = Encoders(clip=ColorEncoder(), dino=PixelEncoder(), viclip=ColorVideoEncoder(),
                        interpolator=BlendInterpolator(),
                        unavailable={"aesthetic": "no head", "imaging_quality": "no MUSIQ"})
    good = VideoSample("good", np.concatenate([solid("red", 8), solid("blue", 8)]), "red blue",
                       events_from_texts(["red", "blue"]), {"hero": [solid("red", 1)[0]]})
    bad = VideoSample("bad", good.video[np.random.default_rng(1).permutation(16)], "red blue",
                      events_from_texts(["blue", "red"]), {"hero": [solid("green", 1)[0]]}, is_noise=True)
    report = evaluate([good, bad], encoders, EvalConfig(max_frames=8), source="constructed")
    rows = {row.name: row for row in report.rows}
    assert [c.key for c in report.columns] == [c.key for c in COLUMNS if c.slot not in ("aesthetic", "imaging_quality")]
    assert report.skipped == {"aesthetics": "no head", "imaging_quality": "no MUSIQ"}
    for key in ("consistency_clip", "consistency_dino", "fine_text_clip", "fine_text_viclip", "transition_dino",
                "motion_smoothness"):
        assert rows["good"].scores[key] > rows["bad"].scores[key], key
    assert rows["good"].scored_frames == 8 and rows["good"].num_frames == 16
    assert report.mean["fine_text_clip"] == pytest.approx(np.mean([r.scores["fine_text_clip"] for r in report.rows]))
    table = report.format_table()
    assert "bad *" in table and "RANDOM WEIGHTS - NOISE" in table and "no MUSIQ" in table
    assert "PLUMBING" not in table
    data = json.loads(json.dumps(report.to_dict()))
    assert "aesthetics" not in data["rows"][0]["scores"] and data["noise"] is True


def test_evaluate_refuses_when_no_metric_has_a_model():
    with pytest.raises(MetricsError, match="no metric can be computed") as caught:
        evaluate([VideoSample("v", solid("red"))], Encoders(unavailable={"clip": "CLIP 'x' could not be loaded"}))
    assert "CLIP 'x' could not be loaded" in str(caught.value)


def test_evaluate_reports_progress_and_stops_when_cancelled():
    from dreamrunner.jobs import CancelToken, Cancelled

    samples = [VideoSample(name, solid(color)) for name, color in (("one", "red"), ("two", "blue"))]
    encoders = Encoders(dino=PixelEncoder())
    updates = []
    evaluate(samples, encoders, progress=updates.append)
    assert [(u.step, u.total) for u in updates] == [(0, 2), (1, 2), (2, 2)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate(samples, encoders, cancel=token)
