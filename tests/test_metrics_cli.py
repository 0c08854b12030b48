"""`dreamrunner eval` end to end: real mp4 files (PyAV), real project folders, tiny encoders, JSON and CSV out."""

from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from dreamrunner.backends import NOISE_LABEL
from dreamrunner.cli import main
from dreamrunner.metrics.evaluate import PLUMBING_LABEL
from dreamrunner.plan_format import parse_plan
from dreamrunner.project import Project
from dreamrunner.story import Character, RenderResult, Story

FRAMES = 9  # the tiny backend's clip length


def write_video(path, seed: int, frames: int = FRAMES) -> None:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, video, plugin="pyav", codec="libx264", fps=8)


def write_image(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)


def plan(name: str, motions: list[str]) -> str:
    return "Background: a sunny park\n" + "\n".join(
        f'Frame_{k + 1}: [["{name}", "{m}", "a {name} {m} in the park"], [0.1, 0.2, 0.5, 0.9]]'
        for k, m in enumerate(motions))


@pytest.fixture
def project(tmp_path):
    """Three scenes: two rendered (tiny backend, noise), one not; one character with reference images."""
    folder = tmp_path / "story"
    walk, _ = parse_plan(plan("witch", ["walking"] * 3 + ["waving"] * 3), "walk", narration="The witch walks.")
    fly, _ = parse_plan(plan("bird", ["flying"] * 6), "fly")
    rest, _ = parse_plan(plan("witch", ["sitting"] * 6), "rest")
    for keyframe in walk.keyframes:
        keyframe.entities[0].character_id = "witch"
    for number, scene in enumerate((walk, fly)):
        scene.renders = [RenderResult(seed=number, path=f"media/renders/{scene.id}.mp4", cache_key=f"k{number}",
                                      backend="tiny", is_noise=True)]
        scene.chosen_render = 0
        write_video(folder / scene.renders[0].path, seed=number)
    for i in range(2):
        write_image(folder / f"media/refs/witch{i}.png", seed=10 + i)
    witch = Character(id="witch", name="Wanda", token="[v1]",
                      reference_images=["media/refs/witch0.png", "media/refs/witch1.png"])
    Project.create(folder, Story(title="t", characters=[witch], scenes=[walk, fly, rest]))
    return folder


def test_eval_project_with_tiny_encoders_prints_the_table_and_writes_json_and_csv(project, capsys):
    assert main(["eval", str(project), "--tiny-encoders", "--max-frames", "5", "--batch-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert NOISE_LABEL in out and PLUMBING_LABEL in out
    for title in ("Character consistency", "Full-text alignment", "Fine-grained alignment", "Transition",
                  "Visual quality"):
        assert title in out
    assert "walk *" in out and "fly *" in out and "mean" in out
    assert "ViCLIP (InternVid)" in out and "MUSIQ" in out and "AMT-S" in out
    assert "scene 3 ('rest') has no chosen render" in out
    assert "scoring walk" in err and "scoring fly" in err and "2/2" in err  # the progress bar

    report = json.loads((project / "eval" / "metrics.json").read_text())
    assert report["noise"] is True and report["random_encoders"] == ["clip", "dino", "aesthetic"]
    assert [row["name"] for row in report["rows"]] == ["walk", "fly"]
    keys = [c["key"] for c in report["columns"]]
    assert keys == ["consistency_clip", "consistency_dino", "full_text_clip", "fine_text_clip", "transition_dino",
                    "aesthetics"]
    assert set(report["skipped"]) == {"full_text_viclip", "fine_text_viclip", "imaging_quality", "motion_smoothness"}
    walk, fly = report["rows"]
    assert walk["num_frames"] == FRAMES and walk["scored_frames"] == 5
    assert all(walk["scores"][k] is not None for k in keys)
    # Only the witch scene names a character with references: the bird scene has no consistency score.
    assert fly["scores"]["consistency_clip"] is None and fly["scores"]["full_text_clip"] is not None
    assert report["mean"]["consistency_clip"] == pytest.approx(walk["scores"]["consistency_clip"])
    assert report["mean"]["transition_dino"] == pytest.approx(
        (walk["scores"]["transition_dino"] + fly["scores"]["transition_dino"]) / 2)

    with (project / "eval" / "metrics.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["video", "is_noise", *keys]
    assert [r[0] for r in rows[1:]] == ["walk", "fly", "mean"]
    assert rows[2][2] == ""  # no number where a video has none
    assert float(rows[1][2]) == pytest.approx(walk["scores"]["consistency_clip"], abs=1e-4)


def test_eval_without_loadable_models_names_them_and_fills_nothing(project, capsys):
    assert main(["eval", str(project), "--offline", "--out", str(project / "out")]) == 1
    err = capsys.readouterr().err
    assert "no metric can be computed" in err
    for model in ("openai/clip-vit-large-patch14-336", "facebook/dinov2-base", "aesthetic predictor head"):
        assert model in err
    assert "--tiny-encoders" in err
    assert not (project / "out").exists()


class BlendInterpolator:
    model_id, random_weights = "blend", False

    def interpolate(self, before, after):
        return ((before.astype(np.float64) + after.astype(np.float64)) / 2).round().astype(np.uint8)


def blend_interpolator(device):
    return BlendInterpolator()


def test_eval_folder_of_videos_with_texts(tmp_path, capsys):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", seed=1)
    write_video(videos / "b.mp4", seed=2)
    write_video(videos / "extra.mp4", seed=3)
    write_image(tmp_path / "refs" / "hero.png", seed=4)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({
        "a.mp4": {"text": "a witch walking", "events": ["a witch walking", "a witch waving"],
                  "references": ["refs/hero.png"]},
        "b.mp4": {"text": "a dog", "events": [{"text": "a dog sitting", "start": 0.0, "end": 1.0}],
                  "is_noise": True},
    }))
    assert main(["eval", "--videos", str(videos), "--texts", str(texts), "--tiny-encoders"]) == 0
    out = capsys.readouterr().out
    report = json.loads((videos / "eval" / "metrics.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["a.mp4", "b.mp4"]
    assert report["rows"][0]["scores"]["consistency_dino"] is not None
    assert report["rows"][1]["scores"]["consistency_dino"] is None
    assert report["noise"] is True and "b.mp4 *" in out and "a.mp4 *" not in out
    assert "extra.mp4 is not in texts.json" in out


def test_eval_folder_scores_motion_smoothness_through_an_interpolator_hook(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", seed=1)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"a.mp4": {"text": "noise"}}))
    hook = f"{__name__}:blend_interpolator"
    assert main(["eval", "--videos", str(videos), "--texts", str(texts), "--tiny-encoders", "--interpolator", hook,
                 "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "motion_smoothness" not in report["skipped"]
    assert 0 < report["rows"][0]["scores"]["motion_smoothness"] < 100


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"a.mp4": {"txt": "typo"}}), "does not describe videos"),
    (json.dumps({"missing.mp4": {"text": "x"}}), "missing.mp4, which is not in"),
    (json.dumps({"a.mp4": {"events": ["x", {"text": "y", "start": 0, "end": 1}]}}), "not a mix"),
    (json.dumps({"a.mp4": {"events": [{"text": "y", "start": 0.7, "end": 0.2}]}}), "not within"),
    (json.dumps({}), "names no videos"),
])
def test_bad_texts_files_get_specific_errors(tmp_path, capsys, content, message):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", seed=1, frames=3)
    texts = tmp_path / "texts.json"
    texts.write_text(content)
    assert main(["eval", "--videos", str(videos), "--texts", str(texts), "--tiny-encoders"]) == 1
    assert message in capsys.readouterr().err


def test_bad_invocations_and_missing_media_get_specific_errors(project, tmp_path, capsys):
    cases = [
        ([], "give either a PROJECT"),
        ([str(project), "--videos", str(tmp_path)], "give either a PROJECT"),
        (["--videos", str(tmp_path)], "--videos needs --texts"),
        ([str(project), "--texts", "x.json"], "--texts goes with --videos"),
        ([str(project), "--tiny-encoders", "--max-frames", "0"], "--max-frames must be at least 1"),
        ([str(tmp_path / "nowhere")], "no project at"),
    ]
    for arguments, message in cases:
        # options that do not go together are usage errors (2), a missing project a failure (1)
        assert main(["eval", *arguments]) == (1 if "no project at" in message else 2), arguments
        assert message in capsys.readouterr().err, arguments
    (project / "media" / "renders" / "fly.mp4").unlink()
    assert main(["eval", str(project), "--tiny-encoders"]) == 1
    assert "scene 2 ('fly'): its chosen render media/renders/fly.mp4 is missing" in capsys.readouterr().err


def test_unreadable_media_get_specific_errors(project, capsys):
    (project / "media" / "refs" / "witch1.png").unlink()
    assert main(["eval", str(project), "--tiny-encoders"]) == 1
    assert "reference image" in (err := capsys.readouterr().err) and "witch1.png does not exist" in err
    (project / "media" / "renders" / "walk.mp4").write_bytes(b"not a video")
    assert main(["eval", str(project), "--tiny-encoders"]) == 1
    assert "walk.mp4: cannot open video (InvalidDataError" in (err := capsys.readouterr().err)
