"""SR3AI on Wan 2.1 and 2.2 (diffusers `WanTransformer3DModel`): region-masked cross-attention and
region-gated LoRA.

Wan's blocks run self-attention over the video tokens (3D RoPE), then cross-attention from the video tokens to
the UMT5 text, then a feed-forward; text is never updated inside the blocks. So SR3AI on Wan is:
- self-attention unchanged: every video token attends to every video token (stock `WanAttnProcessor`);
- cross-attention: the text of all P region prompts is laid side by side, [1, P*L, D] (prompt 0 the
  background, each padded to L tokens as WanPipeline pads one prompt), and a video token attends to the L
  tokens of every prompt whose region covers it (`RegionLayout.dense_mask()[video, text]`);
- gated LoRAs act on the video tokens of their prompts' regions and, on the cross-attention key / value
  projections (which read text), on their prompts' text tokens.

    controller = WanSR3AIController(transformer, text_tokens=512).attach()
    controller.set_regions(plan)
    controller.set_loras([GatedLoRA(weights, prompts=(1,), scale=1.0)])
    text = encode_wan_region_prompts(pipeline, plan.prompts, 512)        # [1, P*L, D]
    transformer(hidden_states=latents, encoder_hidden_states=text, timestep=t)
    controller.detach()

The cross-attention is exact and costs what stock costs: video tokens are grouped by the set of prompts
covering them (`RegionLayout.cover_classes`) and each group runs one unmasked attention call over its prompts'
text keys through diffusers' `dispatch_attention_fn` (the backend the model is set to), so each video token
still meets L keys (2L in an overlap of two regions) and no [tokens x text] mask is built. As for CogVideoX, the
controller runs the blocks with the video tokens in group order (patch embedding, RoPE tables and output
projection are re-ordered once per call), so every group is a contiguous slice and nothing is gathered per
layer. With one prompt there is one group and one call: the stock computation.

Wan 2.2: TI2V-5B's per-token timesteps (WanPipeline's `expand_timesteps`) give per-token time embeddings
([B, N, D] and the blocks' [B, N, 6, D] modulation), which follow the token order like the RoPE tables. A14B's two
experts each get a controller (`WanExpertsSR3AIController`) holding the same regions and gated LoRAs, so a scene
is region-controlled on both sides of the boundary; a two-expert prior (`GatedLoRA.low_noise`) gives the high-noise
expert its high-noise LoRA and the low-noise expert its low-noise one, a one-file prior acts on both.

Context parallelism (diffusers' own: `WanTransformer3DModel._cp_plan`, enabled by
`dreamrunner.backends.parallel.enable_context_parallel`) splits the video tokens over the ranks at the first
block's input and the RoPE tables at the rope's output, and gathers them at the output projection. The controller
re-orders on the patch embedding's output, before that split, so each rank holds one contiguous run
[start, stop) of the group order; its cross-attention runs the groups cut to that run and its LoRA gates are cut
to it too (`SR3AIContext.local`). The text is not split: every rank holds all of it. Self-attention is diffusers'
Ulysses or ring through the stock processor.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import _get_qkv_projections

from .controller import GateRows, SR3AIContext, SR3AIController
from .layout import RegionLayout, RegionLayoutError

IMPLEMENTATIONS = ("fast", "dense")
# Linears of a Wan block whose input is the text (cross-attention key and value); every other one reads video.
TEXT_INPUT_MODULES = ("attn2.to_k", "attn2.to_v")


class WanSR3AIContext(SR3AIContext):
    """The scene's regions and gated LoRAs as Wan's processors and hooks read them.

    Wan's linears see one kind of token each: the cross-attention key / value projections read the P*L text
    tokens, every other linear the video tokens. A LoRA's gate is the text or the video part of its prompts'
    token mask (`RegionLayout.token_mask`), chosen by the hooked module's name.
    """

    def lora_gate(self, hook, sequence_length: int, device, dtype) -> GateRows:
        text = hook.module.endswith(TEXT_INPUT_MODULES)
        key = (hook.lora_ids, hook.ranks, hook.scalings, device, dtype, text)
        gate = self._gates.get(key)
        if gate is None:
            if self.layout is None:
                raise RegionLayoutError("region-gated LoRAs need regions: call set_regions(plan) first")
            self._on(device)
            layout = self.layout
            expected = layout.text_length if text else layout.num_video_tokens
            if sequence_length != expected:
                raise RegionLayoutError(f"{hook.module} got {sequence_length} tokens, but the regions were set for "
                                        f"{expected} {'text' if text else 'video'} tokens")
            part = slice(0, layout.text_length) if text else slice(layout.text_length, None)
            columns = []
            for lora_id, rank, scaling in zip(hook.lora_ids, hook.ranks, hook.scalings):
                lora = self.loras[lora_id]
                mask = layout.token_mask(lora.prompts)[part].to(dtype) * (lora.scale * scaling)
                columns.append(mask.unsqueeze(1).expand(-1, rank))
            gate = self._gates[key] = GateRows.of(torch.cat(columns, 1).to(device))
        return gate


def wan_cross_attention_dense(query, key, value, layout: RegionLayout) -> torch.Tensor:
    """Reference: [B, N, H, d] video queries over [B, P*L, H, d] text keys with the dense boolean mask
    [N, P*L] of the SR3AI rule (video token n sees prompt p's text iff p's region covers n). O(N * P*L)."""
    layout.check(key.shape[1], query.shape[1])
    mask = layout.dense_mask()[layout.text_length:, :layout.text_length].to(query.device)
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                         attn_mask=mask)
    return out.transpose(1, 2)


def wan_cross_attention_fast(query, key, value, layout: RegionLayout, backend=None) -> torch.Tensor:
    """Exact region cross-attention, one unmasked `dispatch_attention_fn` call per group of video tokens with
    the same covering prompts. [B, N, H, d] queries, [B, P*L, H, d] keys / values -> [B, N, H, d]."""
    layout.check(key.shape[1], query.shape[1])
    classes = layout.cover_classes()

    def attend(q, members):
        if len(members) == 1:
            text = layout.text_slice(members[0])
            k, v = key[:, text], value[:, text]
        else:
            index = classes.text_index[members]
            k, v = key.index_select(1, index), value.index_select(1, index)
        return dispatch_attention_fn(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, backend=backend)

    if len(classes.spans) == 1:  # one group (e.g. one full-frame prompt): the stock call
        return attend(query, classes.spans[0][0])
    if classes.identity:  # tokens already in group order (the controller's reordering): slices
        return torch.cat([attend(query[:, span], members) for members, span in classes.spans], 1)
    grouped = query.index_select(1, classes.order)
    out = torch.cat([attend(grouped[:, span], members) for members, span in classes.spans], 1)
    return out.index_select(1, torch.argsort(classes.order))


class WanSR3AICrossAttnProcessor:
    """WanAttnProcessor for the cross-attention (`attn2`) of a text-to-video Wan block, with region-masked text.

    `implementation`: "fast" (grouped, exact) or "dense" (reference mask). Image conditioning (I2V's added
    key / value projections) is not supported and is refused."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, context: WanSR3AIContext, implementation: str = "fast"):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.context = context
        self.implementation = implementation

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is not None:
            raise ValueError("SR3AI cross-attention builds its own mask from the regions; attention_mask must be None")
        if attn.add_k_proj is not None:
            raise RegionLayoutError("SR3AI on Wan supports text-to-video models only (no image conditioning)")
        layout = self.context.layout_for(hidden_states.device, encoder_hidden_states.size(1), hidden_states.size(1))
        query, key, value = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if self.implementation == "fast":
            hidden_states = wan_cross_attention_fast(query, key, value, layout, self._attention_backend)
        else:
            hidden_states = wan_cross_attention_dense(query, key, value, layout)
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        return attn.to_out[1](hidden_states)


class WanSR3AIController(SR3AIController):
    """Installs SR3AI on a `WanTransformer3DModel`: region cross-attention in every block's `attn2` (self-
    attention keeps the stock processor) and region-gated LoRAs (`set_loras`, shared with CogVideoX).

    Args:
        transformer: the diffusers model; its own modules are used, nothing is copied.
        text_tokens: L, tokens per prompt (WanPipeline's `max_sequence_length`, 512 for the checkpoints).
        implementation: "fast" or "dense" (see `WanSR3AICrossAttnProcessor`).
        reorder_tokens: run the blocks with the video tokens grouped by covering prompts (same output).
    """

    def __init__(self, transformer, text_tokens: int, implementation: str = "fast", reorder_tokens: bool = True):
        super().__init__(transformer, implementation, reorder_tokens=reorder_tokens)
        self.context = WanSR3AIContext()
        self._text_tokens = int(text_tokens)
        self._order_hooks = []

    @property
    def text_tokens(self) -> int:
        return self._text_tokens

    def attach(self) -> WanSR3AIController:
        if self.attached:
            return self
        stock = self.transformer.attn_processors
        self._stock_processors = stock
        from ..backends.parallel import context_parallel_config, local_tokens

        config = context_parallel_config(self.transformer)
        self.context.shard = None if config is None else functools.partial(local_tokens, config)
        self.transformer.set_attn_processor({
            name: WanSR3AICrossAttnProcessor(self.context, self.implementation) if ".attn2." in name else processor
            for name, processor in stock.items()})
        if self.reorder_tokens:
            # The blocks are per token except attention: order the tokens once on the way in (patch embedding
            # and the RoPE tables) and back once on the way out (output projection).
            self._order_hooks = [
                self.transformer.patch_embedding.register_forward_hook(self._order_patches),
                self.transformer.rope.register_forward_hook(self._order_rotary),
                self.transformer.condition_embedder.register_forward_hook(self._order_timesteps),
                self.transformer.proj_out.register_forward_hook(self._restore_token_order),
            ]
            self.context.reorder_tokens = True
        self.context.refresh()
        return self

    def _order_patches(self, module, args, output):
        order = self.context.token_order_for(output.device)
        return output if order is None else output.flatten(2).index_select(2, order).view_as(output)

    def _order_rotary(self, module, args, output):
        order = self.context.token_order_for(output[0].device)
        if order is None:  # natural order: a context-parallel split already gave this rank its own tokens
            return output
        if self.context.local is None:
            return tuple(table.index_select(1, order) for table in output)
        # Context parallelism: diffusers' hook wraps `rope.forward` and has split the tables in natural order
        # before this hook runs; the class's forward gives the whole tables, of which this rank takes its run
        # of the group order (the tokens its first block receives).
        whole = type(module).forward(module, *args)
        return tuple(table.index_select(1, order[self.context.local]) for table in whole)

    def _order_timesteps(self, module, args, output):
        # Per-token timesteps (Wan 2.2 TI2V, `timestep` [B, N]): time embedding [B, N, D] and its projection
        # [B, N, 6D] are per video token, so they take the blocks' token order; a scalar timestep's are [B, D].
        temb, projection, *rest = output
        order = self.context.token_order_for(temb.device) if temb.ndim == 3 else None
        if order is None:
            return output
        return (temb.index_select(1, order), projection.index_select(1, order), *rest)

    def detach(self) -> None:
        """Back to the stock model: its processors, no hooks."""
        self._remove_hooks()
        if not self.attached:
            return
        self.transformer.set_attn_processor(self._stock_processors)
        for hook in self._order_hooks:
            hook.remove()
        self._order_hooks = []
        self.context.reorder_tokens = False
        self.context.shard = None
        self.context.refresh()
        self._stock_processors = None


class WanExpertsSR3AIController:
    """SR3AI on every expert of a Wan 2.2 A14B pipeline (high-noise `transformer`, low-noise `transformer_2`): one
    `WanSR3AIController` per expert, all given the same regions and gated LoRAs, so whichever expert a step runs
    is region-controlled. A one-file prior's LoRA factors act on both experts; a two-expert prior's high-noise
    factors on `transformer` and its low-noise ones on `transformer_2` (see docs/sr3ai.md, "Wan 2.2").

    Args:
        transformers: the experts, in the pipeline's order; text_tokens, implementation, reorder_tokens: as for
            `WanSR3AIController`.
    """

    def __init__(self, transformers, text_tokens: int, implementation: str = "fast", reorder_tokens: bool = True):
        self.controllers = [WanSR3AIController(transformer, text_tokens, implementation, reorder_tokens)
                            for transformer in transformers]

    @property
    def attached(self) -> bool:
        return self.controllers[0].attached

    @property
    def layout(self) -> RegionLayout | None:
        return self.controllers[0].layout

    def attach(self) -> WanExpertsSR3AIController:
        for controller in self.controllers:
            controller.attach()
        return self

    def detach(self) -> None:
        for controller in self.controllers:
            controller.detach()

    def __enter__(self) -> WanExpertsSR3AIController:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def set_regions(self, regions) -> RegionLayout:
        return [controller.set_regions(regions) for controller in self.controllers][0]

    def set_loras(self, loras) -> None:
        """The gated LoRAs on every expert, each expert its own half of a two-expert prior (`GatedLoRA.on_expert`).
        Checked on each before it changes; should a later expert refuse them, the earlier ones go back to their
        previous LoRAs."""
        previous = [list(controller.context.loras) for controller in self.controllers]
        done = []
        try:
            for index, controller in enumerate(self.controllers):
                controller.set_loras([lora.on_expert(low_noise=index > 0) for lora in loras])
                done.append(controller)
        except Exception:
            for controller, loras_before in zip(done, previous):
                controller.set_loras(loras_before)
            raise

    def lora_modules(self) -> dict[str, tuple[str, ...]]:
        """Which linears of which expert carry which LoRAs: {"transformer_2.blocks.1.attn1.to_q": ("cat",), ...}."""
        names = ("transformer", "transformer_2")
        return {f"{names[i]}.{module}": loras for i, controller in enumerate(self.controllers)
                for module, loras in controller.lora_modules().items()}


@torch.no_grad()
def encode_wan_region_prompts(pipeline, prompts, max_sequence_length: int, device=None, dtype=None) -> torch.Tensor:
    """Encode each prompt on its own as WanPipeline encodes one prompt (cleaned, UMT5, real tokens then zero
    padding to `max_sequence_length`) and lay them side by side: [1, P * L, D], prompt 0 (background) first."""
    prompts = list(prompts)
    if not prompts:
        raise RegionLayoutError("no prompts to encode")
    embeds = pipeline._get_t5_prompt_embeds(prompts, max_sequence_length=max_sequence_length, device=device,
                                            dtype=dtype)
    return embeds.reshape(1, -1, embeds.shape[-1])


__all__ = ["WanExpertsSR3AIController", "WanSR3AIContext", "WanSR3AIController", "WanSR3AICrossAttnProcessor",
           "encode_wan_region_prompts", "wan_cross_attention_dense", "wan_cross_attention_fast"]
