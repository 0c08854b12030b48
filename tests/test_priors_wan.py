"""Subject and motion priors trained on a tiny random Wan 2.1 (CPU): same trainers, Wan's flow-matching objective,
files that stock diffusers' Wan LoRA loader reads, and the region-gated loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dreamrunner.attention import GatedLoRA, LoRAWeights, RegionLayout
from dreamrunner.attention.wan import WanSR3AIController
from dreamrunner.backends.wan import TINY_TEXT_TOKENS, TINY_VIDEO, build_tiny_wan
from dreamrunner.priors import EncodingCache, Example, PriorRequest, SubjectTrainer, TrainingClip, train_prior
from dreamrunner.priors.objectives import flow_targets
from dreamrunner.story import PriorSettings
from test_priors_training import FAST, fixed_loss, lora_blocks, write_clip, write_image

F, H, W, FPS = TINY_VIDEO["num_frames"], TINY_VIDEO["height"], TINY_VIDEO["width"], TINY_VIDEO["fps"]
WAN_MODULES = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2"}


@pytest.fixture(scope="module")
def components():
    return build_tiny_wan()


def test_flow_targets_are_wans_flow_matching():
    scheduler = build_tiny_wan().scheduler  # flow_shift 3
    x, n = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    noisy, target = flow_targets(scheduler, x, n, torch.tensor([0, 500]))
    torch.testing.assert_close(noisy[0], x[0])  # no noise at t = 0
    shifted = 3 * 0.5 / (1 + 2 * 0.5)  # 0.75
    torch.testing.assert_close(noisy[1], (1 - shifted) * x[1] + shifted * n[1])
    torch.testing.assert_close(target, n - x)


def test_subject_prior_overfits_on_wan_and_leaves_the_backbone_untouched(components, tmp_path):
    backbone = {k: v.clone() for k, v in components.transformer.state_dict().items()}
    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    cache = EncodingCache(tmp_path / "cache", components)
    mean, std = cache.latents(clip, F, H, W, FPS)
    assert mean.shape == (3, 4, H // 8, W // 8)  # [latent frames, channels, h, w], as for CogVideoX
    text = cache.text(clip.caption)
    assert text.shape == (TINY_TEXT_TOKENS, 16)
    settings = PriorSettings(max_steps=20, **{**FAST, "learning_rate": 2e-2})
    trainer = SubjectTrainer(components.transformer, components.scheduler, [Example(mean, torch.zeros_like(std), text)],
                             settings, tmp_path / "work")
    try:
        before = fixed_loss(trainer)
        trainer.train()
        after = fixed_loss(trainer)
        names = [n for n, _ in components.transformer.named_parameters() if "lora_" in n]
        assert names and all(int(n.split(".")[1]) % 2 == 1 for n in names)  # blocks.1, blocks.3
    finally:
        trainer.close()
    assert after < 0.75 * before, (before, after)
    for key, value in components.transformer.state_dict().items():
        assert torch.equal(value, backbone[key]), key


def test_wan_priors_load_in_stock_diffusers_wan_and_in_the_region_gated_loader(components, tmp_path):
    from diffusers import WanPipeline

    image = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    settings = PriorSettings(max_steps=2, **FAST)
    subject = train_prior(components, PriorRequest("subject", "witch", (image,), settings), tmp_path / "priors")
    motion = train_prior(components, PriorRequest("motion", "running", (clip,), settings), tmp_path / "priors")
    assert lora_blocks(subject.path) == {1, 3} and lora_blocks(motion.path) == {0, 2}
    card = json.loads(motion.path.with_suffix(".json").read_text())
    assert card["model"] == "tiny-wan" and card["fps"] == 16 and set(card["modules"]) == WAN_MODULES
    with safe_open(str(subject.path), "pt") as handle:
        saved = {key: handle.get_tensor(key) for key in handle.keys()}
        assert handle.metadata()["dreamrunner_block_parity"] == "odd"
    assert all(key.startswith("transformer.blocks.") for key in saved)

    # Stock diffusers: WanPipeline.load_lora_weights reads the file, and the LoRA changes the output.
    fresh = build_tiny_wan()
    pipe = WanPipeline(**fresh.pipeline_kwargs())
    pipe.load_lora_weights(str(subject.path.parent), weight_name=subject.path.name, adapter_name="witch")
    loaded = pipe.transformer.state_dict()
    for key, value in saved.items():
        module_key = key.removeprefix("transformer.").replace(".lora_A.weight", ".lora_A.witch.weight").replace(
            ".lora_B.weight", ".lora_B.witch.weight")
        assert torch.equal(loaded[module_key], value), key

    def render():
        return pipe("[v1] witch", num_inference_steps=2, num_frames=F, height=H, width=W, guidance_scale=1.0,
                    max_sequence_length=TINY_TEXT_TOKENS, generator=torch.Generator().manual_seed(0),
                    output_type="latent").frames

    with_lora = render()
    pipe.transformer.disable_lora()
    without = render()
    assert with_lora.shape == without.shape and not torch.allclose(with_lora, without)

    # DreamRunner's region-gated loader: both priors at once on a fresh model, gated to their prompts.
    weights = [LoRAWeights.load(subject.path), LoRAWeights.load(motion.path)]
    assert [w.blocks for w in weights] == [{1, 3}, {0, 2}]
    masks = np.zeros((3, 3, 4, 6), dtype=bool)
    masks[1, :, :2, :3] = masks[2, :, 2:, 3:] = True
    masks[0] = ~masks[1:].any(0)
    tr = build_tiny_wan().transformer  # no peft layers: the gated hooks sit on plain linears
    with WanSR3AIController(tr, TINY_TEXT_TOKENS) as controller:
        controller.set_regions(RegionLayout.from_masks(masks, TINY_TEXT_TOKENS))
        controller.set_loras([GatedLoRA(weights[0], prompts=(1,)), GatedLoRA(weights[1], prompts=(2,))])
        assert len(controller.lora_modules()) == 6 * 4


@pytest.mark.parametrize("style", ["original", "kohya"])
def test_outside_wan_loras_import_as_region_gated_priors(tmp_path, style):
    """A Wan LoRA in the original code's names (ComfyUI / musubi-tuner files) becomes a prior file that stock
    diffusers' Wan loader and the region-gated loader both read, with each module's alpha / rank."""
    from diffusers import WanPipeline
    from safetensors.torch import save_file

    from dreamrunner.priors.imports import import_lora
    from dreamrunner.project import Project
    from dreamrunner.story import Story

    project = Project.create(tmp_path / "story", Story())
    fresh = build_tiny_wan()
    generator = torch.Generator().manual_seed(0)
    names = {"self_attn.q": "attn1.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.o": "attn2.to_out.0",
             "ffn.0": "ffn.net.0.proj"}
    tensors, expected = {}, {}
    for block in range(4):  # every block: an outside LoRA records parity "any"
        for original, ours in names.items():
            linear = fresh.transformer.get_submodule(f"blocks.{block}.{ours}")
            down, up = torch.randn(4, linear.in_features, generator=generator), torch.randn(linear.out_features, 4, generator=generator)
            prefix = (f"diffusion_model.blocks.{block}.{original}" if style == "original"
                      else f"lora_unet_blocks_{block}_{original.replace('.', '_')}")
            tensors |= {f"{prefix}.lora_down.weight": down, f"{prefix}.lora_up.weight": up, f"{prefix}.alpha": torch.tensor(8.0)}
            expected[f"blocks.{block}.{ours}"] = (down, up)
    save_file(tensors, str(tmp_path / "outside.safetensors"))
    prior = import_lora(project, tmp_path / "outside.safetensors", "subject", "mia")
    path = project.resolve(prior.path)
    assert prior.card["block_parity"] == "any" and prior.card["blocks"] == [0, 1, 2, 3]
    weights = LoRAWeights.load(path, "subject")
    assert set(weights.modules) == set(expected)
    for name, (down, up) in expected.items():
        got_down, got_up, scaling = weights.modules[name]
        assert torch.equal(got_down, down) and torch.equal(got_up, up) and scaling == 2.0  # alpha 8 / rank 4

    pipe = WanPipeline(**fresh.pipeline_kwargs())
    pipe.load_lora_weights(str(path), adapter_name="imported", use_safetensors=True)
    assert pipe.transformer.get_submodule("blocks.2.attn2.to_k").scaling["imported"] == 2.0
    tr = build_tiny_wan().transformer
    with WanSR3AIController(tr, TINY_TEXT_TOKENS) as controller:
        controller.set_regions(RegionLayout.from_masks(np.ones((1, 3, 4, 6), dtype=bool), TINY_TEXT_TOKENS))
        controller.set_loras([GatedLoRA(weights, prompts=(0,))])
        assert len(controller.lora_modules()) == len(expected)
