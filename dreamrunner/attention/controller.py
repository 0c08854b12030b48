"""`SR3AIController`: attach SR3AI region attention and region-gated LoRAs to a diffusers CogVideoX transformer.

    controller = SR3AIController(transformer).attach()        # stock processors saved, SR3AI installed
    controller.set_regions(plan)                              # RegionPlan of the scene (masks built once)
    controller.set_loras([GatedLoRA(weights, prompts=(1,), scale=1.0), ...])
    text = encode_region_prompts(tokenizer, text_encoder, plan.prompts, L)     # [1, P*L, D]
    uncond = encode_region_prompts(tokenizer, text_encoder, [""] * P, L)       # CFG: an empty prompt per region
    transformer(hidden_states=latents, encoder_hidden_states=torch.cat([uncond, text]), timestep=t)
    controller.detach()                                       # stock processors, patch embedding, no hooks

The processors and LoRA hooks hold a reference to one `SR3AIContext`; the controller swaps the scene's
regions and LoRAs in it between calls, so nothing is reinstalled per scene and nothing is global.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed

from ..regions import RegionPlan
from .layout import RegionLayout, RegionLayoutError
from .lora import GatedLinearHook, GatedLoRA, LoRAFileError, one_transformer_refusal
from .processor import MultiPromptPatchEmbed, SR3AIAttnProcessor


class SR3AIContext:
    """The current scene's regions and gated LoRAs, read by every installed processor and hook.

    With `reorder_tokens` (set by the controller when it owns the patch embedding) the transformer blocks
    see the video tokens in cover-class order (`RegionLayout.cover_classes`): every block is per-token
    except attention, so the order only has to be applied once after the patch embedding and undone once
    before the output head, and each attention call then works on contiguous slices with no gathers.
    `layout` is the layout in the order the blocks see.

    Under context parallelism (`shard`, set by the Wan controller on a transformer with diffusers' parallel
    config) each rank's blocks see one contiguous run of that order, `local` = [start, stop) of the video
    tokens; `layout` is then the layout of those tokens only (`RegionLayout.local`), so the attention and the
    LoRA gates of a rank work on its tokens as they would on a whole sequence.
    """

    def __init__(self, backends: tuple[str, ...] | None = None):
        self.backends = backends
        self.reorder_tokens = False
        self.loras: list[GatedLoRA] = []
        self.layout: RegionLayout | None = None  # as the blocks see it
        self._natural: RegionLayout | None = None  # as set, video tokens in (t, row, col) order
        self._order = self._inverse = None
        self.shard = None  # context parallelism: number of video tokens -> this rank's slice of them
        self.local: slice | None = None  # this rank's video tokens (positions in the order the blocks see)
        self._gates: dict = {}

    def set(self, layout: RegionLayout | None = None, loras: list[GatedLoRA] | None = None) -> None:
        if layout is not None:
            self._natural = layout
        if loras is not None:
            self.loras = list(loras)
        self.refresh()

    def refresh(self) -> None:
        layout, self._order, self._inverse = self._natural, None, None
        if layout is not None and self.reorder_tokens:
            classes = layout.cover_classes()
            if not classes.identity:
                self._order, self._inverse = classes.order, torch.argsort(classes.order)
                layout = layout.reordered(classes.order)
        self.local = None
        if layout is not None and self.shard is not None:
            self.local = self.shard(layout.num_video_tokens)
            layout = layout.local(self.local)
        self.layout = layout
        self._gates.clear()

    def _on(self, device) -> None:
        if self._natural is not None and self._natural.device != torch.device(device):
            self._natural = self._natural.to(device)
            self.refresh()

    def layout_for(self, device, text_length: int, video_length: int) -> RegionLayout:
        if self.layout is None:
            raise RegionLayoutError("SR3AI is attached but no regions are set: call set_regions(plan) first")
        self.layout.check(text_length, video_length)
        self._on(device)
        return self.layout

    def token_order_for(self, device) -> torch.Tensor | None:
        """Video token at each position the blocks see (None: natural order)."""
        self._on(device)
        return self._order

    def restore_order_for(self, device) -> torch.Tensor | None:
        self._on(device)
        return self._inverse

    def reorder_rotary(self, rotary):
        """5B's rotary (cos, sin) tables, per video token, in the order the blocks see."""
        if self._order is None:
            return rotary
        return tuple(table.index_select(0, self._order.to(table.device)) for table in rotary)

    def lora_gate(self, hook: GatedLinearHook, sequence_length: int, device, dtype) -> GateRows:
        """The hook's gate: each LoRA's token mask times its scale, repeated over its rank, on the rows (tokens)
        some LoRA of the hook reaches; cached per LoRA set."""
        key = (hook.lora_ids, hook.ranks, hook.scalings, device, dtype)
        gate = self._gates.get(key)
        if gate is None:
            if self.layout is None:
                raise RegionLayoutError("region-gated LoRAs need regions: call set_regions(plan) first")
            text_length = self.layout.text_length
            layout = self.layout_for(device, text_length, sequence_length - text_length)
            columns = []
            for lora_id, rank, scaling in zip(hook.lora_ids, hook.ranks, hook.scalings):
                lora = self.loras[lora_id]
                mask = layout.token_mask(lora.prompts).to(dtype) * (lora.scale * scaling)
                columns.append(mask.unsqueeze(1).expand(-1, rank))
            gate = self._gates[key] = GateRows.of(torch.cat(columns, 1).to(device))
        return gate


class GateRows(NamedTuple):
    """A gated linear's gate [S, sum r] cut to the rows from the first to the last token any of its LoRAs
    reaches: the LoRA matmuls then run on those rows only (the blocks see the video tokens grouped by region,
    `SR3AIContext`, so a prior's tokens are close together). Rows in between that no LoRA reaches keep a zero
    gate, so the result is the same as over all rows."""

    start: int
    stop: int
    gate: torch.Tensor  # [stop - start, sum r]

    @classmethod
    def of(cls, gate: torch.Tensor) -> GateRows:
        reached = gate.ne(0).any(1).nonzero()
        if reached.numel() == 0:
            return cls(0, 0, gate[:0])
        start, stop = int(reached[0]), int(reached[-1]) + 1
        return cls(start, stop, gate[start:stop].contiguous())


class SR3AIController:
    """Installs SR3AI on a `CogVideoXTransformer3DModel` (2B or 5B config, any resolution / frame count).

    Args:
        transformer: the diffusers model; its own modules are used, nothing is copied.
        implementation: "fast" (exact log-sum-exp decomposition, flash kernels) or "dense" (S x S mask reference).
        backends: optional order of log-sum-exp kernels for "fast" on CUDA (see `functional.CUDA_LSE_BACKENDS`).
        reorder_tokens: run the blocks with video tokens in cover-class order (see `SR3AIContext`); the
            output is the same, False only costs a gather and a scatter per attention call.
    """

    def __init__(self, transformer, implementation: str = "fast", backends: tuple[str, ...] | None = None,
                 reorder_tokens: bool = True):
        self.transformer = transformer
        self.implementation = implementation
        self.reorder_tokens = reorder_tokens
        self.context = SR3AIContext(backends)
        self._stock_processors = None
        self._stock_patch_class = None
        self._restore_hook = None
        self._hooks: list[GatedLinearHook] = []

    @property
    def attached(self) -> bool:
        return self._stock_processors is not None

    @property
    def layout(self) -> RegionLayout | None:
        """The regions in the token order the blocks see (token masks of hooks and processors use it)."""
        return self.context.layout

    @property
    def text_tokens(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def attach(self) -> SR3AIController:
        if self.attached:
            return self
        self._stock_processors = self.transformer.attn_processors
        self.transformer.set_attn_processor(
            {name: SR3AIAttnProcessor(self.context, self.implementation) for name in self._stock_processors}
        )
        patch_embed = self.transformer.patch_embed
        if type(patch_embed) is CogVideoXPatchEmbed:
            self._stock_patch_class = CogVideoXPatchEmbed
            patch_embed.__class__ = MultiPromptPatchEmbed
            patch_embed.sr3ai_context = self.context
            if self.reorder_tokens:
                self._restore_hook = self.transformer.proj_out.register_forward_hook(self._restore_token_order)
                self.context.reorder_tokens = True
                self.context.refresh()
        return self

    def _restore_token_order(self, module, args, output):
        inverse = self.context.restore_order_for(output.device)
        return output if inverse is None else output.index_select(1, inverse)

    def detach(self) -> None:
        """Back to the stock model: its processors, its patch embedding, no LoRA hooks."""
        self._remove_hooks()
        if not self.attached:
            return
        self.transformer.set_attn_processor(self._stock_processors)
        if self._stock_patch_class is not None:
            patch_embed = self.transformer.patch_embed
            patch_embed.__class__ = self._stock_patch_class
            del patch_embed.sr3ai_context
            if self._restore_hook is not None:
                self._restore_hook.remove()
            self.context.reorder_tokens = False
            self.context.refresh()
        self._stock_processors = self._stock_patch_class = self._restore_hook = None

    def __enter__(self) -> SR3AIController:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def set_regions(self, regions: RegionPlan | RegionLayout) -> RegionLayout:
        """The scene's regions for every following call (a CFG batch shares them)."""
        if isinstance(regions, RegionPlan):
            regions = RegionLayout.from_plan(regions, self.text_tokens, self.transformer.device)
        elif regions.text_tokens != self.text_tokens:
            raise RegionLayoutError(f"layout has {regions.text_tokens} text tokens per prompt, model {self.text_tokens}")
        self.context.set(layout=regions.to(self.transformer.device))
        return regions

    def set_loras(self, loras: list[GatedLoRA]) -> None:
        """Replace the active gated LoRAs (an empty list removes them). Weights move to the model's device/dtype.

        Everything is checked before anything changes: on an error the previous LoRAs stay active."""
        blocks = transformer_blocks(self.transformer)
        for lora in loras:
            if lora.low_noise is not None:  # WanExpertsSR3AIController gives each expert its own half
                raise one_transformer_refusal(lora.weights.name)
            if self.context.layout is not None:
                self.context.layout.token_mask(lora.prompts)  # checks the prompt indices
            if max(lora.weights.blocks) >= len(blocks):
                raise LoRAFileError(f"{lora.weights.name}: block {max(lora.weights.blocks)} but the model has {len(blocks)}")
        targets: dict[str, list[int]] = {}
        for lora_id, lora in enumerate(loras):
            for module in lora.weights.modules:
                targets.setdefault(module, []).append(lora_id)
        hooks = []
        for module, lora_ids in targets.items():
            try:
                linear = self.transformer.get_submodule(module)
            except AttributeError:
                linear = None
            model = type(self.transformer).__name__
            if not isinstance(linear, torch.nn.Linear):
                raise LoRAFileError(f"{loras[lora_ids[0]].weights.name}: {module} is not a linear layer of this "
                                    f"{model}: the prior was trained on another model; train it again with the "
                                    "story's backend")
            factors = [loras[i].weights.modules[module] for i in lora_ids]
            options = dict(device=linear.weight.device, dtype=linear.weight.dtype)
            down = torch.cat([a for a, _, _ in factors], 0).to(**options)
            up = torch.cat([b for _, b, _ in factors], 1).to(**options)
            if down.shape[1] != linear.in_features or up.shape[0] != linear.out_features:
                raise LoRAFileError(f"{loras[lora_ids[0]].weights.name}: {module} LoRA shapes do not fit this {model}: "
                                    "the prior was trained on another model size; train it again with the story's "
                                    "backend")
            hooks.append((linear, GatedLinearHook(self.context, module, tuple(lora_ids), down, up,
                                                  tuple(a.shape[0] for a, _, _ in factors),
                                                  tuple(s for _, _, s in factors))))
        self._remove_hooks()
        for linear, hook in hooks:
            hook.handle = linear.register_forward_hook(hook)
            self._hooks.append(hook)
        self.context.set(loras=loras)

    def lora_modules(self) -> dict[str, tuple[str, ...]]:
        """Which linears carry which active LoRAs (by name): {"transformer_blocks.0.attn1.to_q": ("cat", ...)}."""
        return {hook.module: tuple(self.context.loras[i].weights.name for i in hook.lora_ids) for hook in self._hooks}

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.handle.remove()
        self._hooks = []
        self.context.set(loras=[])


def transformer_blocks(transformer) -> torch.nn.ModuleList:
    """The block list of a diffusers video transformer: CogVideoX's `transformer_blocks`, Wan's `blocks`."""
    blocks = getattr(transformer, "transformer_blocks", None)
    return blocks if blocks is not None else transformer.blocks


@torch.no_grad()
def encode_region_prompts(tokenizer, text_encoder, prompts, max_sequence_length: int, device=None,
                          dtype=None) -> torch.Tensor:
    """Encode each prompt on its own to `max_sequence_length` T5 tokens, as CogVideoXPipeline does for one
    prompt, and lay them side by side: [1, P * L, D], prompt 0 (background) first."""
    prompts = list(prompts)
    if not prompts:
        raise RegionLayoutError("no prompts to encode")
    device = device or text_encoder.device
    ids = tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt").input_ids
    embeds = text_encoder(ids.to(device))[0]
    return embeds.to(dtype=dtype or text_encoder.dtype, device=device).reshape(1, -1, embeds.shape[-1])
