"""Wan 2.1 as a second backend family: loading, keyframe timing on its latent frames, tiny end-to-end render."""

import json

import av
import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from render_helpers import three_scene_story

from dreamrunner.backends import BACKENDS, backend_video_defaults, load_backend
from dreamrunner.backends.cogvideox import WeightsMissingError
from dreamrunner.backends.wan import build_tiny_wan
from dreamrunner.cli import main
from dreamrunner.project import Project
from dreamrunner.regions import build_region_plan
from dreamrunner.rendering.wan_pipeline import WanDreamRunnerPipeline
from dreamrunner.story import VideoSettings


def test_wan_backends_are_offered_with_their_geometry():
    assert {"tiny-wan", "wan2.1-1.3b", "wan2.1-14b"} <= set(BACKENDS)
    assert backend_video_defaults("wan2.1-1.3b") == {"num_frames": 81, "fps": 16, "height": 480, "width": 832}
    assert backend_video_defaults("wan2.1-14b") == {"num_frames": 81, "fps": 16, "height": 720, "width": 1280}


def test_missing_wan_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMRUNNER_WAN21_14B", str(tmp_path / "Wan2.1-T2V-14B"))
    with pytest.raises(WeightsMissingError) as caught:
        load_backend("wan2.1-14b")
    message = str(caught.value)
    assert "hf download Wan-AI/Wan2.1-T2V-14B-Diffusers" in message and "DREAMRUNNER_WAN21_14B" in message
    assert "no such folder" in message and "'tiny-wan' backend" in message
    with pytest.raises(WeightsMissingError, match="hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        load_backend("wan2.1-1.3b", local_files_only=True, cache_dir=tmp_path)


def test_a_wan_diffusers_folder_loads_through_the_real_loader(tmp_path):
    tiny = build_tiny_wan()
    WanPipeline(**tiny.pipeline_kwargs()).save_pretrained(tmp_path)
    loaded = load_backend("wan2.1-1.3b", tmp_path)
    assert loaded.family == "wan" and not loaded.is_noise and loaded.max_text_tokens == 512
    assert loaded.video_defaults["num_frames"] == 81
    weight = loaded.transformer.get_submodule("blocks.1.attn2.to_k").weight
    assert weight.dtype == torch.bfloat16  # the default dtype of the Wan checkpoints
    assert torch.equal(weight, tiny.transformer.get_submodule("blocks.1.attn2.to_k").weight.bfloat16())


def test_keyframes_map_to_wan_latent_frames_by_seconds():
    """81 frames at 16 fps (5 s) -> 21 latent frames (the first alone, then 4 pixel frames each): latent frame j
    shows the keyframe owning the middle of its pixel frames, keyframe k owning (k/6, (k+1)/6] of the 5 s."""
    video = VideoSettings(num_frames=81, fps=16, height=480, width=832)  # Wan 2.1's own (4N+1, past CogVideoX's 49)
    assert video.token_grid == (21, 30, 52)
    scene = three_scene_story().scenes[0]  # the cat moves right keyframe by keyframe
    plan = build_region_plan(scene, video.token_grid, video.num_frames)
    cat = plan.prompts.index("[v1] cat walking")
    expected = []
    for j in range(21):
        middle = 0.0 if j == 0 else (4 * j - 1.5) / 16  # seconds from the first frame
        expected.append(min(5, max(0, int(np.ceil(middle / (5 / 6) - 1e-9)) - 1)))
    assert expected[:4] == [0, 0, 0, 0] and expected[-1] == 5 and sorted(expected) == expected
    for j, keyframe in enumerate(expected):
        box = scene.keyframes[keyframe].entities[0].box
        cols = np.flatnonzero(plan.masks[cat, j].any(0))
        assert cols[0] == round(box[0] * 52), (j, keyframe)


def expected_keyframes(latent_frames: int, num_frames: int, fps: int) -> list[int]:
    """The keyframe each latent frame shows, by seconds: the middle of its 4 pixel frames (the first alone) in a
    clip of (num_frames - 1) / fps seconds, keyframe k owning (k/6, (k+1)/6] of it."""
    seconds = (num_frames - 1) / fps
    middles = [0.0] + [(4 * j - 1.5) / fps for j in range(1, latent_frames)]
    return [min(5, max(0, int(np.ceil(t / (seconds / 6) - 1e-9)) - 1)) for t in middles]


def test_a_story_set_to_wan_renders_more_than_49_frames_at_16_fps(tmp_path, monkeypatch):
    """Switching the story to a Wan backend takes its geometry (16 fps, 4N+1 frames); 53 frames (more than
    CogVideoX's 49) at the tiny size render through StoryRenderer, with keyframes on the latent frames by seconds."""
    from dreamrunner import edits
    from dreamrunner.rendering import story_render
    from dreamrunner.rendering.story_render import StoryRenderer, commit_to

    story = three_scene_story(VideoSettings(), steps=1)
    for k, keyframe in enumerate(story.scenes[0].keyframes):  # the cat in token column k at keyframe k
        keyframe.entities[0].box = (k / 6 + 0.01, 0.35, (k + 1) / 6 - 0.01, 0.85)
    project = Project.create(tmp_path / "story", story)
    with project.edit():  # a CogVideoX story (49 frames at 8 fps, 720x480) switched to Wan 2.1 1.3B
        edits.set_backend(project.story, "cogvideox-5b")
        assert edits.set_backend(project.story, "wan2.1-1.3b").startswith(
            "video settings switched to wan2.1-1.3b's own: 81 frames at 16 fps, 832x480 (were 49 frames at 8 fps, "
            "720x480; video size 720x480")
        assert edits.set_backend(project.story, "tiny-wan") is None  # it makes that too: kept
        assert edits.set_video(project.story, size="tiny", num_frames=53) == ["num_frames", "height", "width"]
    video = project.story.settings.video
    assert (video.num_frames, video.fps, video.height, video.width, video.latent_frames) == (53, 16, 64, 96, 14)
    inputs = []
    real_input = story_render.scene_input
    monkeypatch.setattr(story_render, "scene_input", lambda *a, **k: inputs.append(real_input(*a, **k)) or inputs[-1])
    StoryRenderer(project, "tiny-wan", components=build_tiny_wan).render(commit_to(project), [0])
    render = Project.load(project.folder).story.scenes[0].renders[0]
    with av.open(str(project.resolve(render.path))) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert stream.average_rate == 16
    assert len(frames) == 53 and frames[0].shape == (64, 96, 3)
    plan = inputs[-1].region_plan
    grid = plan.masks.shape[1:]
    assert grid == video.token_grid == (14, 4, 6)
    cat = plan.prompts.index("[v1] cat walking")
    expected = expected_keyframes(14, 53, 16)
    assert expected[0] == 0 and expected[-1] == 5 and sorted(expected) == expected and len(set(expected)) == 6
    assert [np.flatnonzero(plan.masks[cat, j].any(0)).tolist() for j in range(14)] == [[k] for k in expected]


def test_cli_renders_and_exports_a_scene_on_tiny_wan(tmp_path, capsys):
    Project.create(tmp_path / "story", three_scene_story())
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--backend", "tiny-wan"]) == 0
    out = capsys.readouterr()
    assert "s2 seed 42: rendered media/renders/s2/" in out.out and "noise" in out.err
    project = Project.load(tmp_path / "story")
    render = project.story.scenes[1].renders[0]
    assert render.backend == "tiny-wan" and render.is_noise
    with av.open(str(project.resolve(render.path))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)
    # The stock single-prompt path is another cache key; SR3AI again is cached.
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--backend", "tiny-wan", "--region-control", "stock"]) == 0
    assert "s2 seed 42: rendered" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--backend", "tiny-wan"]) == 0
    assert "s2 seed 42: cached" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "story"), "--out", str(tmp_path / "story.mp4")]) == 0
    manifest = json.loads((tmp_path / "story.json").read_text())
    assert [s["source"] for s in manifest["scenes"]] == ["animatic", "render", "animatic"]


def test_the_renderer_picks_the_wan_pipeline(tmp_path):
    from dreamrunner.rendering.story_render import StoryRenderer

    project = Project.create(tmp_path / "story", three_scene_story())
    renderer = StoryRenderer(project, "tiny-wan", components=build_tiny_wan)
    assert isinstance(renderer.pipeline, WanDreamRunnerPipeline) and renderer.pipeline.text_tokens == 16


def test_the_editor_offers_every_backend():
    from ui.render_tab import BACKEND_CHOICES

    assert [value for _, value in BACKEND_CHOICES] == list(BACKENDS)


def test_a_scene_renders_with_a_gated_wan_prior_and_the_stock_path_loads_it_too(tmp_path):
    """A subject prior trained on tiny-wan, registered like the CLI does, bound to the cat's prompt: the SR3AI
    render gates it to the cat's region, the stock path loads it through diffusers' Wan loader; both record it
    and differ from the render without it."""
    from PIL import Image

    from dreamrunner import edits
    from dreamrunner.priors import train_subject
    from dreamrunner.rendering.pipeline import StockRegionControl
    from dreamrunner.rendering.story_render import StoryRenderer, commit_to
    from dreamrunner.video_io import read_video

    project = Project.create(tmp_path / "story", three_scene_story())
    Image.new("RGB", (64, 64), (10, 10, 10)).save(project.media / "mia.png")
    with project.edit():
        project.story.characters[0].reference_images = ["media/mia.png"]
        project.story.settings.prior.max_steps = 2
        project.story.settings.prior.rank = 4
        project.story.settings.prior.gradient_checkpointing = "off"
    components = build_tiny_wan()
    prior, _ = train_subject(project, "mia", components)
    before = {}
    for control in (None, StockRegionControl()):
        renderer = StoryRenderer(project, "tiny-wan", components=components, region_control=control)
        renderer.render(commit_to(project), [0])
        before[control is None] = read_video(project.resolve(Project.load(project.folder).story.scenes[0].renders[-1].path))
    project = Project.load(project.folder)
    with project.edit():
        assert edits.register_prior(project.story, prior, scale=3.0) == ["s1", "s2", "s3"]
    for control in (None, StockRegionControl()):
        renderer = StoryRenderer(project, "tiny-wan", components=components, region_control=control)
        renderer.render(commit_to(project), [0])
        project = Project.load(project.folder)
        render = project.story.scenes[0].renders[-1]
        assert [b.prior_id for b in render.priors] == ["subject-mia"]
        frames = read_video(project.resolve(render.path))
        assert np.abs(frames.astype(int) - before[control is None].astype(int)).max() > 0
