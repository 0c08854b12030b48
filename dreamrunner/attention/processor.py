"""The diffusers-side pieces of SR3AI: the attention processor and the multi-prompt patch embedding.

CogVideoX's transformer forward, its blocks and their adaLN text branch (`CogVideoXLayerNormZero`, one
shift/scale/gate for all text tokens) already work for any text length, and 5B's and 1.5's rotary embedding
is applied to video tokens only, so a joint sequence of P*L text tokens needs only two changes (1.5's
temporal patches, its linear patch projection and the I2V model's ofs embedding change neither: they act
on the video tokens before the blocks or on the timestep embedding):
- attention: `SR3AIAttnProcessor` replaces `CogVideoXAttnProcessor2_0` in every block;
- 2B's sinusoidal positions: `CogVideoXPatchEmbed` adds a joint position table sized for one prompt's L
  text tokens (zeros there, or learned values); `MultiPromptPatchEmbed` gives each prompt that same text
  part, so with one prompt it is the stock module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed, apply_rotary_emb

from .functional import sr3ai_attention_dense, sr3ai_attention_fast

if TYPE_CHECKING:
    from .controller import SR3AIContext

IMPLEMENTATIONS = ("fast", "dense")


class SR3AIAttnProcessor:
    """CogVideoXAttnProcessor2_0 with SR3AI region attention over the joint [P*L text | video] sequence.

    It reads the scene's regions from a shared `SR3AIContext` (set by `SR3AIController.set_regions`), so
    the same installed processors serve every scene. `implementation`: "fast" (exact, log-sum-exp merge)
    or "dense" (reference, S x S boolean mask).
    """

    def __init__(self, context: SR3AIContext, implementation: str = "fast"):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.context = context
        self.implementation = implementation

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        if attention_mask is not None:
            raise ValueError("SR3AI attention builds its own mask from the regions; attention_mask must be None")
        text_length = encoder_hidden_states.size(1)
        layout = self.context.layout_for(hidden_states.device, text_length, hidden_states.size(1))
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size = hidden_states.shape[0]

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:  # 5B: rotary positions on video tokens only, as stock
            image_rotary_emb = self.context.reorder_rotary(image_rotary_emb)
            query[:, :, text_length:] = apply_rotary_emb(query[:, :, text_length:], image_rotary_emb)
            key[:, :, text_length:] = apply_rotary_emb(key[:, :, text_length:], image_rotary_emb)

        if self.implementation == "fast":
            hidden_states = sr3ai_attention_fast(query, key, value, layout, self.context.backends)
        else:
            hidden_states = sr3ai_attention_dense(query, key, value, layout)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_length, hidden_states.size(1) - text_length], dim=1
        )
        return hidden_states, encoder_hidden_states


class MultiPromptPatchEmbed(CogVideoXPatchEmbed):
    """CogVideoXPatchEmbed for P prompts of `max_text_seq_length` tokens each.

    Installed by switching the class of the model's own `patch_embed` (`SR3AIController.attach`), so its
    weights, buffers and state-dict keys stay as they are; `detach` switches it back. With an
    `sr3ai_context` attribute (set by the controller) it also puts the video tokens in the context's
    token order.
    """

    def forward(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        embeds = self._embed(text_embeds, image_embeds)
        # SR3AI runs the blocks with video tokens in cover-class order (see SR3AIController).
        context = getattr(self, "sr3ai_context", None)
        if context is None:
            return embeds
        text_length = text_embeds.shape[1]
        # The regions must be for this call's tokens before their order is applied: a plan on another grid
        # (e.g. latent frames where CogVideoX 1.5 has token frames) is a named error, not an index crash.
        context.layout_for(embeds.device, text_length, embeds.shape[1] - text_length)
        order = context.token_order_for(embeds.device)
        if order is None:
            return embeds
        return torch.cat([embeds[:, :text_length], embeds[:, text_length:].index_select(1, order)], 1)

    def _embed(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        L = self.max_text_seq_length
        if text_embeds.shape[1] == L or not (self.use_positional_embeddings or self.use_learned_positional_embeddings):
            return super().forward(text_embeds, image_embeds)
        if text_embeds.shape[1] % L:
            from .layout import RegionLayoutError

            raise RegionLayoutError(
                f"{text_embeds.shape[1]} text tokens is not a whole number of prompts of {L} tokens"
            )
        # Stock path for the first prompt and the video (positions at any resolution / frame count) ...
        first = super().forward(text_embeds[:, :L], image_embeds)
        # ... and the same text position part for every other prompt.
        text_position = self.pos_embedding[:, :L].to(first.dtype)
        rest = self.text_proj(text_embeds[:, L:]).unflatten(1, (-1, L)) + text_position.unsqueeze(1)
        return torch.cat([first[:, :L], rest.flatten(1, 2), first[:, L:]], dim=1)
