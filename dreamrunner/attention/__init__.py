"""SR3AI: spatial-temporal region-based 3D attention and region-gated LoRA for CogVideoX (diffusers).

Public API (docs/sr3ai.md):
- `SR3AIController(transformer, implementation="fast")`: `.attach()` / `.detach()` (or `with`), installs
  `SR3AIAttnProcessor` on every block and a multi-prompt patch embedding; `.set_regions(region_plan)` per scene;
  `.set_loras([GatedLoRA(...)])` for region-gated subject / motion priors.
- `encode_region_prompts(tokenizer, text_encoder, prompts, L)`: the [1, P*L, D] encoder_hidden_states.
- `LoRAWeights.load(path, kind)`, `GatedLoRA(weights, prompts, scale)`, `bound_prompts(plan, kind, target)`.
- `RegionLayout`: the torch index form of a `RegionPlan` (O(tokens)); `sr3ai_attention_fast` /
  `sr3ai_attention_dense`: the attention as functions, `attention_with_lse` their kernel helper.
- Wan 2.1: `dreamrunner.attention.wan` (`WanSR3AIController`, region cross-attention; imported on use).
"""

from .controller import SR3AIContext, SR3AIController, encode_region_prompts
from .functional import attention_with_lse, sr3ai_attention_dense, sr3ai_attention_fast
from .layout import RegionLayout, RegionLayoutError
from .lora import GatedLoRA, LoRAFileError, LoRAWeights, block_parity_ok, bound_prompts, read_lora_file
from .processor import MultiPromptPatchEmbed, SR3AIAttnProcessor

__all__ = [
    "GatedLoRA", "LoRAFileError", "LoRAWeights", "MultiPromptPatchEmbed", "RegionLayout", "RegionLayoutError",
    "SR3AIAttnProcessor", "SR3AIContext", "SR3AIController", "attention_with_lse", "block_parity_ok",
    "bound_prompts", "encode_region_prompts", "read_lora_file", "sr3ai_attention_dense", "sr3ai_attention_fast",
]
