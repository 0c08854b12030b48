"""CogVideoX 1.5 (two latent frames per token frame) through the region schedule, SR3AI, gated priors and story
rendering, on the tiny-1.5 random-weight backend (float32, CPU)."""

import json

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline
from render_helpers import three_scene_story, write_subject_lora

from dreamrunner.attention import GatedLoRA, LoRAWeights, RegionLayout, RegionLayoutError, SR3AIController
from dreamrunner.backends import load_backend, temporal_patch
from dreamrunner.backends.cogvideox import CHECKPOINTS
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.cli import main
from dreamrunner.errors import DreamRunnerError
from dreamrunner.project import Project
from dreamrunner.regions import RegionPlan, build_region_plan, frame_keyframes, token_frame_latents
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, SceneInput
from dreamrunner.rendering.story_render import StoryRenderer, commit_to
from dreamrunner.edits import backend_geometry
from dreamrunner.story import Prior, PriorBinding, RenderSettings, StorySettings, VideoSettings
from dreamrunner.validation import StoryValidationError, validate_story
from dreamrunner.video_io import read_video

TINY_15 = VideoSettings(num_frames=17, fps=16, height=64, width=96, patch_size_t=2)
GEOMETRY_15 = backend_geometry("cogvideox1.5-5b")  # 81 frames at 16 fps, 768x1360, patch_size_t 2


@pytest.fixture(scope="module")
def components():
    return build_tiny("1.5")


def story_15(steps: int = 2):
    story = three_scene_story()
    story.settings = StorySettings(video=TINY_15, render=RenderSettings(backend="tiny-1.5", steps=steps,
                                                                        guidance_scale=6.0))
    return story


def test_token_grid_pads_latent_frames_in_front_as_diffusers_does():
    video = VideoSettings(**GEOMETRY_15)
    assert (video.latent_frames, video.token_grid) == (21, (11, 48, 85))
    assert VideoSettings(**{**GEOMETRY_15, "num_frames": 161}).token_grid == (21, 48, 85)  # 41 latent frames
    assert TINY_15.token_grid == (3, 4, 6)
    # diffusers' CogVideoXPipeline: additional_frames = p - latent % p noise frames, dropped from the front
    # (latents[:, additional_frames:]) before decoding, so the first token frame holds one real latent frame.
    assert token_frame_latents(21, 2) == [range(0, 1)] + [range(2 * t - 1, 2 * t + 1) for t in range(1, 11)]
    assert token_frame_latents(6, 2) == [range(0, 2), range(2, 4), range(4, 6)]  # no padding
    assert token_frame_latents(13, 1) == [range(t, t + 1) for t in range(13)]


def test_a_token_frame_takes_the_union_of_its_latent_frames_regions():
    scene = three_scene_story().scenes[0]  # the cat moves every keyframe, the owl stays
    video = VideoSettings(**GEOMETRY_15)
    plan = build_region_plan(scene, video.token_grid, video.num_frames, patch_size_t=2)
    latent = build_region_plan(scene, (21, 48, 85), video.num_frames)  # the same schedule per latent frame
    assert plan.prompts == latent.prompts and plan.masks.shape == (3, 11, 48, 85)
    for t, frames in enumerate(token_frame_latents(21, 2)):
        entities = latent.masks[1:, list(frames)].any(axis=1)
        np.testing.assert_array_equal(plan.masks[1:, t], entities)
        np.testing.assert_array_equal(plan.masks[0, t], ~entities.any(axis=0))
    # Keyframes map to latent frames by seconds as before (6 keyframes over 5 s): where a token frame's two
    # latent frames show different keyframes, the moving cat covers both keyframes' boxes.
    owners = frame_keyframes(6, 21, 81)
    changing = [t for t, frames in enumerate(token_frame_latents(21, 2)) if len(set(owners[list(frames)])) > 1]
    assert changing
    for t in changing:
        first, second = token_frame_latents(21, 2)[t]
        assert plan.masks[1, t].sum() > max(latent.masks[1, first].sum(), latent.masks[1, second].sum())
    with pytest.raises(ValueError, match="needs the video's frame count"):
        build_region_plan(scene, video.token_grid, patch_size_t=2)
    with pytest.raises(ValueError, match="make 11 token frames"):
        build_region_plan(scene, (21, 48, 85), 81, patch_size_t=2)


def test_settings_accept_the_15_geometry_with_a_15_backend_only(tmp_path, capsys):
    assert temporal_patch("cogvideox1.5-5b") == temporal_patch("tiny-1.5") == 2 and temporal_patch("cogvideox-5b") == 1
    validate_story(story_15().model_dump(mode="json"))
    data = story_15().model_dump(mode="json")
    data["settings"]["render"]["backend"] = "cogvideox-5b"
    with pytest.raises(StoryValidationError, match=r"render.backend 'cogvideox-5b' takes video.patch_size_t = 1, one "
                                                   r"latent frame per token frame .* but the video settings have "
                                                   r"patch_size_t = 2: `dreamrunner set PROJECT "
                                                   r"render.backend=cogvideox-5b` .* switches the video settings"):
        validate_story(data)
    data = three_scene_story().model_dump(mode="json")
    data["settings"]["render"]["backend"] = "cogvideox1.5-5b"
    with pytest.raises(StoryValidationError, match="'cogvideox1.5-5b' takes video.patch_size_t = 2, two latent"):
        validate_story(data)
    # Frame counts are the model's (video_presets.MODEL_VIDEO), held whenever the story is checked; the video
    # settings alone hold only the VAE's 4N+1 and the most any model makes.
    data = story_15().model_dump(mode="json")
    data["settings"]["video"]["num_frames"] = 89
    with pytest.raises(StoryValidationError, match=r"video.num_frames = 89: tiny-1.5 makes 16N\+1 up to "
                                                   r"161 frames \(e.g. 81 or 97\)"):
        validate_story(data)
    assert VideoSettings(**{**GEOMETRY_15, "num_frames": 89}).num_frames == 89  # 4N+1: Wan makes such counts
    with pytest.raises(ValueError, match=r"num_frames = 90 is not 4N\+1"):
        VideoSettings(**{**GEOMETRY_15, "num_frames": 90})
    with pytest.raises(ValueError, match="more than any model makes: at most 161"):
        VideoSettings(**{**GEOMETRY_15, "num_frames": 165})
    with pytest.raises(ValueError, match="multiples of 16"):
        VideoSettings(**{**GEOMETRY_15, "height": 760})

    # The CLI switches a project to 1.5 with the backend alone: the video settings follow, and it says so.
    Project.create(tmp_path / "story", three_scene_story())
    assert main(["set", str(tmp_path / "story"), "render.backend=tiny-1.5"]) == 0
    settings = Project.load(tmp_path / "story").story.settings
    assert settings.render.backend == "tiny-1.5" and settings.video == TINY_15
    # Or with its geometry given in the same change.
    Project.create(tmp_path / "other", three_scene_story())
    video = json.dumps(TINY_15.model_dump())
    assert main(["set", str(tmp_path / "other"), f"video={video}", "render.backend=tiny-1.5"]) == 0
    settings = Project.load(tmp_path / "other").story.settings
    assert settings.render.backend == "tiny-1.5" and settings.video == TINY_15
    # A later value that fails: nothing saved, and no word of a switch that did not happen.
    Project.create(tmp_path / "third", three_scene_story())
    before = (tmp_path / "third" / "project.json").read_bytes()
    capsys.readouterr()
    assert main(["set", str(tmp_path / "third"), "render.backend=tiny-1.5", "video.width=100"]) == 2  # usage
    assert "switched" not in capsys.readouterr().err
    assert (tmp_path / "third" / "project.json").read_bytes() == before


def test_the_15_checkpoint_config_builds_the_15_transformer(tmp_path):
    spec = CHECKPOINTS["cogvideox1.5-5b"]
    assert (spec.hub_id, spec.env_var) == ("THUDM/CogVideoX1.5-5B", "DREAMRUNNER_COGVIDEOX15_5B")
    assert spec.video == {"num_frames": 81, "fps": 16, "height": 768, "width": 1360}
    VideoSettings(**spec.video, patch_size_t=spec.transformer["patch_size_t"])  # its defaults are valid settings
    # Loading goes through the real diffusers loader, and a missing folder names the 1.5 download.
    CogVideoXPipeline(**build_tiny("1.5").pipeline_kwargs()).save_pretrained(tmp_path / "weights")
    loaded = load_backend("cogvideox1.5-5b", tmp_path / "weights", dtype=torch.float32)
    assert loaded.transformer.config.patch_size_t == 2 and loaded.video_defaults == spec.video
    with pytest.raises(DreamRunnerError, match="hf download THUDM/CogVideoX1.5-5B"):
        load_backend("cogvideox1.5-5b", tmp_path / "none")


@torch.no_grad()
def test_the_former_crash_is_a_named_error_and_the_token_grid_runs(components):
    """Issue 17: a plan on the latent-frame grid crashed the 1.5 transformer with `RuntimeError: INDICES element
    is out of DATA bounds` (the token reordering indexed 5 latent frames' tokens in 3 token frames)."""
    tr = components.transformer
    scene = three_scene_story().scenes[0]
    L = tr.config.max_text_seq_length
    latent_plan = build_region_plan(scene, (5, 4, 6), 17)  # what the grid was before: one frame per latent frame
    latents = torch.randn(2, 6, 4, 8, 12)  # 5 latent frames padded to 6, as the pipeline passes them
    pipe = CogVideoXPipeline(**components.pipeline_kwargs())
    call = dict(hidden_states=latents, encoder_hidden_states=torch.randn(2, 3 * L, 16), timestep=torch.tensor([500, 500]),
                image_rotary_emb=pipe._prepare_rotary_positional_embeddings(64, 96, 6, "cpu"))
    with SR3AIController(tr) as controller:
        controller.set_regions(latent_plan)
        with pytest.raises(RegionLayoutError, match="token grid"):
            tr(**call)
        controller.set_regions(build_region_plan(scene, TINY_15.token_grid, 17, patch_size_t=2))
        assert torch.isfinite(tr(**call).sample).all()
    pipeline = DreamRunnerPipeline.from_components(components)
    with pytest.raises(DreamRunnerError, match=r"the region plan is on a \(5, 4, 6\) token grid, but 17 frames"):
        pipeline(SceneInput("a cat", latent_plan), num_inference_steps=1, num_frames=17, height=64, width=96)


@torch.no_grad()
def test_one_full_frame_prompt_renders_what_stock_cogvideox_renders(components):
    pipeline = DreamRunnerPipeline.from_components(components)
    pipeline.is_noise = False  # compare the frames themselves, without the noise label
    plan = RegionPlan(prompts=("a red fox running in a green forest",), masks=np.ones((1, *TINY_15.token_grid), bool))
    ours = pipeline(SceneInput(plan.prompts[0], plan), seed=3, num_inference_steps=2, guidance_scale=6.0,
                    num_frames=17, height=64, width=96).frames
    stock = CogVideoXPipeline(**components.pipeline_kwargs())(
        plan.prompts[0], negative_prompt="", num_inference_steps=2, guidance_scale=6.0, num_frames=17, height=64,
        width=96, generator=torch.Generator().manual_seed(3), output_type="np",
        max_sequence_length=components.max_text_tokens).frames[0]
    assert ours.shape == (17, 64, 96, 3)
    stock = (np.nan_to_num(stock).clip(0, 1) * 255).round()
    assert np.abs(ours.astype(float) - stock).max() <= 1  # equal up to a rounding step of the 8-bit frames


@torch.no_grad()
def test_a_gated_prior_acts_inside_its_regions_only_on_the_15_token_grid(components):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    tr = components.transformer
    peft_model = build_tiny("1.5").transformer
    torch.manual_seed(4)
    peft_model.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                      target_modules=[f"transformer_blocks.{i}.ff.net.0.proj" for i in (1, 3)]))
    weights = LoRAWeights.from_state_dict(get_peft_model_state_dict(peft_model), "subject", {"r": 4, "lora_alpha": 4})
    plan = build_region_plan(three_scene_story().scenes[0], TINY_15.token_grid, 17, patch_size_t=2)
    L = tr.config.max_text_seq_length
    pipe = CogVideoXPipeline(**components.pipeline_kwargs())
    call = dict(hidden_states=torch.randn(2, 6, 4, 8, 12), encoder_hidden_states=torch.randn(2, 3 * L, 16),
                timestep=torch.tensor([500, 500]), image_rotary_emb=pipe._prepare_rotary_positional_embeddings(64, 96, 6, "cpu"))
    name = "transformer_blocks.3.ff.net.0.proj"
    seen = {}
    for implementation in ("fast", "dense"):
        with SR3AIController(tr, implementation) as controller:
            controller.set_regions(plan)
            controller.set_loras([GatedLoRA(weights, prompts=(1,))])  # the cat's prompt
            handle = tr.get_submodule(name).register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
            outputs = tr(**call).sample
            handle.remove()
            mask = controller.layout.token_mask((1,))  # in the token order the blocks see
        linear = tr.get_submodule(name)
        base = torch.nn.functional.linear(seen["x"], linear.weight, linear.bias)
        ungated = peft_model.get_submodule(name)(seen["x"])
        # the cat's text tokens and its union region on the 3 token frames
        assert mask[L:2 * L].all() and not mask[:L].any() and mask[3 * L:].sum() == plan.masks[1].sum()
        torch.testing.assert_close(seen["y"][:, ~mask], base[:, ~mask], rtol=0, atol=0)
        torch.testing.assert_close(seen["y"][:, mask], ungated[:, mask], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ungated[:, mask], base[:, mask], atol=1e-3)
        seen[implementation] = outputs
    torch.testing.assert_close(seen["fast"], seen["dense"], rtol=1e-5, atol=1e-5)


def test_a_15_story_renders_end_to_end_with_a_gated_prior(tmp_path, components):
    project = Project.create(tmp_path / "story", story_15())
    renderer = StoryRenderer(project, components=components)
    assert renderer.backend == "tiny-1.5" and renderer.geometry() == TINY_15
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]
    scene = project.story.scenes[0]
    plain = read_video(project.resolve(scene.renders[scene.chosen_render].path))
    assert plain.shape == (17, 64, 96, 3)

    lora = project.media / "priors" / "mia.safetensors"
    lora.parent.mkdir(parents=True)
    write_subject_lora(lora, seed=1)
    with project.edit():
        project.story.priors = [Prior(id="mia-subject", kind="subject", target="mia",
                                      path="media/priors/mia.safetensors")]
        project.story.scenes[0].prior_bindings = [PriorBinding(prior_id="mia-subject", scale=1.0)]
    assert renderer.render(commit_to(project), [0]).rendered == [("s1", 42)]
    scene = project.story.scenes[0]
    assert not np.array_equal(read_video(project.resolve(scene.renders[scene.chosen_render].path)), plain)

    # Another CogVideoX kind than the story's geometry is a named error, before any model is loaded.
    with pytest.raises(DreamRunnerError, match="the tiny backend needs patch_size_t 1 video settings"):
        StoryRenderer(project, "tiny").render(commit_to(project), [1])


def test_the_cli_renders_with_tiny_15(tmp_path, capsys):
    Project.create(tmp_path / "story", story_15(steps=1))
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--device", "cpu"]) == 0
    scene = Project.load(tmp_path / "story").story.scenes[1]
    assert len(scene.renders) == 1 and scene.renders[0].is_noise
    capsys.readouterr()
    # A one-off backend of another kind is checked with the story's settings: a usage error naming both and the fix.
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--backend", "cogvideox-5b"]) == 2
    assert ("--backend cogvideox-5b for this run only, but the story's video settings are not made by it "
            "(video.patch_size_t = 2: cogvideox-5b takes 1): add --save-settings to switch the story to cogvideox-5b "
            "with its own video settings") in capsys.readouterr().err



def test_training_a_prior_on_15_is_a_named_error(tmp_path, components):
    from dreamrunner.priors.service import PriorError, PriorRequest, train_prior
    from dreamrunner.story import PriorSettings

    with pytest.raises(PriorError, match="training priors on tiny-1.5 .* is not supported yet"):
        train_prior(components, PriorRequest("subject", "mia", (), PriorSettings()), tmp_path)


def test_the_story_command_renders_on_tiny_15_without_training_priors(tmp_path, capsys):
    """`dreamrunner story --backend tiny-1.5` goes on with a warning where priors would train (they do not train
    on 1.5 yet), instead of stopping at the first approved clip."""

    out = tmp_path / "s15"
    code = main(["--offline", "story", "--topic", "a fox and an owl cross the river", "--character", "Rua:a red fox",
                "--out", str(out), "--scenes", "5", "--backend", "tiny-1.5", "--train-steps", "1",
                "--render-steps", "1", "--clip-model", "none"])
    assert code == 0, capsys.readouterr().err
    assert "priors do not train on tiny-1.5" in capsys.readouterr().err
    story = Project.load(out).story
    assert all(scene.renders for scene in story.scenes) and not story.priors
