"""SR3AI on a tiny random Wan 2.1 transformer (float32, CPU): region cross-attention and region-gated LoRA."""

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from dreamrunner.attention import GatedLoRA, LoRAWeights, RegionLayout, RegionLayoutError
from dreamrunner.attention.wan import WanSR3AIController, wan_cross_attention_dense, wan_cross_attention_fast
from dreamrunner.backends.wan import TINY_TEXT_TOKENS, build_tiny_wan
from test_attention_model import overlapping_masks

L = TINY_TEXT_TOKENS


@pytest.fixture(scope="module")
def components():
    return build_tiny_wan()


def inputs(components, prompts, seed=0, size=(3, 8, 12)):
    """Latents [1, C, F, h, w], P*L text embeddings and the token grid (frames, rows, cols)."""
    cfg = components.transformer.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, cfg.in_channels, *size, generator=generator)
    text = torch.randn(1, prompts * L, cfg.text_dim, generator=generator)
    grid = (size[0], size[1] // 2, size[2] // 2)
    return dict(hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([700])), grid


@torch.no_grad()
def test_one_full_frame_prompt_is_stock_wan(components):
    tr = components.transformer
    kwargs, grid = inputs(components, prompts=1)
    stock = tr(**kwargs).sample
    for implementation in ("fast", "dense"):
        with WanSR3AIController(tr, L, implementation) as controller:
            controller.set_regions(RegionLayout.from_masks(np.ones((1, *grid), dtype=bool), L))
            assert sum(type(p).__name__ == "WanSR3AICrossAttnProcessor" for p in tr.attn_processors.values()) == 4
            torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=1e-5, atol=1e-5)
    assert all(type(p) is WanAttnProcessor for p in tr.attn_processors.values())  # detach restored stock
    torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("prompts", [3, 5])
def test_fast_equals_the_dense_mask_reference_through_the_transformer(components, prompts):
    tr = components.transformer
    kwargs, grid = inputs(components, prompts, seed=prompts)
    layout = RegionLayout.from_masks(overlapping_masks(prompts, grid, seed=prompts), L)
    assert any(len(members) > 1 for members, _ in layout.cover_classes().spans)  # overlaps present
    outputs = {}
    for implementation, reorder in (("fast", True), ("fast", False), ("dense", False)):
        with WanSR3AIController(tr, L, implementation, reorder_tokens=reorder) as controller:
            controller.set_regions(layout)
            outputs[implementation, reorder] = tr(**kwargs).sample
    reference = outputs["dense", False]
    torch.testing.assert_close(outputs["fast", False], reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["fast", True], reference, rtol=1e-5, atol=1e-5)
    # The regions matter: all prompts everywhere is a different result.
    with WanSR3AIController(tr, L) as controller:
        controller.set_regions(RegionLayout.from_masks(np.ones((prompts, *grid), dtype=bool), L))
        assert (tr(**kwargs).sample - reference).abs().max() > 1e-3


def test_cross_attention_fast_equals_dense_in_bf16_and_follows_the_rule():
    generator = torch.Generator().manual_seed(1)
    grid, prompts = (3, 6, 8), 4
    layout = RegionLayout.from_masks(overlapping_masks(prompts, grid, seed=3), L)
    n = int(np.prod(grid))
    q, k, v = (torch.randn(2, size, 2, 16, generator=generator) for size in (n, prompts * L, prompts * L))
    dense = wan_cross_attention_dense(q, k, v, layout)
    torch.testing.assert_close(wan_cross_attention_fast(q, k, v, layout), dense, rtol=1e-5, atol=1e-5)
    fast16 = wan_cross_attention_fast(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout)
    torch.testing.assert_close(fast16.float(), dense, rtol=2e-2, atol=2e-2)
    # A video token covered by prompt 0 only does not move when another prompt's text changes.
    alone = int(next(span for members, span in layout.cover_classes().spans if members == (0,)).start)
    token = int(layout.cover_classes().order[alone])
    changed = v.clone()
    changed[:, layout.text_slice(1)] += 10.0
    assert torch.equal(wan_cross_attention_fast(q, k, changed, layout)[:, token], wan_cross_attention_fast(q, k, v, layout)[:, token])
    with pytest.raises(RegionLayoutError, match="text"):
        wan_cross_attention_fast(q, k[:, :L], v[:, :L], layout)


def gated_prior(tr, blocks, modules, rank=2, seed=0, kind="subject"):
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in blocks:
        for module in modules:
            linear = tr.get_submodule(f"blocks.{block}.{module}")
            tensors[f"transformer.blocks.{block}.{module}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator)
            tensors[f"transformer.blocks.{block}.{module}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator)
    return LoRAWeights.from_state_dict(tensors, kind, {"r": rank, "lora_alpha": rank}, name=f"lora{seed}")


@torch.no_grad()
def test_gated_loras_act_inside_their_regions_only(components):
    tr = components.transformer
    prompts = 3
    kwargs, grid = inputs(components, prompts, seed=7)
    masks = np.zeros((prompts, *grid), dtype=bool)
    masks[1, :, :2, :3] = True  # top-left corner on every frame
    masks[2, 1:, 2:, 3:] = True  # bottom-right, frames 1..
    masks[0] = ~masks[1:].any(0)
    layout = RegionLayout.from_masks(masks, L)
    # The token-local linears of the last block (block 3: a subject block): a LoRA there reaching the video
    # tokens of prompt 1 only must leave every other token's output alone.
    video = ["attn1.to_q", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    lora = gated_prior(tr, [3], video, seed=1)
    stock = tr(**kwargs).sample
    with WanSR3AIController(tr, L) as controller:
        controller.set_regions(layout)
        plain = tr(**kwargs).sample
        controller.set_loras([GatedLoRA(lora, prompts=(1,), scale=1.0)])
        gated = tr(**kwargs).sample
        assert set(controller.lora_modules()) == {f"blocks.3.{m}" for m in video}
    changed = (gated - plain).abs().amax(dim=1)  # [1, F, h, w] latent pixels
    inside = torch.from_numpy(masks[1]).repeat_interleave(2, 1).repeat_interleave(2, 2)[None]
    assert changed[inside].min() > 0
    assert changed[~inside].max() == 0
    # Text-side gating: a cross-attention key/value LoRA bound to prompt 2 changes the tokens covered by 2 only.
    text_lora = gated_prior(tr, [3], ["attn2.to_k", "attn2.to_v"], seed=2)
    with WanSR3AIController(tr, L) as controller:
        controller.set_regions(layout)
        controller.set_loras([GatedLoRA(text_lora, prompts=(2,), scale=1.0), GatedLoRA(lora, prompts=(1,), scale=0.0)])
        both = tr(**kwargs).sample
    changed = (both - plain).abs().amax(dim=1)
    inside = torch.from_numpy(masks[2]).repeat_interleave(2, 1).repeat_interleave(2, 2)[None]
    assert changed[inside].min() > 0
    assert changed[~inside].max() == 0
    # Detached: no hooks left, the stock output.
    torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=0, atol=0)


@torch.no_grad()
def test_self_attention_key_value_loras_are_gated_per_token(components):
    """attn1.to_k / to_v deltas (which self-attention then spreads) are zero on tokens outside the region."""
    tr = components.transformer
    kwargs, grid = inputs(components, 2, seed=3)
    masks = np.zeros((2, *grid), dtype=bool)
    masks[1, 1:, 1:3, 2:5] = True
    masks[0] = ~masks[1]
    seen = []
    for loras in ([], [GatedLoRA(gated_prior(tr, [2], ["attn1.to_k", "attn1.to_v"], kind="motion"), prompts=(1,))]):
        with WanSR3AIController(tr, L, reorder_tokens=False) as controller:
            controller.set_regions(RegionLayout.from_masks(masks, L))
            controller.set_loras(loras)
            # Registered after the LoRA hooks, so it sees the output with their deltas added.
            handle = tr.get_submodule("blocks.2.attn1.to_k").register_forward_hook(
                lambda module, args, out: seen.append(out.clone()))
            try:
                tr(**kwargs)
            finally:
                handle.remove()
    changed = (seen[1] - seen[0]).abs().amax(-1)[0]  # [N] video tokens in (t, row, col) order
    inside = torch.from_numpy(masks[1].reshape(-1))
    assert changed[inside].min() > 0 and changed[~inside].max() == 0


def test_a_cogvideox_prior_does_not_load_on_wan(components):
    tr = components.transformer
    tensors = {"transformer.transformer_blocks.1.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
               "transformer.transformer_blocks.1.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}
    weights = LoRAWeights.from_state_dict(tensors, "subject", name="cog")
    with WanSR3AIController(tr, L) as controller:
        controller.set_regions(RegionLayout.from_masks(np.ones((1, 3, 4, 6), dtype=bool), L))
        with pytest.raises(Exception, match="not a linear layer of this WanTransformer3DModel: the prior was trained on another model; train it again"):
            controller.set_loras([GatedLoRA(weights, prompts=(0,))])
