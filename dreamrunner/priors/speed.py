"""Speed levers of LoRA training on a frozen CogVideoX that keep the step's objective and weights as they are.

- LoRA compute in the backbone's dtype (`PriorSettings.lora_compute = "backbone"`): PEFT casts a layer's
  input to its LoRA weights' dtype, so a bf16 backbone with fp32 LoRA weights makes an fp32 copy of every
  LoRA layer's input and saves it for the backward pass (10 GB at 2B size, 480x720, no checkpointing). Here
  the LoRA matmuls run in the input's dtype instead, on a bf16 view of the fp32 weights: the weights, their
  gradients (cast back by autograd) and AdamW stay fp32, so the fp32 weights remain the master copy.
- Regional compilation (`PriorSettings.compile_blocks`): `torch.compile` of each transformer block (not the
  whole model), fusing its norms, modulation, rotary embedding, GELU and gated residuals. The PEFT layers are
  left out of the compiled graphs (run eagerly between them): traced, their loops over the active adapters
  would put the adapter names in the guards, one recompilation per clip and step kind of a motion prior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention.controller import transformer_blocks
from . import lora


class InputDtypeLinear(torch.nn.Linear):
    """A LoRA factor that multiplies in its input's dtype; its own weight keeps its dtype (the master copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def compute_lora_in_input_dtype(transformer, adapters: list[str]) -> None:
    """Run these adapters' LoRA matmuls in the dtype of the activations (bf16 on a bf16 backbone)."""
    for layer in lora.tuner_layers(transformer):
        factors = [factor[name] for factor in (layer.lora_A, layer.lora_B) for name in adapters if name in factor]
        if not factors:
            continue
        layer.cast_input_dtype_enabled = False  # PEFT's switch for the input cast
        for factor in factors:
            if type(factor) is torch.nn.Linear:
                factor.__class__ = InputDtypeLinear  # same parameters and state-dict keys, other forward


def restore_lora_input_cast(transformer) -> None:
    for layer in lora.tuner_layers(transformer):
        layer.cast_input_dtype_enabled = True


def should_compile(mode: str, device: torch.device) -> bool:
    if mode not in ("off", "gpu", "always"):
        raise ValueError(f"compile_blocks must be 'off', 'gpu' or 'always', got {mode!r}")
    return mode == "always" or (mode == "gpu" and device.type == "cuda")


def compile_blocks(transformer, dynamic: bool | None = False, eager: tuple[str, ...] = ()) -> None:
    """Compile each transformer block in place (static shapes unless `dynamic`), keeping the PEFT layers eager,
    and the blocks' submodules named in `eager` (e.g. "attn1"), their forward hooks included."""
    for layer in lora.tuner_layers(transformer):
        layer.forward = torch.compiler.disable(layer.forward, recursive=True)
    for block in transformer_blocks(transformer):
        for name in eager:
            module = block.get_submodule(name)
            # nn.Module.__call__ runs `_compiled_call_impl` when set: the whole call, hooks and all, stays eager.
            module._compiled_call_impl = torch.compiler.disable(module._call_impl, recursive=True)
    # The blocks share their code, so the graphs are shared too; their variants are few (which inputs need
    # gradients, strides, the geometry) but a motion prior's two step kinds at two resolutions pass the
    # default limit of 8 per function, past which torch silently runs eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for block in transformer_blocks(transformer):
        block.compile(dynamic=dynamic)


def uncompile_blocks(transformer) -> None:
    for block in transformer_blocks(transformer):
        for module in block.modules():
            module._compiled_call_impl = None  # what nn.Module.compile (or `eager` above) set
    for layer in lora.tuner_layers(transformer):
        layer.__dict__.pop("forward", None)
