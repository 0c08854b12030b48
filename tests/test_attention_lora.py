"""Region-gated LoRA: files written by peft + diffusers, gated per token, several at once, block parity."""

import json

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from dreamrunner.attention import GatedLoRA, LoRAFileError, LoRAWeights, RegionLayout, RegionLayoutError, SR3AIController
from dreamrunner.attention import bound_prompts
from dreamrunner.attention.lora import prior_blocks
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.regions import build_region_plan
from dreamrunner.story import Scene

MODULES = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"]


def write_prior(tmp_path, name, kind, seed, rank=4, alpha=8, blocks=None):
    """A LoRA file exactly as training writes it: peft adapter -> CogVideoXPipeline.save_lora_weights."""
    transformer = build_tiny("2b").transformer
    blocks = blocks if blocks is not None else prior_blocks(kind, len(transformer.transformer_blocks))
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                        target_modules=[f"transformer_blocks.{i}.{m}" for i in blocks for m in MODULES])
    torch.manual_seed(seed)
    transformer.add_adapter(config, adapter_name=name)
    CogVideoXPipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=name),
        weight_name=f"{name}.safetensors", transformer_lora_adapter_metadata=config.to_dict())
    (tmp_path / f"{name}.json").write_text(json.dumps({"kind": kind, "target": name}))
    return tmp_path / f"{name}.safetensors", transformer


def setup(tmp_path):
    components = build_tiny("2b")
    tr = components.transformer
    cfg = tr.config
    frames = (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1
    grid = (frames, cfg.sample_height // 2, cfg.sample_width // 2)
    masks = np.zeros((3, *grid), dtype=bool)
    masks[1, :, :, :4] = True
    masks[2, :, :, 2:5] = True  # overlaps prompt 1 in columns 2..3
    masks[0] = ~masks[1:].any(0)
    layout = RegionLayout.from_masks(masks, cfg.max_text_seq_length)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(hidden_states=torch.randn(2, frames, 4, cfg.sample_height, cfg.sample_width, generator=generator),
                  encoder_hidden_states=torch.randn(2, 3 * cfg.max_text_seq_length, cfg.text_embed_dim, generator=generator),
                  timestep=torch.tensor([500, 500]))
    return tr, layout, kwargs


def capture(module):
    seen = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    return seen, handle


def test_loading_reads_rank_alpha_kind_and_checks_block_parity(tmp_path):
    path, _ = write_prior(tmp_path, "cat", "subject", seed=1, rank=4, alpha=8)
    weights = LoRAWeights.load(path)  # kind from the JSON card
    assert weights.kind == "subject" and weights.blocks == {1, 3}
    a, b, scaling = weights.modules["transformer_blocks.1.attn1.to_q"]
    assert a.shape[0] == 4 and b.shape[1] == 4 and scaling == 2.0
    with pytest.raises(LoRAFileError, match="a motion prior lives on the even transformer blocks"):
        LoRAWeights.load(path, kind="motion")
    bad, _ = write_prior(tmp_path, "bad", "subject", seed=2, blocks=[1, 2])
    with pytest.raises(LoRAFileError, match="must only touch odd blocks"):
        LoRAWeights.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(LoRAFileError, match="not a readable safetensors"):
        LoRAWeights.load(tmp_path / "junk.safetensors", kind="subject")


@pytest.mark.parametrize("kind, old_blocks", [("subject", [0, 2]), ("motion", [1, 3])])
def test_priors_trained_with_the_old_block_placement_are_refused_with_a_retrain_message(tmp_path, kind, old_blocks):
    """Before issue 16 subject priors lived on even and motion priors on odd blocks; such files carry no parity
    record, and their keys show the old placement: they are refused, saying to train again."""
    old, _ = write_prior(tmp_path, "old", kind, seed=1, blocks=old_blocks)
    with pytest.raises(LoRAFileError, match=rf"train the {kind} prior again") as error:
        LoRAWeights.load(old)
    assert "earlier DreamRunner" in str(error.value)
    # A file without the record whose keys show today's placement is judged safely by its keys: it loads.
    assert LoRAWeights.load(write_prior(tmp_path, "new", kind, seed=1)[0]).blocks == set(prior_blocks(kind, 4))
    # A file that records the old parity is refused by its record.
    from safetensors.torch import load_file, save_file

    relabelled = tmp_path / "relabelled.safetensors"
    save_file(load_file(str(tmp_path / "new.safetensors")), str(relabelled),
              metadata={"dreamrunner_block_parity": "odd" if kind == "motion" else "even"})
    with pytest.raises(LoRAFileError, match="as the file records"):
        LoRAWeights.load(relabelled, kind)


@torch.no_grad()
def test_gated_lora_is_base_outside_its_mask_and_the_ungated_peft_lora_inside(tmp_path):
    path, peft_model = write_prior(tmp_path, "cat", "subject", seed=1)
    tr, layout, kwargs = setup(tmp_path)
    weights = LoRAWeights.load(path)
    with SR3AIController(tr) as controller:
        controller.set_regions(layout)
        controller.set_loras([GatedLoRA(weights, prompts=(1, 2))])  # union of two overlapping regions
        name = "transformer_blocks.3.ff.net.0.proj"
        seen, handle = capture(tr.get_submodule(name))
        tr(**kwargs)
        handle.remove()
        mask = controller.layout.token_mask((1, 2))  # in the token order the blocks see
    linear, peft_linear = tr.get_submodule(name), peft_model.get_submodule(name)
    base = torch.nn.functional.linear(seen["x"], linear.weight, linear.bias)
    ungated = peft_linear(seen["x"])  # peft's own LoRA layer, every token
    assert 0 < mask.sum() < mask.numel()
    torch.testing.assert_close(seen["y"][:, ~mask], base[:, ~mask], rtol=0, atol=0)
    torch.testing.assert_close(seen["y"][:, mask], ungated[:, mask], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ungated[:, mask], base[:, mask], atol=1e-3)  # the LoRA does change those tokens


@torch.no_grad()
def test_gated_lora_on_all_tokens_equals_peft_through_the_whole_model(tmp_path):
    path, peft_model = write_prior(tmp_path, "run", "motion", seed=3)
    tr, layout, kwargs = setup(tmp_path)
    results = []
    for model, loras in ((peft_model, []), (tr, [GatedLoRA(LoRAWeights.load(path), prompts=(0, 1, 2))])):
        with SR3AIController(model) as controller:
            controller.set_regions(layout)
            controller.set_loras(loras)
            results.append(model(**kwargs).sample)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_several_loras_with_scales_and_parity(tmp_path):
    cat_path, cat_model = write_prior(tmp_path, "cat", "subject", seed=1)
    dog_path, dog_model = write_prior(tmp_path, "dog", "subject", seed=2)
    run_path, _ = write_prior(tmp_path, "run", "motion", seed=3)
    tr, layout, kwargs = setup(tmp_path)
    loras = [GatedLoRA(LoRAWeights.load(cat_path), (1,)), GatedLoRA(LoRAWeights.load(dog_path), (2,), scale=0.5),
             GatedLoRA(LoRAWeights.load(run_path), (2,))]
    with SR3AIController(tr) as controller:
        controller.set_regions(layout)
        controller.set_loras(loras)
        active = controller.lora_modules()
        name = "transformer_blocks.1.attn1.to_v"
        seen, handle = capture(tr.get_submodule(name))
        tr(**kwargs)
        handle.remove()
        masks = {p: controller.layout.token_mask((p,))[:, None] for p in (1, 2)}
    # subject priors only on odd blocks, the motion prior only on even blocks, each on all six linears
    assert len(active) == 4 * len(MODULES)
    for module, names in active.items():
        block = int(module.split(".")[1])
        assert names == (("cat", "dog") if block % 2 == 1 else ("run",)), module
    x, linear = seen["x"], tr.get_submodule(name)
    base = torch.nn.functional.linear(x, linear.weight, linear.bias)
    cat_delta = cat_model.get_submodule(name)(x) - base
    dog_delta = dog_model.get_submodule(name)(x) - base
    expected = base + masks[1] * cat_delta + 0.5 * masks[2] * dog_delta
    torch.testing.assert_close(seen["y"], expected, rtol=1e-5, atol=1e-5)
    # after detach no hook is left
    assert not any(m._forward_hooks for m in tr.modules())


def test_prompts_bind_to_priors_by_character_id_and_motion_not_by_text():
    scene = Scene.model_validate({
        "id": "s", "background": "a park",
        "keyframes": [{"index": i, "entities": [
            {"name": "cat", "character_id": "c1", "motion": "jumping", "description": "a cat jumping", "box": [0, 0, .5, .5]},
            {"name": "dog", "character_id": "c2", "description": "a dog like the cat", "box": [.5, .5, 1, 1]},
        ]} for i in range(6)]})
    plan = build_region_plan(scene, (3, 4, 4))
    assert bound_prompts(plan, "subject", "c1") == (1,)
    assert bound_prompts(plan, "subject", "c2") == (2,)  # its description mentions "cat": no substring binding
    assert bound_prompts(plan, "motion", "jumping") == (1,)
    assert bound_prompts(plan, "motion", "flying") == ()


def test_a_lora_that_does_not_fit_is_refused_and_the_active_ones_stay(tmp_path):
    cat_path, _ = write_prior(tmp_path, "cat", "subject", seed=1)
    tr, layout, _ = setup(tmp_path)
    cat = LoRAWeights.load(cat_path)
    a, b, scaling = cat.modules["transformer_blocks.1.attn1.to_q"]
    wrong = LoRAWeights("subject", {"transformer_blocks.1.attn1.to_q": (a[:, :-1], b, scaling)}, name="wrong")
    with SR3AIController(tr) as controller:
        controller.set_regions(layout)
        controller.set_loras([GatedLoRA(cat, (1,))])
        with pytest.raises(LoRAFileError, match="do not fit"):
            controller.set_loras([GatedLoRA(wrong, (1,))])
        with pytest.raises(RegionLayoutError, match="not one of the 3 prompts"):
            controller.set_loras([GatedLoRA(cat, (7,))])
        assert set(controller.lora_modules().values()) == {("cat",)}


def test_a_gate_is_cut_to_the_tokens_its_loras_reach():
    from dreamrunner.attention.controller import GateRows

    gate = torch.zeros(10, 3)
    gate[2, 0] = 1.0
    gate[6, 1:] = 0.5  # rows 3..5 are reached by no LoRA but lie between: kept, with a zero gate
    rows = GateRows.of(gate)
    assert (rows.start, rows.stop) == (2, 7)
    assert torch.equal(rows.gate, gate[2:7])
    empty = GateRows.of(torch.zeros(4, 2))
    assert (empty.start, empty.stop) == (0, 0) and empty.gate.shape == (0, 2)
