"""The region schedule: a scene's 6 keyframes -> boxes on every latent frame -> token sets per prompt.

This is what SR3AI attention and region-gated LoRAs consume. It is pure numpy (no torch) so the UI,
tests and planners can use it, and it is fast: a mask is a handful of array slices per region.

Rules (../shared/design.md):
- Keyframe k of K sits at latent position k * (T - 1) / (K - 1); the first and last keyframes land on the
  first and last latent frames.
- On a latent frame, the entities are those of the nearest keyframe (ties go to the later one), each
  with that keyframe's description. An entity's box is interpolated linearly between the two
  surrounding keyframes when it is in both (matched by name, then by order among equal names);
  otherwise it holds its box from the nearest keyframe.
- One prompt per distinct region description, in order of first appearance, after the background
  prompt (index 0). A token belongs to every prompt whose box covers it (overlaps belong to all);
  the background prompt holds exactly the tokens no entity covers.
- Box -> token cells: rows round(y0 * H) .. round(y1 * H) (exclusive), likewise columns, and always at
  least one cell, so a tiny box still owns the cell it sits in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .story import Entity, Scene

BACKGROUND = 0


@dataclass(frozen=True)
class ScheduledRegion:
    """One entity on one latent frame."""

    name: str
    description: str
    box: tuple[float, float, float, float]
    character_id: str | None = None
    motion: str | None = None


def keyframe_positions(num_keyframes: int, latent_frames: int) -> np.ndarray:
    if num_keyframes == 1 or latent_frames == 1:
        return np.zeros(num_keyframes)
    return np.arange(num_keyframes) * (latent_frames - 1) / (num_keyframes - 1)


def _tracks(entities: list[Entity]) -> dict[tuple[str, int], Entity]:
    """Key entities by (name, how many earlier entities of the keyframe share the name)."""
    seen: dict[str, int] = {}
    keyed = {}
    for entity in entities:
        ordinal = seen.get(entity.name, 0)
        seen[entity.name] = ordinal + 1
        keyed[(entity.name, ordinal)] = entity
    return keyed


def schedule_boxes(scene: Scene, latent_frames: int) -> list[list[ScheduledRegion]]:
    """Boxes of every entity on each of `latent_frames` frames."""
    keyframes = scene.keyframes
    positions = keyframe_positions(len(keyframes), latent_frames)
    tracks = [_tracks(k.entities) for k in keyframes]
    schedule = []
    for t in range(latent_frames):
        after = int(np.searchsorted(positions, t, side="left"))
        if after < len(positions) and np.isclose(positions[after], t):
            before = after
        else:
            before = max(after - 1, 0)
            after = min(after, len(positions) - 1)
        span = positions[after] - positions[before]
        fraction = 0.0 if span == 0 else (t - positions[before]) / span
        nearest = after if fraction >= 0.5 else before
        other = before if nearest == after else after
        regions = []
        for key, entity in tracks[nearest].items():
            box = entity.box
            partner = tracks[other].get(key)
            if partner is not None and other != nearest:
                start = np.array(tracks[before][key].box)
                end = np.array(tracks[after][key].box)
                box = tuple(float(v) for v in start + fraction * (end - start))
            regions.append(ScheduledRegion(entity.name, entity.description, box, entity.character_id, entity.motion))
        schedule.append(regions)
    return schedule


def box_cells(box: tuple[float, float, float, float], rows: int, cols: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    r0 = min(int(round(y0 * rows)), rows - 1)
    c0 = min(int(round(x0 * cols)), cols - 1)
    r1 = max(int(round(y1 * rows)), r0 + 1)
    c1 = max(int(round(x1 * cols)), c0 + 1)
    return slice(r0, r1), slice(c0, c1)


@dataclass(frozen=True)
class RegionPlan:
    """Prompts of a scene and, for each, the video tokens it covers.

    `masks[p, t, r, c]` is True where prompt p's region covers token (r, c) of token frame t. Flat video
    token index = (t * rows + r) * cols + c, the order CogVideoX's patch embedding flattens to.
    """

    prompts: tuple[str, ...]
    masks: np.ndarray  # bool [P, T, H, W]
    # Per prompt: the entities (names) it stands for, and their character ids and motions, for LoRA binding.
    entity_names: tuple[tuple[str, ...], ...] = ()
    character_ids: tuple[tuple[str, ...], ...] = ()
    motions: tuple[tuple[str, ...], ...] = ()

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.masks.shape[1:]

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    def token_indices(self, prompt: int) -> np.ndarray:
        return np.flatnonzero(self.masks[prompt].reshape(-1))

    def flat_masks(self) -> np.ndarray:
        """bool [P, T*H*W]."""
        return self.masks.reshape(self.num_prompts, -1)


def build_region_plan(scene: Scene, grid: tuple[int, int, int]) -> RegionPlan:
    """Prompts and token masks for a scene on a (frames, rows, cols) token grid (13 x 30 x 45 for 2B at 480x720)."""
    frames, rows, cols = grid
    schedule = schedule_boxes(scene, frames)
    prompts = [scene.background]
    index: dict[str, int] = {}
    names: list[list[str]] = [[]]
    characters: list[list[str]] = [[]]
    motions: list[list[str]] = [[]]
    for regions in schedule:
        for region in regions:
            if region.description not in index:
                index[region.description] = len(prompts)
                prompts.append(region.description)
                names.append([])
                characters.append([])
                motions.append([])
            p = index[region.description]
            for bucket, value in ((names, region.name), (characters, region.character_id), (motions, region.motion)):
                if value is not None and value not in bucket[p]:
                    bucket[p].append(value)
    masks = np.zeros((len(prompts), frames, rows, cols), dtype=bool)
    for t, regions in enumerate(schedule):
        for region in regions:
            r, c = box_cells(region.box, rows, cols)
            masks[index[region.description], t, r, c] = True
    masks[BACKGROUND] = ~masks[1:].any(axis=0)
    return RegionPlan(
        prompts=tuple(prompts),
        masks=masks,
        entity_names=tuple(map(tuple, names)),
        character_ids=tuple(map(tuple, characters)),
        motions=tuple(map(tuple, motions)),
    )
