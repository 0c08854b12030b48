"""Story rendering on the tiny backend: end to end with export, per-scene cache, variants, cancel, priors."""

import json
import shutil

import av
import numpy as np
import pytest
from render_helpers import three_scene_story, write_subject_lora

from dreamrunner.attention import bound_prompts
from dreamrunner.backends.tiny import build_tiny
from dreamrunner import edits
from dreamrunner.errors import DreamRunnerError
from dreamrunner.export import export_story
from dreamrunner.jobs import CancelToken, Cancelled
from dreamrunner.project import Project
from dreamrunner.regions import build_region_plan
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, LoraBinding, SceneInput, StockRegionControl
from dreamrunner.rendering.story_render import StoryRenderer, commit_to
from dreamrunner.video_io import read_video
from dreamrunner.story import Prior, PriorBinding, RenderSettings


@pytest.fixture(scope="module")
def components():
    return build_tiny("2b")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, components):
    """The 3-scene story rendered once; tests that change it work on a copy."""
    project = Project.create(tmp_path_factory.mktemp("rendered") / "story", three_scene_story())
    report = StoryRenderer(project, "tiny", components=components).render(commit_to(project))
    return project, report


def chosen_path(project: Project, index: int) -> str:
    scene = project.story.scenes[index]
    return scene.renders[scene.chosen_render].path


def copy_of(rendered, tmp_path) -> Project:
    shutil.copytree(rendered[0].folder, tmp_path / "story")
    return Project.load(tmp_path / "story")


class CountingRenderer(StoryRenderer):
    """Counts the scenes the model actually renders (cache misses)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        pipeline = self.pipeline
        original = pipeline.__call__

        def counted(scene, **kwargs):
            self.calls.append(kwargs["seed"])
            return original(scene, **kwargs)

        self._pipeline = _Wrapped(pipeline, counted)


class _Wrapped:
    def __init__(self, pipeline, call):
        self._pipeline, self._call = pipeline, call

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pipeline, name)


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    def seconds(stamp: str) -> float:
        hms, millis = stamp.split(",")
        h, m, s = map(int, hms.split(":"))
        return h * 3600 + m * 60 + s + int(millis) / 1000

    cues = []
    for block in text.strip().split("\n\n"):
        _, times, words = block.split("\n", 2)
        start, end = times.split(" --> ")
        cues.append((seconds(start), seconds(end), words))
    return cues


def test_three_scene_story_renders_and_exports(tmp_path, rendered):
    project, report = rendered
    assert [scene for scene, _ in report.rendered] == ["s1", "s2", "s3"] and not report.cached

    saved = Project.load(project.folder).story
    for scene in saved.scenes:
        assert scene.chosen_render == 0 and len(scene.renders) == 1
        render = scene.renders[0]
        assert render.is_noise and render.backend == "tiny-2b" and render.seed == 42
        clip = read_video(project.resolve(render.path))
        assert clip.shape == (9, 64, 96, 3)

    result = export_story(Project.load(project.folder), tmp_path / "out" / "story.mp4")
    video = saved.settings.video
    with av.open(str(result.video)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == 3 * video.num_frames == 27
        assert (stream.width, stream.height) == (video.width, video.height)
        assert stream.average_rate == video.fps
        assert container.duration / av.time_base == pytest.approx(27 / 8)
        assert float(stream.duration * stream.time_base) == pytest.approx(27 / 8)

    cues = srt_cues(result.subtitles.read_text())
    scene_seconds = video.num_frames / video.fps
    assert [(start, end) for start, end, _ in cues] == [
        (0.0, scene_seconds), (scene_seconds, 2 * scene_seconds), (2 * scene_seconds, 3 * scene_seconds)]
    assert [words for _, _, words in cues] == [scene.narration for scene in saved.scenes]

    manifest = json.loads(result.manifest.read_text())
    assert manifest["contains_noise"] is True and "NOISE" in manifest["noise_label"]
    assert [s["source"] for s in manifest["scenes"]] == ["render"] * 3
    assert all(s["is_noise"] for s in manifest["scenes"])
    assert manifest["video"]["num_frames"] == 27


def test_an_edit_rerenders_only_the_scene_it_touched(tmp_path, rendered, components):
    project = copy_of(rendered, tmp_path)
    renderer = CountingRenderer(project, "tiny", components=components)
    assert renderer.render(commit_to(project)).cached == [("s1", 42), ("s2", 42), ("s3", 42)] and renderer.calls == []
    first_paths = [scene.renders[0].path for scene in project.story.scenes]

    project.story.scenes[1].narration = "She meets a very old owl."
    report = renderer.render(commit_to(project))
    assert report.rendered == [("s2", 42)] and report.cached == [("s1", 42), ("s3", 42)]

    box = project.story.scenes[2].keyframes[3].entities[0]
    box.box = (0.1, 0.3, 0.5, 0.9)
    report = renderer.render(commit_to(project))
    assert report.rendered == [("s3", 42)] and len(renderer.calls) == 2

    # Undoing the narration edit finds the first clip of scene 2 in the cache again.
    project.story.scenes[1].narration = "She meets an old owl."
    report = renderer.render(commit_to(project), [1])
    assert report.cached == [("s2", 42)] and len(renderer.calls) == 2
    assert project.story.scenes[1].renders[0].path == first_paths[1]
    # Only the scene asked for was looked at.
    assert [o.scene_id for o in report.outcomes] == ["s2"]


def test_variants_are_seeds_and_the_chosen_one_is_exported(tmp_path, rendered, components):
    project = copy_of(rendered, tmp_path)
    for scene in project.story.scenes[1:]:  # scenes without a render export their animatic
        scene.chosen_render = None
        scene.renders = []
    renderer = StoryRenderer(project, "tiny", components=components)
    assert renderer.render(commit_to(project), [0], variants=2).rendered == [("s1", 43)]
    scene = project.story.scenes[0]
    assert [r.seed for r in scene.renders] == [42, 43] and scene.chosen_render == 0
    clips = [read_video(project.resolve(r.path)) for r in scene.renders]
    assert not np.array_equal(clips[0], clips[1])

    with project.edit():
        edits.choose_render(project.story, "s1", 43)
    with pytest.raises(DreamRunnerError, match="no render with seed 7"):
        edits.choose_render(project.story, "s1", 7)
    # Re-rendering keeps the user's choice; adding a variant renders only the new seed.
    report = renderer.render(commit_to(project), [0], variants=3)
    assert report.rendered == [("s1", 44)] and Project.load(project.folder).story.scenes[0].chosen_render == 1

    # Rendering with fewer variants keeps the others and the choice.
    assert renderer.render(commit_to(project), [0], variants=1).cached == [("s1", 42)]
    assert [r.seed for r in scene.renders] == [42, 43, 44] and scene.chosen_render == 1

    result = export_story(Project.load(project.folder), tmp_path / "story.mp4")
    manifest = json.loads(result.manifest.read_text())
    assert [s["source"] for s in manifest["scenes"]] == ["render", "animatic", "animatic"]
    assert manifest["scenes"][0]["seed"] == 43


def test_cancel_stops_within_one_step_and_keeps_earlier_scenes(tmp_path, components):
    story = three_scene_story(steps=4)
    project = Project.create(tmp_path / "story", story)
    cancel = CancelToken()
    forward_calls = []
    handle = components.transformer.register_forward_hook(lambda *_: forward_calls.append(cancel.cancelled))

    def progress(update):
        if "(s2)" in update.message and update.step == 1:
            cancel.cancel()  # as a UI's cancel button would, between two steps of scene 2

    try:
        with pytest.raises(Cancelled):
            StoryRenderer(project, "tiny", components=components).render(commit_to(project), progress=progress, cancel=cancel)
    finally:
        handle.remove()
    # Scene 1 took 4 steps x 1 (CFG batched) calls, scene 2 one step; none ran after the cancel.
    assert forward_calls.count(False) == 5 and forward_calls.count(True) == 0

    saved = Project.load(tmp_path / "story").story
    assert len(saved.scenes[0].renders) == 1 and project.resolve(saved.scenes[0].renders[0].path).is_file()
    assert saved.scenes[1].renders == [] and saved.scenes[2].renders == []
    assert not (project.folder / "media" / "renders" / "s2").exists() or not any(
        (project.folder / "media" / "renders" / "s2").iterdir())


def test_progress_has_live_previews_labelled_as_noise(components):
    story = three_scene_story()
    video = story.settings.video
    pipeline = DreamRunnerPipeline.from_components(components)
    plan = build_region_plan(story.scenes[0], video.token_grid)
    updates = []
    pipeline(SceneInput("a cat", plan), num_inference_steps=4, num_frames=9, height=64, width=96,
             progress=updates.append, preview_every=2)
    assert [u.step for u in updates] == [1, 2, 3, 4]
    previews = [u.preview for u in updates]
    assert previews[0] is None and previews[2] is None
    for image in (previews[1], previews[3]):
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
        assert (image[:10, :, 0] > 150).any()  # the label's red text in its darkened strip
    assert not np.array_equal(previews[1], previews[3])

    with pytest.raises(DreamRunnerError, match="token grid"):
        pipeline(SceneInput("a cat", plan), num_inference_steps=1, num_frames=17, height=64, width=96)


def test_a_bound_prior_and_its_file_are_part_of_the_cache_key(tmp_path, rendered):
    project = copy_of(rendered, tmp_path)
    lora = project.media / "priors" / "mia.safetensors"
    lora.parent.mkdir(parents=True)
    write_subject_lora(lora, seed=1)
    project.story.priors = [Prior(id="mia-subject", kind="subject", target="mia", path="media/priors/mia.safetensors")]
    renderer = CountingRenderer(project, "tiny", components=build_tiny("2b"))
    assert renderer.render(commit_to(project), [0]).cached == [("s1", 42)]
    plain = read_video(project.resolve(chosen_path(project, 0)))

    project.story.scenes[0].prior_bindings = [PriorBinding(prior_id="mia-subject", scale=1.0)]
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]
    with_prior = read_video(project.resolve(chosen_path(project, 0)))
    assert not np.array_equal(plain, with_prior)  # the gated LoRA changed the cat's region

    assert renderer.render(commit_to(project), [0]).cached == [("s1", 42)]
    write_subject_lora(lora, seed=2)  # the prior was re-trained: same id, new weights
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]
    project.story.scenes[0].prior_bindings = [PriorBinding(prior_id="mia-subject", scale=0.5)]
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]
    assert len(renderer.calls) == 3


def test_stock_path_applies_bound_loras_everywhere_and_removes_them(tmp_path):
    story = three_scene_story()
    video = story.settings.video
    lora = tmp_path / "mia.safetensors"
    write_subject_lora(lora, seed=3)
    pipeline = DreamRunnerPipeline.from_components(build_tiny("2b"), StockRegionControl())
    plan = build_region_plan(story.scenes[0], video.token_grid)
    binding = LoraBinding("mia", lora, "subject", 1.0, bound_prompts(plan, "subject", "mia"))

    def render(loras):
        return pipeline(SceneInput("a cat", plan, loras), num_inference_steps=2, num_frames=9, height=64,
                        width=96).frames

    plain = render(())
    assert not np.array_equal(render((binding,)), plain)
    assert np.array_equal(render(()), plain)  # the adapter was removed after the call


def test_stories_render_with_the_papers_sampler_by_default(tmp_path, rendered, components):
    """The released story run, from the issue: CogVideoX's DPM scheduler (diffusers' CogVideoXDPMScheduler, made
    from the model's own scheduler config), guidance 9.0, 50 steps. It is the default; DDIM at 6.0 stays a preset."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    paper = RenderSettings()
    assert (paper.scheduler, paper.guidance_scale, paper.steps) == ("dpm", 9.0, 50)
    stock = paper.with_preset("cogvideox")
    assert (stock.scheduler, stock.guidance_scale, stock.steps) == ("ddim", 6.0, 50)
    # Settings saved before the preset: the untouched defaults of then move to the paper's; hand-set values keep DDIM.
    saved = {"backend": "tiny", "steps": 50, "guidance_scale": 6.0, "negative_prompt": "", "seed": 42, "variants": 1}
    assert RenderSettings.model_validate(saved) == paper
    kept = RenderSettings.model_validate({**saved, "steps": 30, "guidance_scale": 7.0})
    assert (kept.scheduler, kept.guidance_scale, kept.steps) == ("ddim", 7.0, 30)
    assert RenderSettings(steps=50, guidance_scale=6.0).scheduler == "dpm"  # set in code now: taken as given

    project = copy_of(rendered, tmp_path)
    renderer = CountingRenderer(project, "tiny", components=components)
    assert renderer.render(commit_to(project), [0]).cached == [("s1", 42)]  # rendered with the default sampler already
    released = CogVideoXDPMScheduler.from_config(components.scheduler.config)
    renderer.render(commit_to(project), [0], force=True)
    assert type(renderer.pipeline.scheduler) is CogVideoXDPMScheduler
    assert dict(renderer.pipeline.scheduler.config) == dict(released.config)
    dpm_clip = read_video(project.resolve(chosen_path(project, 0)))

    project.story.settings.render = project.story.settings.render.with_preset("cogvideox").model_copy(
        update={"steps": project.story.settings.render.steps})
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]  # the scheduler is part of the cache key
    assert type(renderer.pipeline.scheduler) is CogVideoXDDIMScheduler
    assert not np.array_equal(read_video(project.resolve(chosen_path(project, 0))), dpm_clip)


def test_the_same_seed_renders_the_same_clip_every_time_and_in_every_process(tmp_path, rendered, components):
    """Reported: the same scene and seed rendered three times in one process (tiny, DPM, the paper preset) gave
    different frames (max pixel difference 0/19/12). Repeated renders, SR3AI and stock, with and without a bound
    gated prior, DPM and DDIM, and a fresh `dreamrunner render --force` process all give the same clip file."""
    import subprocess
    import sys

    project = copy_of(rendered, tmp_path)
    lora = project.media / "priors" / "mia.safetensors"
    lora.parent.mkdir(parents=True)
    write_subject_lora(lora, seed=1)
    project.story.priors = [Prior(id="mia-subject", kind="subject", target="mia", path="media/priors/mia.safetensors")]
    project.save()

    def clips(renderer, times=3):
        found = []
        for _ in range(times):
            renderer.render(commit_to(project), [0], force=True, progress=lambda step: None)
            found.append(project.resolve(chosen_path(project, 0)).read_bytes())
        return found

    for control in (None, StockRegionControl()):
        renderer = StoryRenderer(project, "tiny", components=components, region_control=control)
        for scheduler in ("dpm", "ddim"):
            project.story.settings.render.scheduler = scheduler
            for bindings in ([], [PriorBinding(prior_id="mia-subject", scale=1.0)]):
                project.story.scenes[0].prior_bindings = bindings
                first, *again = clips(renderer)
                assert again == [first, first], (control, scheduler, bindings)

    project.story.settings.render.scheduler = "dpm"
    project.story.scenes[0].prior_bindings = [PriorBinding(prior_id="mia-subject", scale=1.0)]
    project.save()
    [in_process] = clips(StoryRenderer(project, "tiny", components=components), times=1)
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "render", str(project.folder), "--scene", "s1",
                             "--force"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert Project.load(project.folder).resolve(chosen_path(Project.load(project.folder), 0)).read_bytes() == in_process


def test_registering_a_prior_again_keeps_its_place_and_the_cache_key(tmp_path, rendered):
    """Reported: re-registering an unchanged prior (a `dreamrunner story` rerun, retraining identical weights)
    moved its binding to the end of the scene's list, which changed the cache key and re-rendered the scene."""
    project = copy_of(rendered, tmp_path)
    for name, seed in (("mia-a", 1), ("mia-b", 2)):
        write_subject_lora(project.media / "priors" / f"{name}.safetensors", seed=seed)
    priors = [Prior(id=name, kind="subject", target="mia", path=f"media/priors/{name}.safetensors")
              for name in ("mia-a", "mia-b")]
    for prior in priors:
        edits.register_prior(project.story, prior)
    scene = project.story.scenes[0]
    assert [b.prior_id for b in scene.prior_bindings] == ["mia-a", "mia-b"]
    renderer = StoryRenderer(project, "tiny")
    key = renderer.scene_key(scene)

    edits.register_prior(project.story, priors[0].model_copy())  # the same prior again
    assert [b.prior_id for b in scene.prior_bindings] == ["mia-a", "mia-b"]
    assert [p.id for p in project.story.priors] == ["mia-a", "mia-b"]
    assert renderer.scene_key(scene) == key
    scene.prior_bindings = scene.prior_bindings[::-1]  # the order bindings were made in means nothing
    assert renderer.scene_key(scene) == key
    edits.bind_prior(project.story, "mia-a", [scene.id], scale=0.5)  # a new scale changes the key, in place
    assert [(b.prior_id, b.scale) for b in scene.prior_bindings] == [("mia-b", 1.0), ("mia-a", 0.5)]
    assert renderer.scene_key(scene) != key
