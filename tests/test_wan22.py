"""Wan 2.2 as backends (CPU, tiny random weights): A14B's two experts switched at a boundary (`tiny-wan2.2`) and
TI2V-5B's 48-channel 16x VAE with per-token timesteps (`tiny-wan2.2-5b`); loading, geometry, SR3AI and gated
priors on both experts, and renders end to end. Priors trained per A14B expert: tests/test_priors_wan22.py."""

import av
import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from render_helpers import three_scene_story

from dreamrunner import edits
from dreamrunner.attention import GatedLoRA, RegionLayout
from dreamrunner.attention.wan import WanExpertsSR3AIController, WanSR3AIController
from dreamrunner.backends import BACKENDS, NOISE_LABEL, backend_video_defaults, load_backend
from dreamrunner.backends.cogvideox import WeightsMissingError
from dreamrunner.backends.wan import TINY_TEXT_TOKENS, build_tiny_wan
from dreamrunner.cli import main
from dreamrunner.project import Project
from dreamrunner.regions import RegionPlan, build_region_plan
from dreamrunner.rendering.overlay import label_frames
from dreamrunner.rendering.pipeline import SceneInput
from dreamrunner.rendering.wan_pipeline import WanDreamRunnerPipeline
from dreamrunner.story import VideoSettings
from test_attention_model import overlapping_masks
from test_attention_wan import gated_prior

L = TINY_TEXT_TOKENS
TINY_22 = ("tiny-wan2.2", "tiny-wan2.2-5b")


@pytest.fixture(scope="module", params=TINY_22)
def components(request):
    return build_tiny_wan(request.param)


def test_wan22_backends_are_offered_with_their_geometry():
    assert {"tiny-wan2.2", "tiny-wan2.2-5b", "wan2.2-a14b", "wan2.2-ti2v-5b"} <= set(BACKENDS)
    assert backend_video_defaults("wan2.2-a14b") == {"num_frames": 81, "fps": 16, "height": 720, "width": 1280}
    assert backend_video_defaults("wan2.2-ti2v-5b") == {"num_frames": 121, "fps": 24, "height": 704, "width": 1280}
    story = three_scene_story()
    assert edits.set_backend(story, "wan2.2-ti2v-5b").startswith(
        "video settings switched to wan2.2-ti2v-5b's own: 121 frames at 24 fps, 1280x704")
    video = story.settings.video
    # TI2V's VAE: 16x in space (vae_spatial), 4x in time; patch 2: 32 pixels per token.
    assert (video.vae_spatial, video.latent_frames, video.token_grid) == (16, 31, (31, 22, 40))
    note = edits.set_backend(story, "wan2.2-a14b")
    assert "video.vae_spatial = 16: wan2.2-a14b takes 8" in note
    assert (story.settings.video.vae_spatial, story.settings.video.token_grid) == (8, (21, 45, 80))
    with pytest.raises(ValueError, match="render.backend 'tiny-wan2.2-5b' takes video.vae_spatial = 16"):
        story.settings.render.backend = "tiny-wan2.2-5b"
        type(story).model_validate(story.model_dump())


def test_missing_wan22_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMRUNNER_WAN22_A14B", str(tmp_path / "Wan2.2-T2V-A14B"))
    with pytest.raises(WeightsMissingError) as caught:
        load_backend("wan2.2-a14b")
    message = str(caught.value)
    assert "hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers" in message and "DREAMRUNNER_WAN22_A14B" in message
    assert "no such folder" in message and "'tiny-wan2.2' backend" in message
    with pytest.raises(WeightsMissingError, match="hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers"):
        load_backend("wan2.2-ti2v-5b", local_files_only=True, cache_dir=tmp_path)


@pytest.mark.parametrize("tiny, name", [("tiny-wan2.2", "wan2.2-a14b"), ("tiny-wan2.2-5b", "wan2.2-ti2v-5b")])
def test_a_wan22_diffusers_folder_loads_through_the_real_loader(tmp_path, tiny, name):
    """WanPipeline.save_pretrained's folder (model_index.json with boundary_ratio / expand_timesteps, A14B's
    transformer_2/) loads as the checkpoint does: both experts, the pipeline options, TI2V's 48-channel VAE."""
    built = build_tiny_wan(tiny)
    WanPipeline(**built.pipeline_kwargs()).save_pretrained(tmp_path)
    loaded = load_backend(name, tmp_path)
    assert loaded.family == "wan" and not loaded.is_noise and loaded.max_text_tokens == 512
    assert loaded.pipeline_options == built.pipeline_options
    assert len(loaded.transformers) == len(built.transformers) == (2 if tiny == "tiny-wan2.2" else 1)
    for mine, theirs in zip(loaded.transformers, built.transformers):
        weight = mine.get_submodule("blocks.1.attn2.to_k").weight
        assert weight.dtype == torch.bfloat16
        assert torch.equal(weight, theirs.get_submodule("blocks.1.attn2.to_k").weight.bfloat16())
    if tiny == "tiny-wan2.2":  # two experts of their own, not one shared
        assert not torch.equal(*(t.get_submodule("blocks.1.attn2.to_k").weight for t in loaded.transformers))
    assert (loaded.vae.config.z_dim, loaded.vae.config.scale_factor_spatial) == (
        (48, 16) if tiny == "tiny-wan2.2-5b" else (4, 8))


def test_keyframes_map_to_ti2v_latent_frames_by_seconds():
    """121 frames at 24 fps (5 s) -> 31 latent frames (the first alone, then 4 pixel frames each): latent frame j
    shows the keyframe owning the middle of its pixel frames, keyframe k owning (k/6, (k+1)/6] of the 5 s."""
    video = VideoSettings(num_frames=121, fps=24, height=704, width=1280, vae_spatial=16)
    assert video.token_grid == (31, 22, 40)
    scene = three_scene_story().scenes[0]
    plan = build_region_plan(scene, video.token_grid, video.num_frames)
    cat = plan.prompts.index("[v1] cat walking")
    for j in range(31):
        middle = 0.0 if j == 0 else (4 * j - 1.5) / 24  # seconds from the first frame
        keyframe = min(5, max(0, int(np.ceil(middle / (5 / 6) - 1e-9)) - 1))
        box = scene.keyframes[keyframe].entities[0].box
        assert np.flatnonzero(plan.masks[cat, j].any(0))[0] == round(box[0] * 40), (j, keyframe)


def count_calls(transformers):
    """Forward calls per transformer, by position, while the returned hooks stay registered."""
    calls = [0] * len(transformers)

    def counter(i):
        def hook(module, args, output):
            calls[i] += 1
        return hook

    return calls, [t.register_forward_hook(counter(i)) for i, t in enumerate(transformers)]


@torch.no_grad()
def test_one_full_frame_prompt_is_the_stock_wan_pipeline(components):
    """A scene of one full-frame prompt through SR3AI gives stock `WanPipeline`'s frames; on tiny-wan2.2 both
    experts run (4 steps with flow shift 3: timesteps 999 and 937 above the 875 boundary, 833 and 750 below)."""
    video = components.video_defaults
    geometry = dict(num_frames=video["num_frames"], height=video["height"], width=video["width"])
    prompt = "a black cat walking in a green forest"
    stock = WanPipeline(**components.pipeline_kwargs())
    stock.set_progress_bar_config(disable=True)
    calls, hooks = count_calls(components.transformers)
    try:
        expected = stock(prompt, negative_prompt="", num_inference_steps=4, guidance_scale=5.0, max_sequence_length=L,
                         generator=torch.Generator().manual_seed(7), output_type="np", **geometry).frames[0]
        stock_calls = list(calls)
        pipeline = WanDreamRunnerPipeline.from_components(components)
        grid = VideoSettings(**video, vae_spatial=pipeline.vae_scale_factor_spatial).token_grid
        plan = RegionPlan(prompts=(prompt,), masks=np.ones((1, *grid), dtype=bool))
        frames = pipeline(SceneInput(prompt, plan), seed=7, num_inference_steps=4, guidance_scale=5.0,
                          **geometry).frames
    finally:
        for hook in hooks:
            hook.remove()
    if components.name == "tiny-wan2.2":
        assert stock_calls == [4, 4] and calls == [8, 8]  # 2 steps x (cond, uncond) on each expert
    want = label_frames((np.nan_to_num(expected).clip(0, 1) * 255).round().astype(np.uint8), NOISE_LABEL)
    assert frames.shape == want.shape and np.abs(frames.astype(int) - want.astype(int)).max() <= 1


def token_inputs(components, prompts, seed, size):
    """Latents [1, C, F, h, w], P*L text, the token grid and a timestep: per token on TI2V (its pipeline's
    expand_timesteps), different on every token so that the order the blocks see them in matters."""
    tr = components.transformer
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, tr.config.in_channels, *size, generator=generator)
    text = torch.randn(1, prompts * L, tr.config.text_dim, generator=generator)
    grid = (size[0], size[1] // 2, size[2] // 2)
    if components.pipeline_options.get("expand_timesteps"):
        timestep = torch.randint(0, 1000, (1, int(np.prod(grid))), generator=generator)
    else:
        timestep = torch.tensor([700])
    return dict(hidden_states=latents, encoder_hidden_states=text, timestep=timestep), grid


@torch.no_grad()
def test_fast_equals_the_dense_reference_on_every_expert(components):
    """Through each transformer (A14B: both experts), fast region cross-attention with the tokens reordered (and
    TI2V's per-token timesteps following them) equals the dense-mask reference in natural order."""
    prompts = 3
    kwargs, grid = token_inputs(components, prompts, seed=3, size=(3, 8, 12))
    layout = RegionLayout.from_masks(overlapping_masks(prompts, grid, seed=3), L)
    assert not layout.cover_classes().identity  # the blocks do see another order
    for transformer in components.transformers:
        outputs = {}
        for implementation, reorder in (("fast", True), ("dense", False)):
            with WanSR3AIController(transformer, L, implementation, reorder_tokens=reorder) as controller:
                controller.set_regions(layout)
                outputs[implementation] = transformer(**kwargs).sample
        torch.testing.assert_close(outputs["fast"], outputs["dense"], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_per_token_timesteps_follow_the_token_order():
    """TI2V: the time embedding is per token; without moving it with the tokens, reordering would pair tokens with
    other tokens' timesteps and change the result."""
    components = build_tiny_wan("tiny-wan2.2-5b")
    tr = components.transformer
    kwargs, grid = token_inputs(components, 3, seed=5, size=(3, 8, 12))
    layout = RegionLayout.from_masks(overlapping_masks(3, grid, seed=5), L)
    outputs = []
    for reorder in (True, False):
        with WanSR3AIController(tr, L, reorder_tokens=reorder) as controller:
            controller.set_regions(layout)
            outputs.append(tr(**kwargs).sample)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    with WanSR3AIController(tr, L) as controller:  # the hook is what keeps them paired
        controller.set_regions(layout)
        timestep_hooks = [h for h in controller._order_hooks if h.id in tr.condition_embedder._forward_hooks]
        assert len(timestep_hooks) == 1
        timestep_hooks[0].remove()
        assert (tr(**kwargs).sample - outputs[1]).abs().max() > 1e-3


@torch.no_grad()
def test_a_gated_lora_is_zero_outside_its_region_on_every_expert(components):
    """The experts' controller sets the same gated LoRA on every expert: each expert's output moves inside the
    LoRA's region only."""
    prompts = 3
    kwargs, grid = token_inputs(components, prompts, seed=7, size=(3, 8, 12))
    masks = np.zeros((prompts, *grid), dtype=bool)
    masks[1, :, :2, :3] = True
    masks[2, 1:, 2:, 3:] = True
    masks[0] = ~masks[1:].any(0)
    layout = RegionLayout.from_masks(masks, L)
    transformers = components.transformers
    video = ["attn1.to_q", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    lora = GatedLoRA(gated_prior(transformers[0], [3], video + ["attn2.to_k", "attn2.to_v"], seed=1),
                     prompts=(1,), scale=1.0)
    inside = torch.from_numpy(masks[1]).repeat_interleave(2, 1).repeat_interleave(2, 2)[None]
    stock = [t(**kwargs).sample for t in transformers]
    with WanExpertsSR3AIController(transformers, L) as controller:
        controller.set_regions(layout)
        plain = [t(**kwargs).sample for t in transformers]
        controller.set_loras([lora])
        gated = [t(**kwargs).sample for t in transformers]
        names = ("transformer", "transformer_2")[:len(transformers)]
        assert set(controller.lora_modules()) == {f"{n}.blocks.3.{m}" for n in names
                                                   for m in video + ["attn2.to_k", "attn2.to_v"]}
    for before, after in zip(plain, gated):
        changed = (after - before).abs().amax(dim=1)
        assert changed[inside].min() > 0 and changed[~inside].max() == 0
    for transformer, output in zip(transformers, stock):  # detached: the stock model
        torch.testing.assert_close(transformer(**kwargs).sample, output, rtol=0, atol=0)


def test_the_experts_take_loras_all_or_none():
    components = build_tiny_wan("tiny-wan2.2")
    first = GatedLoRA(gated_prior(components.transformer, [3], ["attn1.to_q"], seed=1), prompts=(0,))
    misfit = GatedLoRA(gated_prior(components.transformer, [1], ["attn1.to_q"], seed=2), prompts=(0,))
    misfit.weights.modules["blocks.1.attn1.to_q"] = tuple(
        t if i == 2 else t[:, :8] if i == 0 else t for i, t in enumerate(misfit.weights.modules["blocks.1.attn1.to_q"]))
    with WanExpertsSR3AIController(components.transformers, L) as controller:
        controller.set_regions(RegionLayout.from_masks(np.ones((1, 3, 4, 6), dtype=bool), L))
        controller.set_loras([first])
        with pytest.raises(Exception, match="LoRA shapes do not fit"):
            controller.set_loras([misfit])
        assert set(controller.lora_modules()) == {"transformer.blocks.3.attn1.to_q", "transformer_2.blocks.3.attn1.to_q"}


@pytest.mark.parametrize("backend", TINY_22)
def test_cli_renders_a_scene_on_tiny_wan22(tmp_path, capsys, backend):
    Project.create(tmp_path / "story", three_scene_story())
    args = ["render", str(tmp_path / "story"), "--scene", "2", "--backend", backend]
    if backend == "tiny-wan2.2-5b":  # another VAE (16x): the story switches to its geometry
        assert main(args) == 2
        assert "video.vae_spatial = 8: tiny-wan2.2-5b takes 16" in capsys.readouterr().err
        args.append("--save-settings")
    assert main(args) == 0
    out = capsys.readouterr()
    assert "s2 seed 42: rendered media/renders/s2/" in out.out and "noise" in out.err
    project = Project.load(tmp_path / "story")
    render = project.story.scenes[1].renders[0]
    assert render.backend == backend and render.is_noise
    video = backend_video_defaults(backend)
    with av.open(str(project.resolve(render.path))) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert container.streams.video[0].average_rate == (8 if backend == "tiny-wan2.2" else video["fps"])
    assert frames[0].shape == (64, 96, 3)
    assert len(frames) == (9 if backend == "tiny-wan2.2" else video["num_frames"])


def write_wan_subject_lora(path, rank: int = 4) -> None:
    """A subject prior (odd blocks) in diffusers' Wan LoRA layout, on tiny-wan's blocks (the tiny Wan 2.2 models'
    blocks have their shapes), written with `WanPipeline.save_lora_weights`."""
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = build_tiny_wan().transformer
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                       target_modules=r".*blocks\.(1|3)\.(attn1\.to_(q|v)|ffn\.net\.2)"))
    WanPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=get_peft_model_state_dict(transformer),
                                  weight_name=path.name, safe_serialization=True)


def test_a_prior_renders_on_both_experts_in_both_region_controls(tmp_path):
    """A bound one-file prior on tiny-wan2.2: the SR3AI path gates it on both experts, the stock path loads it into
    both (diffusers' `load_into_transformer_2`) and unloads it after; either way the frames change. (A two-expert
    prior's files, one per expert: tests/test_priors_wan22.py.)"""
    from dreamrunner.rendering.pipeline import LoraBinding, StockRegionControl

    write_wan_subject_lora(tmp_path / "mia.safetensors")
    components = build_tiny_wan("tiny-wan2.2")
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    plan = build_region_plan(three_scene_story().scenes[0], video.token_grid, video.num_frames)
    binding = LoraBinding("subject-mia", tmp_path / "mia.safetensors", "subject", 3.0, (1,))
    for control in (None, StockRegionControl()):
        pipeline = WanDreamRunnerPipeline.from_components(components, control)
        frames = []
        for loras in ((), (binding,)):
            calls, hooks = count_calls(components.transformers)
            try:
                frames.append(pipeline(SceneInput("a cat", plan, loras), num_inference_steps=4, guidance_scale=1.0,
                                       video=video).frames)
            finally:
                for hook in hooks:
                    hook.remove()
            assert calls == [2, 2]
        assert np.abs(frames[1].astype(int) - frames[0].astype(int)).max() > 0
        assert all("lora" not in name for t in components.transformers for name, _ in t.named_modules())


@torch.no_grad()
def test_ti2v_per_token_timesteps_of_one_value_are_the_scalar_timestep():
    """What lets priors train on TI2V-5B with the trainers' one timestep per clip: in text-to-video its pipeline
    feeds every token the same timestep, which gives the scalar timestep's output."""
    components = build_tiny_wan("tiny-wan2.2-5b")
    kwargs, grid = token_inputs(components, 1, seed=2, size=(3, 8, 12))
    scalar = components.transformer(**{**kwargs, "timestep": torch.tensor([613])}).sample
    per_token = components.transformer(**{**kwargs, "timestep": torch.full((1, int(np.prod(grid))), 613)}).sample
    torch.testing.assert_close(per_token, scalar, rtol=1e-5, atol=1e-5)


def test_a_prior_trains_on_tiny_ti2v_and_renders_gated_and_stock(tmp_path):
    """A subject prior trained on tiny-wan2.2-5b (48-channel latents of its 16x VAE), registered as the CLI does:
    the SR3AI render gates it to the cat's region, the stock path loads it through diffusers' Wan loader; both
    record it and differ from the render without it. A motion size off its 32-pixel tokens is a named error."""
    from PIL import Image

    from dreamrunner.priors import PriorError, train_subject
    from dreamrunner.rendering.pipeline import StockRegionControl
    from dreamrunner.rendering.story_render import StoryRenderer, commit_to
    from dreamrunner.video_io import read_video

    project = Project.create(tmp_path / "story", three_scene_story())
    Image.new("RGB", (64, 64), (10, 10, 10)).save(project.media / "mia.png")
    with project.edit():
        edits.set_backend(project.story, "tiny-wan2.2-5b")
        project.story.characters[0].reference_images = ["media/mia.png"]
        project.story.settings.prior.max_steps = 2
        project.story.settings.prior.rank = 4
        project.story.settings.prior.gradient_checkpointing = "off"
    components = build_tiny_wan("tiny-wan2.2-5b")
    prior, outcome = train_subject(project, "mia", components)
    assert outcome.card["model"] == "tiny-wan2.2-5b" and outcome.card["frames"] == 13 and outcome.card["fps"] == 24
    before = {}
    for control in (None, StockRegionControl()):
        StoryRenderer(project, "tiny-wan2.2-5b", components=components, region_control=control).render(
            commit_to(project), [0])
        before[control is None] = read_video(project.resolve(Project.load(project.folder).story.scenes[0].renders[-1].path))
    project = Project.load(project.folder)
    with project.edit():
        assert edits.register_prior(project.story, prior, scale=3.0) == ["s1", "s2", "s3"]
    for control in (None, StockRegionControl()):
        StoryRenderer(project, "tiny-wan2.2-5b", components=components, region_control=control).render(
            commit_to(project), [0])
        project = Project.load(project.folder)
        render = project.story.scenes[0].renders[-1]
        assert [b.prior_id for b in render.priors] == ["subject-mia"]
        assert np.abs(read_video(project.resolve(render.path)).astype(int) - before[control is None].astype(int)).max() > 0
    with project.edit():
        project.story.settings.prior.motion_resolution = (48, 96)
    from dreamrunner.priors import PriorRequest, subject_request, train_prior

    clips = subject_request(project, "mia").clips
    request = PriorRequest("motion", "walking", clips, project.story.settings.prior)
    with pytest.raises(PriorError, match="48x96 .* not a multiple of tiny-wan2.2-5b's 32-pixel tokens"):
        train_prior(components, request, tmp_path / "priors")


def test_the_story_command_trains_two_expert_priors_on_tiny_wan22(tmp_path, capsys):
    """`dreamrunner story --backend tiny-wan2.2` trains the character's subject prior as a high-noise / low-noise
    pair, binds it and renders every scene with it."""
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 60, 20)).save(tmp_path / "rua.png")
    out = tmp_path / "s22"
    code = main(["--offline", "story", "--topic", "a fox and an owl cross the river", "--character",
                 f"Rua:a red fox={tmp_path / 'rua.png'}", "--out", str(out), "--scenes", "5", "--backend", "tiny-wan2.2",
                 "--train-steps", "1", "--render-steps", "1", "--clip-model", "none"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "priors do not train" not in captured.err
    assert "trained 1 steps on each of its 2 experts" in captured.err  # the steps that ran, not half of them
    project = Project.load(out)
    story = project.story
    (prior,) = [p for p in story.priors if p.kind == "subject"]
    assert prior.card["model"] == "tiny-wan2.2" and [e["expert"] for e in prior.card["experts"]] == ["high-noise",
                                                                                                      "low-noise"]
    assert project.resolve(prior.path).with_name(prior.card["low_noise_file"]).is_file()
    assert all(scene.renders for scene in story.scenes)
    assert any(b.prior_id == prior.id for scene in story.scenes for b in scene.renders[-1].priors)
    assert story.settings.render.backend == "tiny-wan2.2"


def test_group_offload_places_both_experts_and_keeps_the_frames():
    """The `group` memory preset offloads A14B's low-noise expert block by block too (onload on the CPU here);
    the SR3AI frames equal those without offloading."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    from dreamrunner.backends.memory import place_group_offload

    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    plan = build_region_plan(three_scene_story().scenes[0], video.token_grid, video.num_frames)
    frames = []
    for offload in (False, True):
        components = build_tiny_wan("tiny-wan2.2")
        pipeline = WanDreamRunnerPipeline.from_components(components)
        if offload:
            place_group_offload(pipeline, "cpu")
            assert all(_is_group_offload_enabled(t) for t in components.transformers)
        frames.append(pipeline(SceneInput("a cat", plan), num_inference_steps=4, guidance_scale=1.0, video=video).frames)
    np.testing.assert_array_equal(frames[1], frames[0])
