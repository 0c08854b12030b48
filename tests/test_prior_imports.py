"""Importing outside CogVideoX LoRAs as priors: diffusers, peft, the diffusers training script's output and
kohya/ComfyUI key styles, converted to the prior layout with their ranks and alphas; all-blocks LoRAs load
region-gated; pickles are refused."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from render_helpers import three_scene_story
from safetensors.torch import save_file

from dreamrunner.attention import GatedLoRA, LoRAFileError, LoRAWeights, SR3AIController, read_lora_file
from dreamrunner.attention.lora import PARITY_METADATA_KEY
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.cli import main
from dreamrunner.priors.imports import LoRAImportError, import_lora
from dreamrunner.project import Project
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, StockRegionControl
from dreamrunner.rendering.story_render import StoryRenderer, commit_to
from dreamrunner.video_io import read_video

MODULES = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"]
ALL_BLOCKS = [0, 1, 2, 3]  # the tiny model's four blocks: both parities
KOHYA_NAMES = {"attn1_to_q": "attn1.to_q", "attn1_to_out_0": "attn1.to_out.0", "ff_net_0_proj": "ff.net.0.proj",
               "ff_net_2": "ff.net.2"}


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "story", three_scene_story())


def peft_transformer(rank=4, alpha=8, blocks=ALL_BLOCKS, seed=0, **patterns):
    transformer = build_tiny("2b").transformer
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, **patterns,
                        target_modules=[f"transformer_blocks.{i}.{m}" for i in blocks for m in MODULES])
    torch.manual_seed(seed)
    return transformer, config


def original(transformer, adapter="default"):
    """name -> (A, B) of a peft model's adapter, under our module names."""
    state = get_peft_model_state_dict(transformer, adapter_name=adapter)
    state = {key.removeprefix("base_model.model."): value for key, value in state.items()}
    return {key[:-len(".lora_A.weight")]: (value, state[key.replace("lora_A", "lora_B")])
            for key, value in state.items() if key.endswith(".lora_A.weight")}


def assert_same(prior_path, expected: dict, scalings: dict, kind="subject"):
    weights = LoRAWeights.load(prior_path)  # kind from the card; the parity check accepts the import
    assert weights.kind == kind and set(weights.modules) == set(expected)
    for name, (a, b) in expected.items():
        got_a, got_b, scaling = weights.modules[name]
        assert torch.equal(got_a, a.detach()) and torch.equal(got_b, b.detach()), name
        assert scaling == pytest.approx(scalings[name]), name


def test_diffusers_save_lora_weights_on_all_blocks(tmp_path, project):
    transformer, config = peft_transformer(rank=4, alpha=8)
    transformer.add_adapter(config)
    CogVideoXPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                        weight_name="outside.safetensors",
                                        transformer_lora_adapter_metadata=config.to_dict())
    prior = import_lora(project, tmp_path / "outside.safetensors", "subject", "mia")
    expected = original(transformer)
    assert_same(project.resolve(prior.path), expected, {name: 2.0 for name in expected})
    assert prior.id == "subject-mia-outside" and prior.path == "media/priors/subject-mia-outside.safetensors"
    assert prior.card["blocks"] == ALL_BLOCKS and prior.card["block_parity"] == "any"
    assert (prior.card["rank"], prior.card["alpha"], prior.card["imported"]) == (4, 8, True)
    _, metadata = read_lora_file(project.resolve(prior.path), tensors=False)
    assert metadata[PARITY_METADATA_KEY] == "any"


def test_the_diffusers_training_scripts_folder_without_metadata(tmp_path, project):
    """train_cogvideox_lora.py saves `pytorch_lora_weights.safetensors` with no adapter metadata: alpha = rank."""
    transformer, config = peft_transformer(rank=2, alpha=2, blocks=[0, 2])  # even blocks: a motion prior's parity
    transformer.add_adapter(config)
    CogVideoXPipeline.save_lora_weights(tmp_path / "run", transformer_lora_layers=get_peft_model_state_dict(transformer))
    prior = import_lora(project, tmp_path / "run", "motion", "walking")
    expected = original(transformer)
    assert_same(project.resolve(prior.path), expected, {name: 1.0 for name in expected}, kind="motion")
    assert prior.card["block_parity"] == "even"  # it fits the motion parity: recorded as a trained one


def test_a_peft_save_pretrained_folder_with_rank_and_alpha_patterns(tmp_path, project):
    transformer, config = peft_transformer(rank=4, alpha=4, rank_pattern={"transformer_blocks.0.ff.net.2": 2},
                                           alpha_pattern={"attn1.to_q": 16})
    model = get_peft_model(transformer, config)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    prior = import_lora(project, tmp_path / "adapter", "subject", "mia", prior_id="Mia Style")
    expected = original(model)
    assert expected["transformer_blocks.0.ff.net.2"][0].shape[0] == 2
    scalings = {name: (16 / 4 if name.endswith("attn1.to_q") else 1.0) for name in expected}
    scalings["transformer_blocks.0.ff.net.2"] = 4 / 2
    assert_same(project.resolve(prior.path), expected, scalings)
    assert prior.id == "mia-style" and prior.card["layout"] == "peft save_pretrained"


def kohya_lora(seed=0):
    """Hand-written kohya / ComfyUI style factors: name -> (down [r, in], up [out, r], alpha or None)."""
    generator = torch.Generator().manual_seed(seed)
    block = build_tiny("2b").transformer.transformer_blocks[0]
    shapes = {name: (block.get_submodule(dotted).in_features, block.get_submodule(dotted).out_features)
              for name, dotted in KOHYA_NAMES.items()}
    factors = {}
    for block in ALL_BLOCKS:
        for index, (module, (fan_in, fan_out)) in enumerate(shapes.items()):
            alpha = None if module == "ff_net_2" else float(2 + index + block)
            factors[(block, module)] = (torch.randn(4, fan_in, generator=generator),
                                        torch.randn(fan_out, 4, generator=generator), alpha)
    return factors


@pytest.mark.parametrize("style", ["kohya", "comfyui"])
def test_kohya_and_comfyui_keys_with_per_module_alpha(tmp_path, project, style):
    tensors, expected, scalings = {}, {}, {}
    for (block, module), (down, up, alpha) in kohya_lora().items():
        dotted = KOHYA_NAMES[module]
        prefix = (f"lora_unet_transformer_blocks_{block}_{module}" if style == "kohya"
                  else f"diffusion_model.transformer_blocks.{block}.{dotted}")
        tensors[f"{prefix}.lora_down.weight"], tensors[f"{prefix}.lora_up.weight"] = down, up
        if alpha is not None:
            tensors[f"{prefix}.alpha"] = torch.tensor(alpha)
        name = f"transformer_blocks.{block}.{dotted}"
        expected[name] = (down, up)
        scalings[name] = (alpha if alpha is not None else 4) / 4  # no alpha: alpha = rank
    save_file(tensors, str(tmp_path / "kohya.safetensors"))
    prior = import_lora(project, tmp_path / "kohya.safetensors", "subject", "mia")
    path = project.resolve(prior.path)
    assert_same(path, expected, scalings)
    assert prior.card["key_style"] == ("kohya" if style == "kohya" else "dotted")

    # Stock diffusers reads the converted file with the same per-module scaling (from the adapter metadata).
    pipeline = DreamRunnerPipeline.from_components(build_tiny("2b"), StockRegionControl())
    pipeline.load_lora_weights(str(path), adapter_name="imported", use_safetensors=True)
    for name, scaling in scalings.items():
        assert pipeline.transformer.get_submodule(name).scaling["imported"] == pytest.approx(scaling), name


@torch.no_grad()
def test_an_all_blocks_lora_is_gated_to_its_regions_on_every_block(tmp_path, project):
    """A subject LoRA on even blocks too (which a trained subject prior may not touch) acts only on its prompts'
    tokens there, and equals peft's ungated LoRA on them."""
    transformer, config = peft_transformer(rank=4, alpha=8)
    transformer.add_adapter(config)
    CogVideoXPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                        weight_name="all.safetensors", transformer_lora_adapter_metadata=config.to_dict())
    prior = import_lora(project, tmp_path / "all.safetensors", "subject", "mia")
    from test_attention_lora import capture, setup

    model, layout, kwargs = setup(tmp_path)
    with SR3AIController(model) as controller:
        controller.set_regions(layout)
        controller.set_loras([GatedLoRA(LoRAWeights.load(project.resolve(prior.path)), prompts=(1,))])
        assert {int(m.split(".")[1]) for m in controller.lora_modules()} == set(ALL_BLOCKS)
        name = "transformer_blocks.0.attn1.to_v"  # an even block
        seen, handle = capture(model.get_submodule(name))
        model(**kwargs)
        handle.remove()
        mask = controller.layout.token_mask((1,))
    linear = model.get_submodule(name)
    base = torch.nn.functional.linear(seen["x"], linear.weight, linear.bias)
    ungated = transformer.get_submodule(name)(seen["x"])
    assert 0 < mask.sum() < mask.numel()
    torch.testing.assert_close(seen["y"][:, ~mask], base[:, ~mask], rtol=0, atol=0)
    torch.testing.assert_close(seen["y"][:, mask], ungated[:, mask], rtol=1e-5, atol=1e-5)


def test_refusals(tmp_path, project):
    marker = tmp_path / "ran"

    class TouchOnLoad:
        def __reduce__(self):
            return Path.touch, (marker,)

    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "adapter_model.bin").write_bytes(pickle.dumps({"x": TouchOnLoad()}))
    for path in (tmp_path / "peft", tmp_path / "peft" / "adapter_model.bin"):
        with pytest.raises(LoRAFileError, match="adapter_model.bin: priors are loaded from .safetensors files only"):
            import_lora(project, path, "subject", "mia")
    assert not marker.exists()
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 4)},
              str(tmp_path / "te.safetensors"))
    with pytest.raises(LoRAImportError, match="lora_te_text_model.*not a LoRA factor on a CogVideoX or Wan transformer block"):
        import_lora(project, tmp_path / "te.safetensors", "subject", "mia")
    save_file({"lora_unet_transformer_blocks_0_attn1_to_w.lora_down.weight": torch.zeros(2, 4)},
              str(tmp_path / "odd.safetensors"))
    with pytest.raises(LoRAImportError, match="names 'attn1_to_w', not a linear layer"):
        import_lora(project, tmp_path / "odd.safetensors", "subject", "mia")
    save_file({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 4)},
              str(tmp_path / "half.safetensors"))
    with pytest.raises(LoRAFileError, match="needs lora_A .* and lora_B"):
        import_lora(project, tmp_path / "half.safetensors", "subject", "mia")
    assert not list(project.media.glob("priors/*.safetensors"))  # nothing written for a refused file


def test_import_lora_command_registers_binds_and_renders_gated(tmp_path, project, capsys):
    transformer, config = peft_transformer(rank=4, alpha=4, seed=1)
    transformer.add_adapter(config)
    CogVideoXPipeline.save_lora_weights(tmp_path / "run", transformer_lora_layers=get_peft_model_state_dict(transformer))
    components = build_tiny("2b")
    StoryRenderer(project, "tiny", components=components).render(commit_to(project), [0])
    scene = project.story.scenes[0]
    plain = read_video(project.resolve(scene.renders[scene.chosen_render].path))

    capsys.readouterr()
    assert main(["--json", "import-lora", str(project.folder), str(tmp_path / "run"), "--target", "Mia",
                 "--scale", "0.8"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["prior"] == "subject-mia-run" and events[0]["block_parity"] == "any"
    assert events[1]["bound"] == ["s1", "s2", "s3"]
    project = Project.load(project.folder)
    assert [(b.prior_id, b.scale) for b in project.story.scenes[0].prior_bindings] == [("subject-mia-run", 0.8)]

    StoryRenderer(project, "tiny", components=components).render(commit_to(project), [0])
    scene = project.story.scenes[0]
    assert not np.array_equal(read_video(project.resolve(scene.renders[scene.chosen_render].path)), plain)

    assert main(["import-lora", str(project.folder), str(tmp_path / "run"), "--target", "Mia", "--scale", "9"]) == 2
    assert "--scale must be between 0 and 4" in capsys.readouterr().err
    assert main(["import-lora", str(project.folder), str(tmp_path / "run"), "--target", "Nobody"]) == 1
    assert "'Nobody' is not a character of the story" in capsys.readouterr().err
