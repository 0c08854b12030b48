"""SR3AI attention as functions: the fast exact decomposition equals the dense-mask reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamrunner.attention import RegionLayout, RegionLayoutError, attention_with_lse, sr3ai_attention_dense
from dreamrunner.attention import sr3ai_attention_fast


def random_masks(rng, prompts, grid, empty=(), partial=()):
    """Random boxes per prompt on some frames; background (0) covers the rest. Overlaps happen by chance."""
    frames, rows, cols = grid
    masks = np.zeros((prompts, *grid), dtype=bool)
    for p in range(1, prompts):
        if p in empty:
            continue
        on = range(frames) if p not in partial else range(frames // 2)  # only in some frames
        for t in on:
            r0, c0 = rng.integers(0, rows - 1), rng.integers(0, cols - 1)
            masks[p, t, r0:r0 + rng.integers(1, rows), c0:c0 + rng.integers(1, cols)] = True
    masks[0] = ~masks[1:].any(0)
    if rng.random() < 0.5:  # sometimes the background also overlaps an entity
        masks[0, 0, 0, :] = True
    return masks


@pytest.mark.parametrize("merged_spans", [0, 99])  # text queries: gathered keys / class-by-class merge
@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_dense_reference(seed, merged_spans, monkeypatch):
    monkeypatch.setattr("dreamrunner.attention.functional.MAX_MERGED_SPANS", merged_spans)
    rng = np.random.default_rng(seed)
    prompts = int(rng.integers(1, 6))
    grid = (3, 4, 5)
    masks = random_masks(rng, prompts, grid, empty={2} if prompts > 2 else (), partial={1})
    layout = RegionLayout.from_masks(masks, text_tokens=3)
    S = layout.sequence_length
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, S, 8, generator=generator) * 2 for _ in range(3))
    dense = sr3ai_attention_dense(q, k, v, layout)
    fast = sr3ai_attention_fast(q, k, v, layout)
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=1e-5)


def test_layout_with_guaranteed_overlaps_and_empty_region():
    grid = (2, 3, 3)
    masks = np.zeros((4, *grid), dtype=bool)
    masks[1, :, :2, :2] = True
    masks[2, 0, 1:, 1:] = True  # overlaps prompt 1 at (1, 1), only on frame 0
    # prompt 3 is empty: its text attends only itself
    masks[0] = ~masks[1:].any(0)
    layout = RegionLayout.from_masks(masks, text_tokens=2)
    classes = layout.cover_classes()
    spans = dict(classes.spans)
    assert classes.order[spans[(1, 2)]].tolist() == [4]  # token (t=0, r=1, c=1)
    assert sorted(classes.order.tolist()) == list(range(layout.num_video_tokens))
    assert classes.spans_of(3) == []
    q, k, v = (torch.randn(1, 3, layout.sequence_length, 4) for _ in range(3))
    torch.testing.assert_close(sr3ai_attention_fast(q, k, v, layout), sr3ai_attention_dense(q, k, v, layout),
                               rtol=1e-5, atol=1e-5)


def test_dense_mask_is_the_boolean_rule():
    masks = np.zeros((2, 1, 1, 2), dtype=bool)
    masks[0, 0, 0, 0] = masks[1, 0, 0, 1] = True
    mask = RegionLayout.from_masks(masks, text_tokens=1).dense_mask()
    # order: text_0, text_1, video_0 (region 0), video_1 (region 1)
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_attention_with_lse_matches_sdpa_and_logsumexp():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    for backends in (None, ("math",)):
        out, lse = attention_with_lse(q, k, v, backends)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
        torch.testing.assert_close(lse, (q @ k.transpose(-1, -2) / 8 ** 0.5).logsumexp(-1))


def test_uncovered_tokens_and_mismatched_calls_are_clear_errors():
    masks = np.zeros((2, 1, 2, 2), dtype=bool)
    masks[1, 0, 0, 0] = True
    with pytest.raises(RegionLayoutError, match="belong to no prompt"):
        RegionLayout.from_masks(masks, text_tokens=2)
    masks[0] = ~masks[1]
    layout = RegionLayout.from_masks(masks, text_tokens=2)
    q = torch.randn(1, 1, layout.sequence_length + 1, 4)
    with pytest.raises(RegionLayoutError, match="regions were set for 2 prompts"):
        sr3ai_attention_fast(q, q, q, layout)


def test_more_prompts_than_bits_in_an_integer():
    masks = np.zeros((64, 1, 8, 8), dtype=bool)
    for p in range(1, 64):
        masks[p, 0, p // 8, p % 8] = True
        masks[p, 0, 0, 0] = p % 5 == 0  # overlaps on token 0
    masks[0] = ~masks[1:].any(0)
    layout = RegionLayout.from_masks(masks, text_tokens=1)
    q, k, v = (torch.randn(1, 1, layout.sequence_length, 4) for _ in range(3))
    torch.testing.assert_close(sr3ai_attention_fast(q, k, v, layout), sr3ai_attention_dense(q, k, v, layout),
                               rtol=1e-5, atol=1e-5)
