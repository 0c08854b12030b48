"""Memory presets, `auto`, quantized and compiled transformers, and the machine settings behind them (CPU, tiny)."""

import json
import sys

import numpy as np
import pytest
import torch
from diffusers.hooks.group_offloading import _is_group_offload_enabled
from render_helpers import moving_scene, write_subject_lora

from dreamrunner.backends import load_backend
from dreamrunner.backends.cogvideox import resolve_source
from dreamrunner.backends.memory import (
    COMPILE_DEFAULT,
    PRESETS,
    MemoryOptions,
    MemorySettingError,
    QuantizationUnavailable,
    choose_preset,
    estimated_peak_gb,
    measured_table,
    place_group_offload,
    quantize_transformer,
    resolve_preset,
    should_compile,
)
from dreamrunner.backends.tiny import TINY_VIDEO, build_tiny
from dreamrunner.cli import main
from dreamrunner.machine import MachineSettingsError, read_machine_settings, update_machine_settings
from dreamrunner.regions import build_region_plan
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, LoraBinding, SceneInput
from dreamrunner.story import VideoSettings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMRUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DREAMRUNNER_COGVIDEOX_2B", raising=False)
    return tmp_path / "home"


def test_each_preset_applies_its_vae_mode_and_offloading_needs_a_gpu(home):
    for preset, tiled in (("none", False), ("vae-tiling", True)):
        components = load_backend("tiny", memory=MemoryOptions(device="cpu", preset=preset))
        pipeline = DreamRunnerPipeline.from_components(components)
        assert pipeline.placement == preset and components.vae.use_tiling is tiled and components.vae.use_slicing is tiled
        assert not _is_group_offload_enabled(components.transformer)
    for preset in ("model", "group"):
        components = load_backend("tiny", memory=MemoryOptions(device="cpu", preset=preset))
        with pytest.raises(MemorySettingError, match=f"memory preset '{preset}' offloads .* needs a GPU"):
            DreamRunnerPipeline.from_components(components)
    with pytest.raises(MemorySettingError, match="unknown memory preset 'sequential'"):
        MemoryOptions(preset="sequential")


def _scene_input(tmp_path, loras=True) -> SceneInput:
    video = VideoSettings(**TINY_VIDEO)
    plan = build_region_plan(moving_scene("s1", "A cat walks."), video.token_grid)
    path = tmp_path / "mia.safetensors"
    if not path.exists():
        write_subject_lora(path, seed=3)
    bindings = (LoraBinding("mia", path, "subject", 1.0, (1,)),) if loras else ()
    return SceneInput(prompt="A cat walks.", region_plan=plan, loras=bindings)


def _render(pipeline, scene_input) -> np.ndarray:
    video = TINY_VIDEO
    return pipeline(scene_input, seed=1, num_inference_steps=2, num_frames=video["num_frames"],
                    height=video["height"], width=video["width"]).frames


def test_group_offload_hooks_keep_sr3ai_and_the_gated_lora(tmp_path, home):
    """Block-level group offloading (onload on the CPU here) wraps the blocks; SR3AI's processors and the gated
    LoRA's hooks still run inside them: the frames equal those without offloading, and the LoRA matters."""
    scene = _scene_input(tmp_path)
    plain = DreamRunnerPipeline.from_components(load_backend("tiny", memory=MemoryOptions(device="cpu", preset="none")))
    expected = _render(plain, scene)
    assert not np.array_equal(expected, _render(plain, _scene_input(tmp_path, loras=False)))

    components = build_tiny("2b")
    offloaded = DreamRunnerPipeline(**components.pipeline_kwargs())
    offloaded.is_noise = True  # labelled like `plain`, whose components say so
    place_group_offload(offloaded, "cpu")
    assert _is_group_offload_enabled(components.transformer) and _is_group_offload_enabled(components.text_encoder)
    registry = components.transformer.transformer_blocks[0]._diffusers_hook
    assert registry.get_hook("group_offloading") is not None
    np.testing.assert_array_equal(_render(offloaded, scene), expected)


def test_auto_picks_the_fastest_preset_that_fits_the_free_memory():
    table = measured_table()
    margin = table["margin_gb"]
    for backend in ("cogvideox-2b", "cogvideox-5b"):
        measured = table["backends"][backend]["presets"]
        assert set(measured) == set(PRESETS)  # every preset measured (docs/benchmarks.md)
        peaks = {preset: estimated_peak_gb(backend, preset, 49, 480, 720) for preset in measured}
        for preset, peak in peaks.items():
            free = int((peak + margin + 0.01) * 1e9)
            chosen = choose_preset(backend, 49, 480, 720, free)
            fits = [p for p in measured if peaks[p] + margin <= free / 1e9]
            assert chosen in fits and measured[chosen]["scene_s"] == min(measured[p]["scene_s"] for p in fits)
    # The 5B on a 24 GB card: group offload (4.7 GB, +6% per scene) beats model offload (14.7 GB, +18%).
    assert choose_preset("cogvideox-5b", 49, 480, 720, int(23.5e9)) == "group"
    assert choose_preset("cogvideox-2b", 49, 480, 720, 200 * 10**9) == "none"
    assert choose_preset("cogvideox-2b", 49, 480, 720, 10**9) == "group"  # nothing fits: the most saving
    # A 24 GB card (about 23.5 GB free) renders the 2B default at 49 frames 480x720 within it.
    on_24 = choose_preset("cogvideox-2b", 49, 480, 720, int(23.5e9))
    assert on_24 == "vae-tiling" and estimated_peak_gb("cogvideox-2b", on_24, 49, 480, 720) <= 24
    # Fewer pixels, smaller estimate; the resolution comes from the caller.
    assert estimated_peak_gb("cogvideox-2b", "none", 25, 480, 720) < peaks["none"]
    # The reading is injected: no GPU is asked when free_bytes is given; a CPU device means no GPU: "none".
    options = MemoryOptions(device="cuda", preset="auto")
    assert resolve_preset(options, "cogvideox-2b", 49, 480, 720, free_bytes=10**9) == "group"
    assert resolve_preset(MemoryOptions(device="cpu"), "cogvideox-5b", 49, 480, 720) == "none"
    assert resolve_preset(MemoryOptions(device="cuda", preset="model"), "cogvideox-2b", 49, 480, 720, 10**12) == "model"
    # Tiny backends need nothing; a backend the table lacks is judged by the largest measured one.
    assert choose_preset("tiny-5b", 9, 64, 96, 10**9) == "none"
    biggest = max(table["backends"], key=lambda b: table["backends"][b]["presets"]["none"]["peak_gb"])
    assert choose_preset("cogvideox1.5-5b", 49, 480, 720, 10**9) == choose_preset(biggest, 49, 480, 720, 10**9)


def test_auto_on_a_pipeline_uses_the_injected_reading(home):
    components = load_backend("tiny", memory=MemoryOptions(device="cpu", preset="auto"))
    assert DreamRunnerPipeline.from_components(components, free_bytes=10**6).placement == "none"


def test_quantized_transformer_keeps_the_gated_lora_at_zero_outside_its_regions(tmp_path, home):
    pytest.importorskip("torchao")
    from test_attention_lora import capture, setup, write_prior

    from dreamrunner.attention import GatedLoRA, LoRAWeights, SR3AIController

    components = load_backend("tiny", memory=MemoryOptions(device="cpu", preset="none", quantize="int8wo"))
    DreamRunnerPipeline.from_components(components)
    transformer = components.transformer
    linear = transformer.get_submodule("transformer_blocks.3.ff.net.0.proj")
    assert "Int8" in type(linear.weight).__name__ and transformer.dreamrunner_quantized == "int8wo"
    assert type(transformer.proj_out.weight) is torch.nn.Parameter  # only the blocks' linears
    with pytest.raises(MemorySettingError, match="already quantized"):
        components.memory = MemoryOptions(device="cpu", preset="none", quantize="fp8wo")
        DreamRunnerPipeline.from_components(components)

    path, _ = write_prior(tmp_path, "cat", "subject", seed=1)
    _, layout, kwargs = setup(tmp_path)
    with torch.no_grad(), SR3AIController(transformer) as controller:
        controller.set_regions(layout)
        controller.set_loras([GatedLoRA(LoRAWeights.load(path), prompts=(1, 2))])
        seen, handle = capture(linear)
        transformer(**kwargs)
        handle.remove()
        mask = controller.layout.token_mask((1, 2))
    base = torch.nn.functional.linear(seen["x"], linear.weight, linear.bias)  # the quantized base layer
    assert 0 < mask.sum() < mask.numel()
    torch.testing.assert_close(seen["y"][:, ~mask], base[:, ~mask], rtol=0, atol=0)
    assert not torch.allclose(seen["y"][:, mask], base[:, mask], atol=1e-3)


def test_quantize_without_torchao_is_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(QuantizationUnavailable, match=r"needs torchao.*dreamrunner-studio\[quant\]"):
        quantize_transformer(build_tiny("2b").transformer, "int8wo")


def test_compile_is_off_on_the_cpu_by_default(home):
    assert MemoryOptions().compile == COMPILE_DEFAULT
    assert not should_compile(COMPILE_DEFAULT, "cpu") and not should_compile("gpu", "cpu")
    assert should_compile("always", "cpu") and should_compile("gpu", "cuda")
    components = load_backend("tiny", memory=MemoryOptions(device="cpu"))
    DreamRunnerPipeline.from_components(components)
    assert not getattr(components.transformer, "dreamrunner_compiled", False)
    assert all(block._compiled_call_impl is None for block in components.transformer.transformer_blocks)


def test_machine_settings_are_the_cli_defaults_and_the_command_line_wins(home, tmp_path):
    from dreamrunner.cli import build_parser
    from dreamrunner.cli.story_commands import memory_options

    parser = build_parser()
    assert memory_options(parser.parse_args(["render", "p"])) == MemoryOptions()
    update_machine_settings(memory="model", quantize="int8wo", model_paths={"cogvideox-2b": str(tmp_path / "m2b")})
    stored = json.loads((home / "machine.json").read_text())
    assert stored["memory"] == "model" and stored["model_paths"] == {"cogvideox-2b": str(tmp_path / "m2b")}
    assert memory_options(parser.parse_args(["render", "p"])) == MemoryOptions(preset="model", quantize="int8wo")
    given = memory_options(parser.parse_args(["render", "p", "--memory", "group", "--device", "cpu"]))
    assert given == MemoryOptions(device="cpu", preset="group", quantize="int8wo")
    assert resolve_source("cogvideox-2b", None) == str(tmp_path / "m2b")
    assert resolve_source("cogvideox-2b", "elsewhere") == "elsewhere"
    with pytest.raises(MachineSettingsError, match="memory"):
        update_machine_settings(memory="lots")
    (home / "machine.json").write_text('{"memory": "sequential"}')
    with pytest.raises(MachineSettingsError, match="machine.json: not valid machine settings"):
        read_machine_settings()


def test_old_memory_flags_are_a_usage_error_naming_the_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["render", str(tmp_path), "--cpu-offload", "model"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--cpu-offload" in err and "--memory model" in err and "Traceback" not in err
