"""SR3AI attention as functions of (query, key, value, layout): a dense-mask reference and a fast exact form.

Both compute, for heads-first tensors [B, H, S, d] over the joint sequence `[text_0 .. text_{P-1} | video]`,
softmax attention under the boolean rule of ../shared/design.md:
  text_i -> text_i and the video tokens of region_i;  video -> all video and text_i of every covering prompt.

The fast form never builds the S x S mask. A video query's softmax runs over [all video keys] plus [the text
keys of each prompt covering it]; each part is computed on its own, returning its log-sum-exp, and the parts
are merged exactly: out = sum_j exp(lse_j - lse) * out_j with lse = logsumexp_j(lse_j). The big part (all
video queries x all video keys) is one unmasked flash-kernel call, as in stock attention; the text parts are
small (each video token x the L keys of each prompt covering it, one call per distinct set of covering
prompts). Text queries of prompt i attend [text_i, the video keys of region_i], merged the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import RegionLayout

# Kernels that return the log-sum-exp alongside the output, tried in this order on CUDA. Measured on an
# H100 by bench/bench_sr3ai.py (docs/benchmarks.md); the order is only a preference, any one is exact.
CUDA_LSE_BACKENDS = ("cudnn", "flash", "efficient")
# A prompt whose region spans more cover classes than this gathers its keys instead of one call per class:
# many tiny kernel calls cost more than one gather.
MAX_MERGED_SPANS = 2


def _lse_cudnn(q, k, v, scale):
    out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, False, False, scale=scale)
    return out[0], out[1]


def _lse_flash(q, k, v, scale):
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    return out[0], out[1]


def _lse_efficient(q, k, v, scale):
    out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)
    return out[0], out[1]


def _lse_cpu(q, k, v, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)


def _lse_math(q, k, v, scale):
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    lse = scores.logsumexp(-1)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v.float())
    return out.to(q.dtype), lse


_KERNELS = {"cudnn": _lse_cudnn, "flash": _lse_flash, "efficient": _lse_efficient, "cpu": _lse_cpu,
            "math": _lse_math}


def attention_with_lse(q, k, v, backends: tuple[str, ...] | None = None, scale: float | None = None):
    """Unmasked softmax attention returning (out [B, H, M, d] in q's dtype, lse [B, H, M] float32).

    `torch.nn.functional.scaled_dot_product_attention` does not return the log-sum-exp, so this calls the
    aten kernels that do, falling back in order when one rejects the inputs (dtype, head size, device),
    and to a plain matmul form where no kernel exists.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if backends is None:
        backends = CUDA_LSE_BACKENDS if q.is_cuda else ("cpu",) if q.device.type == "cpu" else ()
    M = q.shape[-2]
    if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] % 8 or q.shape[-1] > 128:
        # The cuDNN and flash kernels take half precision only, and called directly they do not all
        # check it (cuDNN returned NaN for float32 on an H100): keep them to what they support.
        backends = tuple(name for name in backends if name not in ("cudnn", "flash"))
    for name in backends:
        try:
            out, lse = _KERNELS[name](q, k, v, scale)
        except (RuntimeError, NotImplementedError):
            continue
        # Some kernels pad the query axis of the lse or add a trailing unit axis.
        return out, lse.reshape(*lse.shape[:2], -1)[..., :M].float()
    return _lse_math(q, k, v, scale)


def sr3ai_attention_dense(q, k, v, layout: RegionLayout) -> torch.Tensor:
    """Reference: `scaled_dot_product_attention` with the dense [S, S] boolean mask (what the paper's code does)."""
    layout.check(q.shape[-2] - layout.num_video_tokens, layout.num_video_tokens)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.dense_mask().to(q.device))


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[:, :, index] for [B, H, S, d], copying whole token rows when the memory layout allows it."""
    B, H, S, d = x.shape
    if x.transpose(1, 2).is_contiguous():  # [B, S, H, d] in memory, as projections come out
        return x.transpose(1, 2).reshape(B, S, H * d).index_select(1, index).view(B, -1, H, d).transpose(1, 2)
    if x.is_contiguous():  # [B, H, S, d] in memory, e.g. after the q/k layer norms
        return x.reshape(B * H, S, d).index_select(1, index).view(B, H, -1, d)
    return x.index_select(2, index)


def _merge(parts) -> torch.Tensor:
    """Exact softmax over the union of disjoint key sets from per-part (out, lse): weights exp(lse_j - lse)."""
    if len(parts) == 1:
        return parts[0][0]
    lse = torch.logsumexp(torch.stack([l for _, l in parts]), 0)
    merged = sum(o.float() * torch.exp(l - lse).unsqueeze(-1) for o, l in parts)
    return merged.to(parts[0][0].dtype)


def sr3ai_attention_fast(q, k, v, layout: RegionLayout, backends: tuple[str, ...] | None = None) -> torch.Tensor:
    """Exact SR3AI attention without an S x S mask (see the module docstring). Returns [B, H, S, d].

    Video tokens are first put in cover-class order (`RegionLayout.cover_classes`), so every per-prompt
    piece is a contiguous slice: one gather of q, k and v in, one scatter of the output back. Both are
    skipped when the tokens already come in that order, as `SR3AIController` arranges for the whole
    transformer (`RegionLayout.reordered`). The result is
    laid out [B, S, H, d] in memory (as flash kernels return it), so the processor's transpose back to
    [B, S, H * d] is free.
    """
    T = layout.text_length
    layout.check(T, q.shape[-2] - T)
    B, H, S, d = q.shape
    classes = layout.cover_classes()
    if classes.identity:
        qv, kv, vv = q[:, :, T:], k[:, :, T:], v[:, :, T:]
    else:
        joint = classes.order + T
        qv, kv, vv = (gather_tokens(x, joint) for x in (q, k, v))
    out = q.new_empty(B, S, H, d).transpose(1, 2)

    # Video queries: all video keys in one unmasked kernel call (key order does not matter) ...
    video_out, video_lse = attention_with_lse(qv, kv, vv, backends)
    target = out[:, :, T:] if classes.identity else video_out  # where the merged video rows go
    # ... merged with the text keys of their covering prompts, one small call per class. The text part's
    # share of the softmax mass is sigmoid(lse_text - lse_video).
    for members, span in classes.spans:
        if len(members) == 1:
            text = layout.text_slice(members[0])
            keys, values = k[:, :, text], v[:, :, text]
        else:
            keys, values = gather_tokens(k, classes.text_index[members]), gather_tokens(v, classes.text_index[members])
        o, lse = attention_with_lse(qv[:, :, span], keys, values, backends)
        share = torch.sigmoid(lse - video_lse[:, :, span]).unsqueeze(-1).to(q.dtype)
        torch.lerp(video_out[:, :, span], o, share, out=target[:, :, span])
    if not classes.identity:
        out.transpose(1, 2).view(B, S, H * d)[:, joint] = video_out.transpose(1, 2).reshape(B, -1, H * d)

    # Text queries of prompt i: its own text keys and the video keys of its region, either class by class
    # (slices, merged by log-sum-exp) or, when the region spans many classes, gathered into one call.
    for p in range(layout.num_prompts):
        text = layout.text_slice(p)
        query = q[:, :, text]
        spans = classes.spans_of(p)
        if len(spans) <= MAX_MERGED_SPANS:
            parts = [attention_with_lse(query, k[:, :, text], v[:, :, text], backends)]
            parts += [attention_with_lse(query, kv[:, :, span], vv[:, :, span], backends) for span in spans]
            out[:, :, text] = _merge(parts)
        else:
            index = layout.text_key_index(p)
            out[:, :, text] = F.scaled_dot_product_attention(query, gather_tokens(k, index), gather_tokens(v, index))
    return out
