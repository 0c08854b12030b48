"""SR3AI on tiny random CogVideoX 2B (sinusoidal), 5B (rotary) and 1.5 (rotary, two latent frames per token
frame) transformers, float32 on CPU."""

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import CogVideoXPatchEmbed

from dreamrunner.attention import MultiPromptPatchEmbed, RegionLayout, RegionLayoutError, SR3AIController
from dreamrunner.attention import encode_region_prompts
from dreamrunner.backends.tiny import build_tiny


@pytest.fixture(scope="module", params=["2b", "5b", "1.5"])
def components(request):
    return build_tiny(request.param)


def inputs(components, prompts, seed=0, size=None):
    """Latents, P*L text embeddings and, with rotary positions, the rotary embeddings the stock pipeline would pass.

    size: (latent frames, latent height, latent width), default the backend's video size. Latent frames are
    padded in front to whole temporal patches, as CogVideoXPipeline pads them for CogVideoX 1.5."""
    tr = components.transformer
    cfg = tr.config
    video = components.video_defaults
    frames, height, width = size or ((video["num_frames"] - 1) // cfg.temporal_compression_ratio + 1,
                                     video["height"] // 8, video["width"] // 8)
    patch_t = cfg.patch_size_t or 1
    frames += -frames % patch_t
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, frames, cfg.in_channels, height, width, generator=generator)
    text = torch.randn(2, prompts * cfg.max_text_seq_length, cfg.text_embed_dim, generator=generator)
    rotary = None
    if cfg.use_rotary_positional_embeddings:
        pipe = CogVideoXPipeline(**components.pipeline_kwargs())
        rotary = pipe._prepare_rotary_positional_embeddings(height * 8, width * 8, frames, "cpu")
    grid = (frames // patch_t, height // cfg.patch_size, width // cfg.patch_size)
    return dict(hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([999, 999]),
                image_rotary_emb=rotary), grid


def overlapping_masks(prompts, grid, seed):
    rng = np.random.default_rng(seed)
    frames, rows, cols = grid
    masks = np.zeros((prompts, *grid), dtype=bool)
    for p in range(1, prompts):
        if p == prompts - 1 and prompts > 3:
            continue  # an empty region
        first = 0 if p % 2 else frames // 2  # some regions only in later frames
        for t in range(first, frames):
            r, c = rng.integers(0, rows // 2), rng.integers(0, cols // 2)
            masks[p, t, r:r + rows // 2 + 1, c:c + cols // 2 + 1] = True
    masks[0] = ~masks[1:].any(0)
    return masks


@torch.no_grad()
def test_one_prompt_covering_the_frame_is_stock_cogvideox(components):
    tr = components.transformer
    kwargs, grid = inputs(components, prompts=1)
    stock = tr(**kwargs).sample
    for implementation in ("fast", "dense"):
        with SR3AIController(tr, implementation) as controller:
            controller.set_regions(RegionLayout.from_masks(np.ones((1, *grid), dtype=bool), tr.config.max_text_seq_length))
            torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=1e-5, atol=1e-5)
    # detach restored the stock model
    assert all(type(p) is CogVideoXAttnProcessor2_0 for p in tr.attn_processors.values())
    assert type(tr.patch_embed) is CogVideoXPatchEmbed
    torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("prompts", [3, 5])
def test_fast_equals_dense_through_the_transformer(components, prompts):
    tr = components.transformer
    kwargs, grid = inputs(components, prompts, seed=prompts)
    layout = RegionLayout.from_masks(overlapping_masks(prompts, grid, seed=prompts), tr.config.max_text_seq_length)
    assert any(len(members) > 1 for members, _ in layout.cover_classes().spans)  # overlaps present
    outputs = {}
    # the reference: dense mask, video tokens in natural order all the way
    for implementation, reorder in (("fast", True), ("fast", False), ("dense", False)):
        with SR3AIController(tr, implementation, reorder_tokens=reorder) as controller:
            controller.set_regions(layout)
            assert (controller.layout is not layout) == reorder
            assert controller.layout.cover_classes().identity == reorder  # class order: slices, no gathers
            outputs[implementation, reorder] = tr(**kwargs).sample
    torch.testing.assert_close(outputs["fast", True], outputs["dense", False], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["fast", False], outputs["dense", False], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_other_resolutions_and_frame_counts(components):
    """Not tied to the model's sample size: 2 latent frames of 12 x 8 (a portrait 96 x 64 video)."""
    tr = components.transformer
    L = tr.config.max_text_seq_length
    kwargs, grid = inputs(components, prompts=1, size=(2, 12, 8))
    stock = tr(**kwargs).sample
    with SR3AIController(tr) as controller:
        controller.set_regions(RegionLayout.from_masks(np.ones((1, *grid), dtype=bool), L))
        torch.testing.assert_close(tr(**kwargs).sample, stock, rtol=1e-5, atol=1e-5)
    kwargs, grid = inputs(components, prompts=3, size=(2, 12, 8))
    layout = RegionLayout.from_masks(overlapping_masks(3, grid, seed=3), L)
    outputs = []
    for implementation, reorder in (("fast", True), ("dense", False)):
        with SR3AIController(tr, implementation, reorder_tokens=reorder) as controller:
            controller.set_regions(layout)
            outputs.append(tr(**kwargs).sample)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_regions_change_the_output_only_through_attention_rules(components):
    """Two prompts with different regions differ from the same two prompts with swapped regions."""
    tr = components.transformer
    kwargs, grid = inputs(components, prompts=2)
    masks = np.zeros((2, *grid), dtype=bool)
    masks[1, :, :, : grid[2] // 2] = True
    masks[0] = ~masks[1]
    with SR3AIController(tr) as controller:
        controller.set_regions(RegionLayout.from_masks(masks, tr.config.max_text_seq_length))
        a = tr(**kwargs).sample
        controller.set_regions(RegionLayout.from_masks(masks[::-1].copy(), tr.config.max_text_seq_length))
        b = tr(**kwargs).sample
    assert not torch.allclose(a, b, atol=1e-4)


@torch.no_grad()
def test_multi_prompt_patch_embedding_gives_every_prompt_the_text_position():
    tr = build_tiny("2b").transformer
    kwargs, _ = inputs(build_tiny("2b"), prompts=3)
    text, latents = kwargs["encoder_hidden_states"], kwargs["hidden_states"]
    L = tr.config.max_text_seq_length
    stock = [tr.patch_embed(text[:, p * L:(p + 1) * L], latents) for p in range(3)]
    tr.patch_embed.__class__ = MultiPromptPatchEmbed
    try:
        joint = tr.patch_embed(text, latents)
    finally:
        tr.patch_embed.__class__ = CogVideoXPatchEmbed
    expected = torch.cat([s[:, :L] for s in stock] + [stock[0][:, L:]], 1)
    torch.testing.assert_close(joint, expected)
    with pytest.raises(RegionLayoutError, match="whole number of prompts"):
        tr.patch_embed.__class__ = MultiPromptPatchEmbed
        try:
            tr.patch_embed(text[:, :-1], latents)
        finally:
            tr.patch_embed.__class__ = CogVideoXPatchEmbed


@torch.no_grad()
def test_calls_that_do_not_match_the_regions_are_clear_errors(components):
    tr = components.transformer
    kwargs, grid = inputs(components, prompts=2)
    with SR3AIController(tr) as controller:
        with pytest.raises(RegionLayoutError, match="no regions are set"):
            tr(**kwargs)
        controller.set_regions(RegionLayout.from_masks(np.ones((3, *grid), dtype=bool), tr.config.max_text_seq_length))
        with pytest.raises(RegionLayoutError, match="regions were set for 3 prompts"):
            tr(**kwargs)


@torch.no_grad()
def test_stock_pipeline_with_cfg_runs_sr3ai_and_matches_dense(components):
    """CogVideoXPipeline, unchanged, drives SR3AI: P prompts' embeddings in, an empty prompt per region for CFG."""
    tr = components.transformer
    pipe = CogVideoXPipeline(**components.pipeline_kwargs())
    prompts = ["a forest at night", "a red fox running", "an owl flying"]
    L = tr.config.max_text_seq_length
    text = encode_region_prompts(components.tokenizer, components.text_encoder, prompts, L)
    empty = encode_region_prompts(components.tokenizer, components.text_encoder, [""] * len(prompts), L)
    for p, prompt in enumerate(prompts):  # each prompt encoded exactly as the stock pipeline encodes one
        torch.testing.assert_close(text[:, p * L:(p + 1) * L], pipe._get_t5_prompt_embeds(prompt, max_sequence_length=L))
    video = components.video_defaults
    _, grid = inputs(components, 1)
    layout = RegionLayout.from_masks(overlapping_masks(3, grid, seed=7), L)
    latents = {}
    for implementation in ("fast", "dense"):
        with SR3AIController(tr, implementation) as controller:
            controller.set_regions(layout)
            latents[implementation] = pipe(
                prompt_embeds=text, negative_prompt_embeds=empty, guidance_scale=6.0, num_inference_steps=2,
                height=video["height"], width=video["width"], num_frames=video["num_frames"], output_type="latent",
                generator=torch.Generator().manual_seed(0),
            ).frames
    assert torch.isfinite(latents["fast"]).all()
    torch.testing.assert_close(latents["fast"], latents["dense"], rtol=1e-4, atol=1e-4)
