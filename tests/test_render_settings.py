"""Render settings (issue 17): story default and per-scene override, each setting reaching the pipeline on the tiny
backend, size/frames held to the model, the CLI's one-off options, and DreamRunnerPipeline taking a plain prompt
(as stock diffusers) or a Scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline
from render_helpers import TINY_VIDEO, three_scene_story

import dreamrunner.attention
from dreamrunner import edits
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.cli import main
from dreamrunner.errors import DreamRunnerError
from dreamrunner.project import Project
from dreamrunner.regions import build_region_plan
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, SceneInput
from dreamrunner.rendering.story_render import StoryRenderer, commit_to, scene_cache_key, scene_prompt
from dreamrunner.story import PriorBinding, RenderOverrides, RenderResult, VideoSettings, scene_render_settings
from dreamrunner.validation import StoryValidationError, validate_story
from dreamrunner.video_presets import VideoPresetError


@pytest.fixture(scope="module")
def components():
    return build_tiny("2b")


def test_a_scenes_own_settings_win_over_the_story_default_and_none_gives_it_back():
    story = three_scene_story()
    assert edits.set_render_settings(story, negative_prompt="blurry", seeds=[3, 5]) == ["negative_prompt", "seeds"]
    assert edits.set_render_settings(story, "s2", steps=7, seed=11, variants=2) == ["steps", "seed", "variants"]
    first, second = (scene_render_settings(story, scene) for scene in story.scenes[:2])
    assert (first.steps, first.seed_list(), first.negative_prompt) == (2, [3, 5], "blurry")
    assert (second.steps, second.seed_list(), second.negative_prompt) == (7, [11, 12], "blurry")
    # Saved and loaded back with the project file's rules.
    loaded = validate_story(story.model_dump(mode="json"))
    assert loaded.scenes[1].render == RenderOverrides(steps=7, seed=11, variants=2)
    # None takes a field back from the story default; with none left the scene follows the default.
    edits.set_render_settings(story, "s2", steps=None, seed=None)
    assert story.scenes[1].render == RenderOverrides(variants=2)
    assert edits.use_story_render_settings(story, "s2") and story.scenes[1].render is None
    assert scene_render_settings(story, story.scenes[1]) == story.settings.render
    # One seed in the story default counts variants on from it again (the explicit list goes).
    edits.set_render_settings(story, **edits.seed_fields([9]), variants=2)
    assert story.settings.render.seed_list() == [9, 10]


@pytest.mark.parametrize("scene, fields, message", [
    (None, {"scheduler": "ddim", "use_dynamic_cfg": True}, r"use_dynamic_cfg works with scheduler 'dpm' only"),
    (None, {"scheduler": "euler"}, r"scheduler.*'dpm' or 'ddim'"),
    (None, {"seeds": [4, 4]}, r"seeds \[4, 4\] name a seed twice"),
    (None, {"dtype": "int8"}, r"dtype.*'bf16', 'fp16' or 'fp32'"),
    ("s1", {"steps": 0}, r"scene 's1'.*steps.*greater than or equal to 1"),
    ("s1", {"backend": "tiny-5b"}, r"backend cannot differ per scene; a scene's own render settings are scheduler"),
    ("s1", {"dtype": "fp16"}, r"dtype cannot differ per scene"),
])
def test_settings_that_cannot_be_are_refused_naming_the_field(scene, fields, message):
    story = three_scene_story()
    with pytest.raises(edits.EditError, match=message):
        edits.set_render_settings(story, scene, **fields)
    assert story == three_scene_story()


def test_a_scenes_dynamic_guidance_needs_the_dpm_scheduler_of_the_story_default():
    story = three_scene_story()
    edits.set_render_settings(story, scheduler="ddim")
    with pytest.raises(edits.EditError, match=r"scene 's2', render settings, use_dynamic_cfg works with scheduler 'dpm' only"):
        edits.set_render_settings(story, "s2", use_dynamic_cfg=True)
    edits.set_render_settings(story, "s2", use_dynamic_cfg=True, scheduler="dpm")  # together they go
    data = story.model_dump(mode="json")
    data["scenes"][1]["render"] = {"use_dynamic_cfg": True}  # a hand-edited project file
    with pytest.raises(StoryValidationError, match=r"scene 2 \('s2'\).*use_dynamic_cfg"):
        validate_story(data)


def test_frame_size_and_count_are_held_to_the_model():
    story = three_scene_story()
    edits.set_render_settings(story, backend="cogvideox-2b")
    assert edits.set_video(story, size="480p", num_frames=49) == ["num_frames", "height", "width"]
    assert (story.settings.video.height, story.settings.video.width) == (480, 720)
    assert edits.set_video(story, num_frames=25) == ["num_frames"]
    with pytest.raises(VideoPresetError,
                       match=r"video size 1024x576 .*CogVideoX-2B \(cogvideox-2b\) makes 720x480 \(480p\)"):
        edits.set_video(story, size="1024x576")
    with pytest.raises(DreamRunnerError, match=r"num_frames = 50"):
        edits.set_video(story, num_frames=50)
    with pytest.raises(VideoPresetError, match=r"size 'big' is not WIDTHxHEIGHT.*presets of CogVideoX-2B: 480p"):
        edits.set_video(story, size="big")
    with pytest.raises(VideoPresetError, match=r"size '100000x100000' is too large: each side is at most 2048"):
        edits.set_video(story, size="100000x100000")
    with pytest.raises(VideoPresetError, match=r"CogVideoX-2B \(cogvideox-2b\) makes"):
        edits.set_setting(story, "video.width", 736)
    # Random weights take any size VideoSettings allows.
    edits.set_render_settings(story, backend="tiny")
    assert edits.set_video(story, size="192x128") == ["height", "width"]
    assert (story.settings.video.height, story.settings.video.width) == (128, 192)



def test_every_backend_has_a_row_and_its_defaults_fit_it():
    from dreamrunner.backends import BACKENDS
    from dreamrunner.edits import backend_geometry, geometry_mismatch
    from dreamrunner.video_presets import MODEL_VIDEO, check_video, parse_size

    assert set(MODEL_VIDEO) == set(BACKENDS)
    for backend in BACKENDS:
        video = VideoSettings(**backend_geometry(backend))  # the model's own geometry is valid settings
        assert geometry_mismatch(video, backend) is None, backend
    assert parse_size("768p", "cogvideox1.5-5b") == (768, 1360) and parse_size("720p", "wan2.1-14b") == (720, 1280)
    assert MODEL_VIDEO["cogvideox1.5-5b"].frame_counts[-1] == 161 and MODEL_VIDEO["wan2.1-1.3b"].frame_counts[-1] == 81
    check_video("wan2.1-14b", 81, 832, 480)  # 480x832 portrait
    with pytest.raises(VideoPresetError, match=r"video size 1280x720 .*Wan2.1-T2V-1.3B \(wan2.1-1.3b\) makes "
                                               r"832x480 \(480p\), 480x832 \(480p-portrait\)"):
        check_video("wan2.1-1.3b", 81, 720, 1280)
    with pytest.raises(VideoPresetError, match=r"num_frames = 85: CogVideoX1.5-5B .* makes 16N\+1 up to 161 "
                                               r"frames \(e.g. 81 or 97\)"):
        check_video("cogvideox1.5-5b", 85, 768, 1360)
    with pytest.raises(VideoPresetError, match=r"video size 1280x720 .* makes 1360x768 \(768p\)"):
        check_video("cogvideox1.5-5b", 97, 720, 1280)


def test_each_setting_reaches_the_pipeline_and_a_scenes_own_settings_win(tmp_path, components, monkeypatch):
    project = Project.create(tmp_path / "story", three_scene_story(steps=2))
    with project.edit():
        edits.set_render_settings(project.story, scheduler="ddim", guidance_scale=5.0, seeds=[3])
        edits.set_render_settings(project.story, "s2", scheduler="dpm", guidance_scale=7.5, use_dynamic_cfg=True,
                                  steps=3, negative_prompt="blurry, watermark")
    renderer = StoryRenderer(project, "tiny", components=components)
    encoded = []
    encode = dreamrunner.attention.encode_region_prompts
    monkeypatch.setattr(dreamrunner.attention, "encode_region_prompts",
                        lambda tokenizer, encoder, prompts, *a, **k: encoded.append(list(prompts)) or
                        encode(tokenizer, encoder, prompts, *a, **k))
    steps = []
    renderer.render(commit_to(project), [0, 1], progress=lambda p: steps.append(
        (p.message.split(",")[0], type(renderer.pipeline.scheduler), renderer.pipeline.guidance_scale, p.total)))

    first = [step for step in steps if step[0].endswith("(s1)")]
    second = [step for step in steps if step[0].endswith("(s2)")]
    assert [step[1:] for step in first] == [(CogVideoXDDIMScheduler, 5.0, 2)] * 2
    assert {step[1] for step in second} == {CogVideoXDPMScheduler} and len(second) == 3
    # Dynamic guidance: diffusers' cosine schedule between 1 and 1 + 7.5, a new value each step.
    guidance = [step[2] for step in second]
    assert len(set(guidance)) == 3 and all(1.0 <= value <= 8.5 for value in guidance)
    # The negative prompt is encoded for every region of the scene whose settings name it.
    plans = [build_region_plan(scene, TINY_VIDEO.token_grid).prompts for scene in project.story.scenes[:2]]
    assert encoded == [list(plans[0]), [""] * len(plans[0]), list(plans[1]), ["blurry, watermark"] * len(plans[1])]
    saved = Project.load(project.folder).story
    assert [(r.seed, r.steps, r.guidance_scale) for r in saved.scenes[0].renders] == [(3, 2, 5.0)]
    assert [(r.seed, r.steps, r.guidance_scale) for r in saved.scenes[1].renders] == [(3, 3, 7.5)]
    # The sampler and the region control are recorded too, in the story and in the clip's sidecar (the render
    # history tells variants apart by them; a sidecar is what a later run finds on disk).
    for scene, scheduler in zip(saved.scenes[:2], ("ddim", "dpm")):
        render = scene.renders[0]
        sidecar = RenderResult.model_validate_json(project.resolve(render.path).with_suffix(".json").read_text())
        assert (render.scheduler, render.region_control) == (scheduler, renderer.region_control.name) != (None, None)
        assert sidecar == render
    # Dynamic guidance and the dtype are part of the cache key; where unset, keys of older renders still hold.
    key = scene_cache_key(project, project.story.scenes[1], "tiny", "sr3ai-fast", TINY_VIDEO)
    with project.edit(save=False):
        edits.set_render_settings(project.story, "s2", use_dynamic_cfg=False)
    assert scene_cache_key(project, project.story.scenes[1], "tiny", "sr3ai-fast", TINY_VIDEO) != key


def test_the_dtype_setting_loads_the_model_in_it(tmp_path):
    project = Project.create(tmp_path / "story", three_scene_story())
    assert StoryRenderer(project, "tiny").pipeline.transformer.dtype == torch.float32  # tiny's own
    with project.edit():
        edits.set_render_settings(project.story, dtype="bf16")
    pipeline = StoryRenderer(project, "tiny").pipeline
    assert {pipeline.transformer.dtype, pipeline.vae.dtype, pipeline.text_encoder.dtype} == {torch.bfloat16}


def test_a_scene_renders_through_the_pipeline_with_seed_negative_prompt_and_checks(components):
    pipeline = DreamRunnerPipeline.from_components(components)
    scene = three_scene_story().scenes[0]

    def run(**settings):
        return pipeline(scene, **{"num_inference_steps": 1, "guidance_scale": 6.0, "seed": 1, **settings}).frames

    frames = run()
    assert frames.shape == (9, 64, 96, 3)  # the transformer's own geometry, as stock diffusers defaults to
    plan = build_region_plan(scene, TINY_VIDEO.token_grid, 9)
    assert np.array_equal(frames, pipeline(SceneInput(scene_prompt(scene, plan.prompts), plan), seed=1,
                                           num_inference_steps=1, guidance_scale=6.0).frames)
    assert np.array_equal(frames, run())
    assert not np.array_equal(frames, run(seed=2))
    assert not np.array_equal(frames, run(negative_prompt="blurry"))
    # Without guidance the negative prompt is not used.
    assert np.array_equal(run(guidance_scale=1.0), run(guidance_scale=1.0, negative_prompt="blurry"))

    with pytest.raises(DreamRunnerError, match="use_dynamic_cfg works with the DPM scheduler only"):
        pipeline(scene, scheduler="ddim", use_dynamic_cfg=True, num_inference_steps=1)
    with pytest.raises(DreamRunnerError, match=r"scene 's1': .*num_frames = 50"):
        pipeline(scene, num_frames=50, num_inference_steps=1)
    with pytest.raises(DreamRunnerError, match="token grid"):
        pipeline(scene, grid=(3, 2, 2), num_inference_steps=1)
    bound = scene.model_copy(update={"prior_bindings": [PriorBinding(prior_id="p")]})
    with pytest.raises(DreamRunnerError, match="binds priors.*scene_input"):
        pipeline(bound, num_inference_steps=1)


def test_a_plain_prompt_renders_as_stock_diffusers_does(tmp_path, components):
    """The issue's example: `DreamRunnerPipeline.from_pretrained(folder)("a prompt")`, on a saved tiny model."""
    CogVideoXPipeline(**components.pipeline_kwargs()).save_pretrained(tmp_path / "model")
    ours = DreamRunnerPipeline.from_pretrained(tmp_path / "model")
    stock = CogVideoXPipeline.from_pretrained(tmp_path / "model")
    for settings in ({}, {"negative_prompt": "blurry", "guidance_scale": 7.0}):
        frames = ours("a red fox running", num_inference_steps=2, seed=3, **settings).frames
        expected = stock("a red fox running", num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(3),
                         output_type="np", max_sequence_length=16, **{"guidance_scale": 6.0, **settings}).frames[0]
        assert np.array_equal(frames, (np.nan_to_num(expected).clip(0, 1) * 255).round().astype(np.uint8))


def test_one_off_render_options_leave_the_project_as_it_was(tmp_path):
    project = Project.create(tmp_path / "story", three_scene_story(steps=2))
    before = Project.load(project.folder).story
    assert main(["render", str(project.folder), "--scene", "1", "--steps", "1", "--seed", "5", "7", "--guidance", "3",
                 "--negative-prompt", "ugly", "--scheduler", "ddim", "--dtype", "fp32", "--frames", "9"]) == 0
    story = Project.load(project.folder).story
    assert story.settings == before.settings and [s.render for s in story.scenes] == [None] * 3
    assert [(r.seed, r.steps, r.guidance_scale) for r in story.scenes[0].renders] == [(5, 1, 3.0), (7, 1, 3.0)]

    # Asked to: with --scene the scene's own settings, else the story default.
    assert main(["render", str(project.folder), "--scene", "2", "--steps", "1", "--negative-prompt", "ugly",
                 "--save-settings"]) == 0
    story = Project.load(project.folder).story
    assert story.scenes[1].render == RenderOverrides(steps=1, negative_prompt="ugly")
    assert story.settings == before.settings
    assert main(["render", str(project.folder), "--scene", "3", "--dynamic-cfg", "--save-settings"]) == 0
    assert Project.load(project.folder).story.scenes[2].render == RenderOverrides(use_dynamic_cfg=True)


@pytest.mark.parametrize("options", [
    ["--dynamic-cfg", "--scheduler", "ddim"],
    ["--backend", "cogvideox-2b", "--size", "1024x576"],
    ["--size", "big"],
    ["--frames", "50"],
    ["--seed", "1", "2", "--variants", "3"],
    ["--guidance", "500"],
    ["--seed", "-1"],
])
def test_render_options_that_cannot_be_are_usage_errors(tmp_path, options, capsys):
    project = Project.create(tmp_path / "story", three_scene_story())
    text = (project.folder / "project.json").read_bytes()
    assert main(["render", str(project.folder), "--save-settings", *options]) == 2
    assert (project.folder / "project.json").read_bytes() == text
    assert "Traceback" not in capsys.readouterr().err


def test_re_planning_a_scene_keeps_its_own_render_settings_and_plan_story_says_it_drops_them():
    from dreamrunner.planning import OfflinePlanner, replan_scene

    story = three_scene_story()
    edits.set_render_settings(story, "s2", steps=9, negative_prompt="blurry")
    replanned = replan_scene(story, "s2", OfflinePlanner(seed=1), {"*"})
    assert replanned.scene("s2").render == RenderOverrides(steps=9, negative_prompt="blurry")
    assert "the own render settings of 1 scene(s) (the story default stays)" in edits.plan_replaces(story)
