"""LoRA adapters of the priors on a CogVideoX transformer, and the file format they are saved in.

The split is SR3AI's: subject (appearance) LoRAs on the even transformer blocks, motion (temporal) LoRAs
on the odd ones. Files use the diffusers CogVideoX LoRA layout (what `CogVideoXPipeline.save_lora_weights`
writes and `load_lora_weights` reads), with the PEFT config stored as `lora_adapter_metadata`, and a JSON
card beside them. See docs/architecture.md, "LoRA files".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..errors import DreamRunnerError

TARGET_MODULES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")
BLOCK_PARITY = {"subject": 0, "motion": 1}


class PriorFileError(DreamRunnerError):
    pass


def prior_blocks(kind: str, num_layers: int) -> list[int]:
    """Transformer block indices a prior of this kind lives on: even for subject, odd for motion."""
    if kind not in BLOCK_PARITY:
        raise ValueError(f"prior kind must be 'subject' or 'motion', got {kind!r}")
    return list(range(BLOCK_PARITY[kind], num_layers, 2))


def lora_config(blocks: list[int], rank: int):
    """A PEFT LoRA config naming each targeted linear by its full path, so the saved metadata is exact."""
    from peft import LoraConfig

    targets = [f"transformer_blocks.{i}.{module}" for i in blocks for module in TARGET_MODULES]
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=targets, lora_dropout=0.0)


def add_prior_adapter(transformer, name: str, kind: str, rank: int) -> None:
    """Add a fresh LoRA adapter named `name` on the blocks of `kind`, through diffusers' PEFT integration."""
    config = lora_config(prior_blocks(kind, transformer.config.num_layers), rank)
    with warnings.catch_warnings():  # several adapters on one model is what motion training means to do
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.add_adapter(config, adapter_name=name)


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


def save_prior(transformer, adapter: str, folder: Path, name: str, card: dict) -> Path:
    """Write `<name>.safetensors` (diffusers CogVideoX LoRA layout) and `<name>.json` (the card)."""
    from diffusers import CogVideoXPipeline

    folder.mkdir(parents=True, exist_ok=True)
    config = transformer.peft_config[adapter]
    metadata = config.to_dict()
    CogVideoXPipeline.save_lora_weights(
        folder, transformer_lora_layers=adapter_state_dict(transformer, adapter),
        weight_name=f"{name}.safetensors", transformer_lora_adapter_metadata=metadata,
    )
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder / f"{name}.safetensors"


def read_card(weights: Path) -> dict:
    """The JSON card beside a prior's safetensors file."""
    path = Path(weights).with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriorFileError(f"prior card {path} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise PriorFileError(f"prior card {path} is unreadable: {error}") from None
