"""LoRA adapters of the priors on a CogVideoX or Wan transformer, and the file format they are saved in.

The split is the released code's: motion (temporal) LoRAs on the 0-based even transformer blocks, subject
(appearance) LoRAs on the odd ones (`dreamrunner.attention.lora.BLOCK_PARITY`). Files use the diffusers
CogVideoX LoRA layout (what `CogVideoXPipeline.save_lora_weights` writes and `load_lora_weights` reads), with
the PEFT config stored as `lora_adapter_metadata` and the block parity as `dreamrunner_block_parity`, and a
JSON card beside them. See docs/architecture.md, "LoRA files".

Initialisation and dropout are the released code's: A ~ N(0, 1/r^2) (PEFT's "gaussian"), B = 0, scale 1
(alpha = r), and dropout on the LoRA branch's output, dropout(B A x), while training (PEFT drops its input
instead, so PEFT's own dropout stays off and `OutputDropout` hooks `lora_B`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..attention.lora import PARITY_METADATA_KEY, block_parity, prior_blocks
from ..errors import DreamRunnerError

TARGET_MODULES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")
# The same linears of a Wan block (self-attention and feed-forward; its cross-attention reads text only).
WAN_TARGET_MODULES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ffn.net.0.proj", "ffn.net.2")
# Per model family (`backends.model_family`): the name of the block list and the linears a prior trains.
FAMILY_LAYOUT = {"cogvideox": ("transformer_blocks", TARGET_MODULES), "wan": ("blocks", WAN_TARGET_MODULES)}
# A two-expert (Wan 2.2 A14B) prior: its high-noise LoRA is `<name>.safetensors`, where a one-transformer prior's
# file goes, and its low-noise LoRA `<name>-low-noise.safetensors` beside it (the card names it).
LOW_NOISE_SUFFIX = "-low-noise"


class PriorFileError(DreamRunnerError):
    pass


def target_modules(family: str) -> tuple[str, ...]:
    """The linears of a block a prior trains, for a model family ("cogvideox" or "wan")."""
    return FAMILY_LAYOUT[family][1]


def lora_config(blocks: list[int], rank: int, family: str = "cogvideox"):
    """A PEFT LoRA config naming each targeted linear by its full path, so the saved metadata is exact.

    "gaussian": A ~ N(0, 1/r^2), B = 0, the released code's init (PEFT's default is Kaiming-uniform A)."""
    from peft import LoraConfig

    prefix, modules = FAMILY_LAYOUT[family]
    targets = [f"{prefix}.{i}.{module}" for i in blocks for module in modules]
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets, lora_dropout=0.0)


def add_prior_adapter(transformer, name: str, kind: str, rank: int) -> None:
    """Add a fresh LoRA adapter named `name` on the blocks of `kind`, through diffusers' PEFT integration."""
    from ..backends import model_family

    config = lora_config(prior_blocks(kind, transformer.config.num_layers), rank, model_family(transformer))
    with warnings.catch_warnings():  # several adapters on one model is what motion training means to do
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.add_adapter(config, adapter_name=name)


class OutputDropout:
    """Dropout on a LoRA branch's output, dropout(B A x), as the released code applies it, while training.

    A forward hook on each `lora_B` factor of the given adapters; it draws from torch's global generator, which
    gradient checkpointing saves and restores for the recomputation, so a recomputed block drops the same
    elements."""

    def __init__(self, transformer, adapters: list[str], p: float) -> None:
        self.handles = []
        if p <= 0:
            return
        for layer in tuner_layers(transformer):
            for name in adapters:
                if name in layer.lora_B:
                    self.handles.append(layer.lora_B[name].register_forward_hook(
                        lambda module, args, output: F.dropout(output, p, module.training)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def tuner_layers(transformer):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in transformer.modules() if isinstance(module, BaseTunerLayer)]


def activate(transformer, active: list[str], trainable: list[str]) -> None:
    """Switch on the adapters in `active`; only those in `trainable` get gradients.

    MotionDirector's temporal step runs the clip's appearance LoRA but does not update it, which PEFT's
    own `set_adapter` (every active adapter trainable) cannot express.
    """
    for layer in tuner_layers(transformer):
        layer.set_adapter(active)
    for name, parameter in transformer.named_parameters():
        parameter.requires_grad_(any(f".{adapter}." in name for adapter in trainable) and "lora_" in name)


def adapter_parameters(transformer, adapter: str) -> list[torch.nn.Parameter]:
    return [p for n, p in transformer.named_parameters() if "lora_" in n and f".{adapter}." in n]


def adapter_state_dict(transformer, adapter: str) -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers' transformer key names (adapter name stripped)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=adapter)
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()}


def load_adapter_state(transformer, adapter: str, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise PriorFileError(f"adapter {adapter!r}: state has keys the model lacks, e.g. {unexpected[0]}")


def save_prior(transformer, adapter: str, kind: str, folder: Path, name: str, card: dict | None) -> Path:
    """Write `<name>.safetensors` (diffusers CogVideoX or Wan LoRA layout, plus the block parity of `kind` in its
    metadata) and `<name>.json` (the card; None: none, as for a low-noise expert's file)."""
    config = transformer.peft_config[adapter]
    return write_prior_file(folder, name, adapter_state_dict(transformer, adapter), config.to_dict(),
                            block_parity(kind), card)


def write_prior_file(folder: Path, name: str, state: dict[str, torch.Tensor], config: dict, parity: str,
                     card: dict | None) -> Path:
    """Write `<name>.safetensors` and its card `<name>.json` into `folder`: `state` (keys
    `transformer_blocks.{i}.{module}.lora_A/B.weight`, or Wan's `blocks.{i}...`) in the diffusers LoRA layout
    of its family through `CogVideoXPipeline.save_lora_weights` or `WanPipeline.save_lora_weights`, with the PEFT `config` dict as its adapter metadata and `parity`
    ("even", "odd" or "any" for an imported LoRA) as `dreamrunner_block_parity`. No card when `card` is None (the
    low-noise file of a two-expert prior: its high-noise file's card describes both). Returns the weights' path."""
    from diffusers import CogVideoXPipeline, WanPipeline
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    # PEFT keeps target_modules as a set, which JSON would list in hash order, different in every process:
    # sorted (and the header's metadata sorted, _sort_safetensors_metadata), the same weights make the same file
    # (and so the same render cache keys) wherever they train.
    config = {key: sorted(value) if isinstance(value, (set, frozenset)) else value for key, value in config.items()}
    wan = any(key.startswith("blocks.") for key in state)  # Wan's block list; CogVideoX's is transformer_blocks
    (WanPipeline if wan else CogVideoXPipeline).save_lora_weights(folder, transformer_lora_layers=state, weight_name=weights.name,
                                        transformer_lora_adapter_metadata=config)
    # diffusers writes only its own metadata keys: add the parity record to what it wrote.
    with safe_open(str(weights), framework="pt") as handle:
        metadata = {**(handle.metadata() or {}), PARITY_METADATA_KEY: parity}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    temporary = weights.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    _sort_safetensors_metadata(temporary)
    # safetensors writes 0600: give the file what a plain open() gives (the umask's), as its card gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    temporary.replace(weights)
    if card is not None:
        write_card(weights, card)
    return weights


def write_card(weights: Path, card: dict) -> None:
    """Write a prior's JSON card beside its safetensors file (`<name>.json`)."""
    text = json.dumps(card, indent=2, sort_keys=True) + "\n"
    Path(weights).with_suffix(".json").write_text(text, encoding="utf-8")


def _sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with its `__metadata__` keys sorted. safetensors keeps the
    metadata in a Rust HashMap, written in an order that differs in every process, so the same weights made
    different bytes (and render cache keys, which hash the file). Format: an 8-byte little-endian header length,
    the JSON header (space-padded to a multiple of 8), then the tensor data, which the offsets address."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length:])


def read_card(weights: Path) -> dict:
    """The JSON card beside a prior's safetensors file."""
    path = Path(weights).with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriorFileError(f"prior card {path} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise PriorFileError(f"prior card {path} is unreadable: {error}") from None
