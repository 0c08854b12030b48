"""Memory/speed trade-offs of LoRA training on a frozen CogVideoX: which blocks recompute what.

Modes (`PriorSettings.gradient_checkpointing`):
- "off": keep every activation (fastest; 35 GB at 2B size, 480x720, 49 frames, with bf16 LoRA compute);
- "full": recompute each block in the backward pass (diffusers' default checkpointing; least memory);
- "selective": recompute each block but keep its attention outputs, the expensive part to recompute
  (torch's selective activation checkpointing).
`uncheckpointed_blocks` leaves that many of the last blocks un-checkpointed (all of them if it is larger
than the model's block count), spending spare memory on speed.
The checkpointing function is handed to diffusers' `enable_gradient_checkpointing`, which calls it per block.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ..attention.controller import transformer_blocks

_ATTENTION_OPS = tuple(
    getattr(torch.ops.aten, name).default
    for name in ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name)
)


def _keep_attention(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


# Un-checkpointed blocks (the last ones) that keep a prior's training under 24 GB at the family's default video
# size, measured on an H200 with the default PriorSettings (docs/benchmarks.md): CogVideoX-2B, 480x720x49,
# 11 blocks: 21.7 GB (motion), 19.4 GB (subject); Wan 2.1 1.3B, 480x832x81 (1.9x the tokens): 0 blocks
# 15.7 GB, 4 blocks 22.9 GB (motion), about 1.8 GB a block, so 2 blocks. Speed changes little (about 3%).
DEFAULT_UNCHECKPOINTED_BLOCKS = {"cogvideox": 11, "wan": 2}


def default_uncheckpointed_blocks(transformer) -> int:
    """The un-checkpointed block count for this transformer's model family (`DEFAULT_UNCHECKPOINTED_BLOCKS`)."""
    from ..backends import model_family

    return DEFAULT_UNCHECKPOINTED_BLOCKS[model_family(transformer)]


def configure_checkpointing(transformer, mode: str, uncheckpointed_blocks: int | None = 0) -> None:
    """Set the transformer's gradient checkpointing to `mode` ("off", "full" or "selective"), leaving the last
    `uncheckpointed_blocks` blocks plain (None: `default_uncheckpointed_blocks`)."""
    if mode == "off":
        transformer.disable_gradient_checkpointing()
        return
    if mode not in ("full", "selective"):
        raise ValueError(f"gradient checkpointing mode must be 'off', 'full' or 'selective', got {mode!r}")
    blocks = list(transformer_blocks(transformer))
    if uncheckpointed_blocks is None:
        uncheckpointed_blocks = default_uncheckpointed_blocks(transformer)
    plain = {id(block) for block in blocks[max(0, len(blocks) - uncheckpointed_blocks):]}
    context_fn = functools.partial(create_selective_checkpoint_contexts, _keep_attention) if mode == "selective" else None

    def checkpointing(block, *args):
        if id(block) in plain:
            return block(*args)
        if context_fn is None:
            return checkpoint(block, *args, use_reentrant=False)
        return checkpoint(block, *args, use_reentrant=False, context_fn=context_fn)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpointing)


def attention_backend(device: torch.device, prefer_cudnn: bool):
    """Optionally prefer cuDNN's fused attention on CUDA. On an H100 at 2B size it was within 3% of the
    default kernel either way (docs/benchmarks.md); the trainers' default is the configuration measured."""
    if device.type != "cuda" or not prefer_cudnn:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)
