"""A scene's region plan as the torch index structures SR3AI attention and gated LoRAs read.

Built once per scene (`RegionLayout.from_plan`), on the transformer's device. Memory is O(tokens): per
prompt the sorted indices of the video tokens its region covers, nothing of size tokens x tokens (the
dense mask exists only for the reference implementation and tests).

Joint sequence of one call: `[text(prompt_0) .. text(prompt_{P-1}) | video tokens]`, L text tokens per
prompt (prompt 0 = background), video token index `(t * rows + r) * cols + c`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DreamRunnerError
from ..regions import RegionPlan


class RegionLayoutError(DreamRunnerError, ValueError):
    """A region plan or mask that SR3AI cannot use, or a call whose sequence does not match it."""


@dataclass(frozen=True, eq=False)
class CoverClasses:
    """Video tokens grouped by the set of prompts covering them.

    `order` lists the video tokens class after class; in that order each class is one contiguous `span`,
    so the fast attention works on slices instead of scattered tokens. Every video token is in exactly one
    class; a token in an overlap is in the class of all its covering prompts.
    """

    order: torch.Tensor  # int64 [N]: video token indices, grouped by class
    identity: bool  # order is 0..N-1 (e.g. a single prompt): no permutation needed
    spans: tuple[tuple[tuple[int, ...], slice], ...]  # (covering prompts, positions in `order`)
    text_index: dict  # covering prompts (several) -> their text tokens' joint indices

    def spans_of(self, prompt: int) -> list[slice]:
        return [span for members, span in self.spans if prompt in members]


@dataclass(eq=False)
class RegionLayout:
    """Which video tokens each prompt's region covers, as index tensors.

    Attributes:
        text_tokens: L, tokens per prompt (the transformer's `max_text_seq_length`).
        video_index: per prompt, sorted int64 indices of the video tokens in its region (may be empty).
        grid: (frames, rows, cols) of video tokens, or None when built from flat masks.
    """

    text_tokens: int
    num_video_tokens: int
    video_index: tuple[torch.Tensor, ...]
    grid: tuple[int, int, int] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_masks(cls, masks, text_tokens: int, device=None) -> RegionLayout:
        """From bool masks [P, T, H, W] or [P, N] (numpy or torch). Every video token must be covered."""
        grid = tuple(int(s) for s in masks.shape[1:]) if masks.ndim == 4 else None
        masks = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks).reshape(masks.shape[0], -1)
        if masks.dtype != torch.bool:
            raise RegionLayoutError(f"region masks must be boolean, got {masks.dtype}")
        if masks.shape[0] < 1:
            raise RegionLayoutError("a region plan needs at least one prompt (the background)")
        if text_tokens < 1:
            raise RegionLayoutError(f"text_tokens must be positive, got {text_tokens}")
        uncovered = (~masks.any(0)).nonzero().flatten()
        if uncovered.numel():
            raise RegionLayoutError(
                f"{uncovered.numel()} video token(s) belong to no prompt (first: {int(uncovered[0])}); the "
                "background prompt must cover every token no entity covers"
            )
        video_index = tuple(m.nonzero().flatten().to(device) for m in masks)
        return cls(text_tokens=int(text_tokens), num_video_tokens=int(masks.shape[1]), video_index=video_index,
                   grid=grid)

    @classmethod
    def from_plan(cls, plan: RegionPlan, text_tokens: int, device=None) -> RegionLayout:
        """From `dreamrunner.regions.build_region_plan(scene, grid)`: checks every prompt has text."""
        for p, prompt in enumerate(plan.prompts):
            if not prompt or not prompt.strip():
                raise RegionLayoutError(f"prompt {p} of the region plan has no text")
        return cls.from_masks(plan.masks, text_tokens, device)

    @property
    def num_prompts(self) -> int:
        return len(self.video_index)

    @property
    def text_length(self) -> int:
        return self.num_prompts * self.text_tokens

    @property
    def sequence_length(self) -> int:
        return self.text_length + self.num_video_tokens

    @property
    def device(self) -> torch.device:
        return self.video_index[0].device

    def to(self, device) -> RegionLayout:
        device = torch.device(device)
        if self.device == device:
            return self
        return RegionLayout(self.text_tokens, self.num_video_tokens, tuple(i.to(device) for i in self.video_index),
                            self.grid)

    def check(self, text_length: int, video_length: int) -> None:
        if text_length != self.text_length or video_length != self.num_video_tokens:
            raise RegionLayoutError(
                f"the call has {text_length} text + {video_length} video tokens, but the regions were set for "
                f"{self.num_prompts} prompts x {self.text_tokens} text + {self.num_video_tokens} video tokens"
                + (f" (grid {self.grid})" if self.grid else "")
                + ("; build the region plan on the model's token grid (VideoSettings.token_grid: CogVideoX 1.5 "
                   "has one token frame per 2 latent frames)" if video_length != self.num_video_tokens else "")
            )

    def text_slice(self, prompt: int) -> slice:
        return slice(prompt * self.text_tokens, (prompt + 1) * self.text_tokens)

    def cover_classes(self) -> CoverClasses:
        """Video tokens grouped by the set of prompts covering them (see `CoverClasses`)."""
        if "classes" not in self._cache:
            P = self.num_prompts
            if P <= 62:  # the set of covering prompts as bits of one integer per token, prompt 0 highest
                code = torch.zeros(self.num_video_tokens, dtype=torch.int64, device=self.device)
                for p, index in enumerate(self.video_index):
                    code[index] += 1 << (P - 1 - p)
                sets, inverse = torch.unique(code, return_inverse=True)
                prompts = [tuple(p for p in range(P) if value >> (P - 1 - p) & 1) for value in sets.tolist()]
            else:
                membership = torch.zeros(self.num_prompts, self.num_video_tokens, dtype=torch.bool, device=self.device)
                for p, index in enumerate(self.video_index):
                    membership[p, index] = True
                sets, inverse = torch.unique(membership.T, dim=0, return_inverse=True)
                prompts = [tuple(int(p) for p in row.nonzero().flatten()) for row in sets]
            order = torch.argsort(inverse, stable=True)
            counts = torch.bincount(inverse, minlength=len(sets)).tolist()
            starts = np.cumsum([0] + counts)
            text_index = {}
            for members in prompts:
                if len(members) > 1:
                    text_index[members] = torch.cat([torch.arange(p * self.text_tokens, (p + 1) * self.text_tokens)
                                                     for p in members]).to(self.device)
            identity = bool(torch.equal(order, torch.arange(self.num_video_tokens, device=self.device)))
            self._cache["classes"] = CoverClasses(
                order=order, identity=identity,
                spans=tuple((members, slice(int(a), int(b))) for members, a, b in zip(prompts, starts[:-1], starts[1:])),
                text_index=text_index,
            )
        return self._cache["classes"]

    def reordered(self, order: torch.Tensor) -> RegionLayout:
        """The same regions for a call whose video tokens come in `order` (position j holds token order[j])."""
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order), device=order.device)
        video_index = tuple(position[index].sort().values for index in self.video_index)
        return RegionLayout(self.text_tokens, self.num_video_tokens, video_index, self.grid)

    def local(self, tokens: slice) -> RegionLayout:
        """The same regions seen by a call that holds only the video tokens at positions `tokens` (one rank's
        shard under context parallelism), numbered from 0 there: [tokens.start, tokens.stop) -> [0, stop - start).
        A layout in cover-class order stays in it (a contiguous run of a grouped sequence is grouped)."""
        start, stop = int(tokens.start), int(tokens.stop)
        if not 0 <= start < stop <= self.num_video_tokens:
            raise RegionLayoutError(f"video tokens {start}..{stop} are not a part of the {self.num_video_tokens}")
        video_index = tuple(index[(index >= start) & (index < stop)] - start for index in self.video_index)
        return RegionLayout(self.text_tokens, stop - start, video_index)

    def text_key_index(self, prompt: int) -> torch.Tensor:
        """Joint indices of the keys a text query of `prompt` may see: its text tokens, then its region."""
        key = ("text_keys", prompt)
        if key not in self._cache:
            text = torch.arange(prompt * self.text_tokens, (prompt + 1) * self.text_tokens, device=self.device)
            self._cache[key] = torch.cat([text, self.text_length + self.video_index[prompt]])
        return self._cache[key]

    def token_mask(self, prompts) -> torch.Tensor:
        """bool [P*L + N] over the joint sequence: the prompts' text tokens and the union of their regions."""
        mask = torch.zeros(self.sequence_length, dtype=torch.bool, device=self.device)
        for p in prompts:
            if not 0 <= p < self.num_prompts:
                raise RegionLayoutError(f"prompt index {p} is not one of the {self.num_prompts} prompts")
            mask[self.text_slice(p)] = True
            mask[self.text_length + self.video_index[p]] = True
        return mask

    def dense_mask(self) -> torch.Tensor:
        """The SR3AI boolean rule as a [S, S] matrix (True = may attend). O(S^2): reference and tests only."""
        T, S = self.text_length, self.sequence_length
        mask = torch.zeros(S, S, dtype=torch.bool, device=self.device)
        mask[T:, T:] = True  # video -> video always
        for p, index in enumerate(self.video_index):
            text = self.text_slice(p)
            mask[text, text] = True  # text_i -> text_i only
            mask[text, T + index] = True  # text_i -> video inside region_i
            mask[T + index, text] = True  # video inside region_i -> text_i
        return mask
