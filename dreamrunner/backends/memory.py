"""How a render uses GPU memory and speed levers: one memory preset, a quantized transformer, compiled blocks.

Presets are named combinations, lightest (fastest) first; `auto` picks the first that fits the visible GPU
memory, from peaks measured on full-size random-weight models (`memory_table.json`, written from
`bench/bench_render_memory.py`; docs/benchmarks.md has the table):

| preset | models on the GPU | VAE decode |
|---|---|---|
| `none` | all three, all the time | whole frames |
| `vae-tiling` | all three, all the time | overlapping spatial tiles, one video at a time (slicing) |
| `model` | each whole model only while it runs (diffusers' `enable_model_cpu_offload`) | tiled + sliced |
| `group` | one transformer block at a time, the next prefetched on a CUDA stream (diffusers' block-level group offloading); T5 layer by layer | tiled + sliced |

VAE slicing alone is no preset: a render decodes one video (batch 1), where slicing saves nothing.

Every preset keeps SR3AI and the region-gated LoRAs: offloading hooks wrap whole blocks or models, and SR3AI's
processors and LoRA hooks run inside them (tests/test_render_memory.py checks the frames against `none`).
Quantization (`int8wo`, `fp8wo`: torchao weight-only on the transformer blocks' linear layers) and regional
compilation apply to the transformer only; the gated LoRA factors are separate tensors and stay in bf16/fp16.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import DreamRunnerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    offload: str  # "none", "model" or "group"
    vae_tiling: bool  # tiled and sliced VAE decode


PRESETS = {
    "none": Preset("none", False),
    "vae-tiling": Preset("none", True),
    "model": Preset("model", True),
    "group": Preset("group", True),
}
MEMORY_CHOICES = ("auto", *PRESETS)
QUANTIZE_CHOICES = ("none", "int8wo", "fp8wo")
COMPILE_CHOICES = ("off", "gpu", "always")
# Off: on the H200 (docs/benchmarks.md) compiled blocks saved 3% of a 2B SR3AI step (0.968x) against a 17 s
# compile per process, more than a 6-scene story's 50-step renders win back.
COMPILE_DEFAULT = "off"
TABLE = Path(__file__).with_name("memory_table.json")


class MemorySettingError(DreamRunnerError):
    """A memory, quantization or compile setting that does not exist or cannot apply here."""


class QuantizationUnavailable(DreamRunnerError):
    """A quantized transformer was asked for, but torchao is not installed."""


def _check(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise MemorySettingError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class MemoryOptions:
    """Where the model runs and how it saves GPU memory and time; applied when a pipeline is built on the components.

    preset: one of MEMORY_CHOICES ("auto": the lightest preset that fits the free GPU memory, see `choose_preset`).
    quantize: "none", "int8wo" or "fp8wo" (torchao weight-only, transformer blocks; needs `pip install .[quant]`).
    compile: "off", "gpu" (compile the transformer blocks on CUDA only) or "always".
    context_parallel: processes (GPUs) one scene's transformer is split over, 1 = none; above 1 the process group
        must be initialised with that many processes (dreamrunner.backends.parallel; Wan backends only).
    Raises MemorySettingError for a value not in its choices.
    """

    device: str | None = None  # None: cuda if available, else cpu
    preset: str = "auto"
    quantize: str = "none"
    compile: str = COMPILE_DEFAULT
    context_parallel: int = 1

    def __post_init__(self):
        _check("memory preset", self.preset, MEMORY_CHOICES)
        _check("quantization", self.quantize, QUANTIZE_CHOICES)
        _check("compile setting", self.compile, COMPILE_CHOICES)
        if self.context_parallel < 1:
            raise MemorySettingError(f"context_parallel counts processes, at least 1; got {self.context_parallel}")

    def resolved_device(self) -> str:
        from . import default_device

        return self.device or default_device()


@lru_cache(maxsize=1)
def measured_table() -> dict:
    """The measured peaks `auto` chooses by (memory_table.json): per backend and preset, GB resident before a
    render and GB at its peak, for the reference geometry."""
    return json.loads(TABLE.read_text(encoding="utf-8"))


def estimated_peak_gb(backend: str, preset: str, num_frames: int, height: int, width: int) -> float | None:
    """Peak GPU memory (GB) of one render: the measured peak, its activation part scaled by the pixel count
    (frames x height x width) against the measured geometry. None for a backend the table does not hold."""
    table = measured_table()["backends"].get(backend)
    if table is None or preset not in table["presets"]:
        return None
    ref = table["reference"]
    row = table["presets"][preset]
    scale = (num_frames * height * width) / (ref["num_frames"] * ref["height"] * ref["width"])
    return row["resident_gb"] + (row["peak_gb"] - row["resident_gb"]) * scale


def choose_preset(backend: str, num_frames: int, height: int, width: int, free_bytes: int | None,
                  quantize: str = "none") -> str:
    """Of the presets whose estimated peak plus the table's margin fits `free_bytes` (None: no GPU -> "none"), the
    one with the least measured scene time (`scene_s`: on the H200, none < vae-tiling < group < model for 2B and
    5B). Presets the table does not measure are not chosen by fit.

    Backends the table lacks (the tiny ones, newer checkpoints) are judged by the largest measured backend's
    numbers, so `auto` errs towards saving memory. Quantized weights are not in the table: their smaller
    weights only make the estimate safe. Nothing fits -> "group" (the lowest peak), with a warning."""
    if free_bytes is None:
        return "none"
    table = measured_table()
    known = table["backends"]
    if backend not in known:
        if backend.startswith("tiny"):
            return "none"
        backend = max(known, key=lambda name: known[name]["presets"]["none"]["peak_gb"])
    free_gb = free_bytes / 1e9
    measured = known[backend]["presets"]
    fitting = [preset for preset in measured
               if estimated_peak_gb(backend, preset, num_frames, height, width) + table["margin_gb"] <= free_gb]
    if fitting:
        return min(fitting, key=lambda preset: measured[preset]["scene_s"])
    log.warning("no memory preset is measured to fit %.1f GB free for %s; using 'group'", free_gb, backend)
    return "group"


def free_gpu_bytes(device: str) -> int | None:
    """Free memory of a CUDA device in bytes (torch.cuda.mem_get_info), None for a CPU device."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info(torch.device(device))[0])


def resolve_preset(options: MemoryOptions, backend: str, num_frames: int, height: int, width: int,
                   free_bytes: int | None = None) -> str:
    """The preset a render uses: the named one, or for "auto" `choose_preset` on the device's free memory
    (`free_bytes` given: that figure instead of asking the device)."""
    if options.preset != "auto":
        return options.preset
    device = options.resolved_device()
    if free_bytes is None:
        free_bytes = free_gpu_bytes(device)
    return choose_preset(backend, num_frames, height, width, free_bytes, options.quantize)


def quantize_transformer(transformer, mode: str) -> None:
    """Quantize the transformer blocks' nn.Linear weights in place with torchao (weight-only int8 or float8).

    LoRA layers are left as they are (peft's `lora_A`/`lora_B` modules; SR3AI's gated factors are not modules).
    Raises QuantizationUnavailable without torchao, MemorySettingError for an unknown mode."""
    import torch

    _check("quantization", mode, QUANTIZE_CHOICES)
    if mode == "none":
        return
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise QuantizationUnavailable(
            f"--quantize {mode} needs torchao, which is not installed ({error}); install the extra with "
            f"`pip install 'dreamrunner-studio[quant]'` (or `pip install torchao`), or render with quantize 'none'"
        ) from None
    config = Int8WeightOnlyConfig() if mode == "int8wo" else Float8WeightOnlyConfig()

    def wanted(module, name: str) -> bool:
        return (isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks.")
                and "lora_" not in name)

    quantize_(transformer, config, filter_fn=wanted)
    transformer.dreamrunner_quantized = mode


def should_compile(mode: str, device: str) -> bool:
    """Compile the transformer blocks? "always", or "gpu" on a CUDA device."""
    from ..priors import speed

    import torch

    return speed.should_compile(mode, torch.device(device))


# Kept eager inside the compiled blocks: SR3AI's attention (its cover-class slices differ per scene, so traced
# they recompile for every region layout) and the feed-forward whose linears carry the gated-LoRA hooks (new
# hook objects per scene). What is compiled: the blocks' AdaLN norms, modulation and gated residuals.
RENDER_EAGER = ("attn1", "ff")


def compile_transformer(transformer) -> None:
    """Regional compilation for rendering (once per transformer): each block compiled, SR3AI's per-scene parts
    eager (RENDER_EAGER); shapes dynamic after the first change, so a scene with another prompt count (text
    length) does not compile again per count."""
    from ..priors.speed import compile_blocks

    if getattr(transformer, "dreamrunner_compiled", False):
        return
    if getattr(transformer, "transformer_blocks", None) is None:
        # Wan's blocks (attn2 holds SR3AI, ffn the gated priors) have not been measured compiled.
        raise MemorySettingError("compiling the transformer for rendering is measured and supported for CogVideoX "
                                 "only; set compile to 'off' for Wan backends")
    compile_blocks(transformer, dynamic=None, eager=RENDER_EAGER)
    transformer.dreamrunner_compiled = True


def apply_placement(pipeline, preset: str, device: str) -> None:
    """Put the pipeline's models where `preset` says (see the module table) and set the VAE decode mode.

    A pipeline is placed once; the components it holds stay placed (its hooks stay on them). Raises
    MemorySettingError for an offloading preset on a CPU device."""
    import torch

    choice = PRESETS[_check("memory preset", preset, tuple(PRESETS))]
    if choice.offload != "none" and not str(device).startswith("cuda"):
        raise MemorySettingError(f"memory preset {preset!r} offloads models to the CPU between uses; it needs a GPU "
                                 f"device (got {device!r}); use 'none' or 'vae-tiling'")
    vae = pipeline.vae
    if choice.vae_tiling:
        vae.enable_tiling()
        vae.enable_slicing()
    else:
        vae.disable_tiling()
        vae.disable_slicing()
    if choice.offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif choice.offload == "group":
        place_group_offload(pipeline, torch.device(device))
    else:
        pipeline.to(device)


def place_group_offload(pipeline, onload, offload="cpu") -> None:
    """diffusers group offloading: the transformer block by block (prefetching the next block on a CUDA
    stream), the T5 encoder layer by layer. The VAE (0.4 GB) stays on the onload device: the pipeline calls
    `vae.decode`, which a block-level hook on its `forward` would not see, and leaf-level hooks would move every
    conv once per tile. `onload` "cpu" runs the hooks without a GPU (tests)."""
    import torch
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    stream = torch.device(onload).type == "cuda"
    common = dict(onload_device=torch.device(onload), offload_device=torch.device(offload), use_stream=stream)
    # Wan 2.2 A14B's low-noise expert (`transformer_2`) block by block as well.
    experts = [(module, "block_level") for module in (pipeline.transformer, getattr(pipeline, "transformer_2", None))
               if module is not None]
    for module, how in (*experts, (pipeline.text_encoder, "leaf_level")):
        if not _is_group_offload_enabled(module):
            apply_group_offloading(module, offload_type=how, num_blocks_per_group=1 if how == "block_level" else None,
                                   **common)
    pipeline.vae.to(onload)
