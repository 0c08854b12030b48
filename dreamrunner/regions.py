"""The region schedule: a scene's 6 keyframes -> boxes on every latent frame -> token sets per prompt.

This is what SR3AI attention and region-gated LoRAs consume. It is pure numpy (no torch) so the UI,
tests and planners can use it, and it is fast: a mask is a handful of array slices per region.

Rules (the paper gives each keyframe one second; the released code gives each keyframe two latent frames):
- Time: a clip of N pixel frames spans (N - 1) / fps seconds, from its first frame to its last. Keyframe k of
  K owns the k-th K-th of that span, (k / K, (k + 1) / K] of the clip, and the first frame belongs to
  keyframe 0. For 49 frames at 8 fps that is one second (8 pixel frames) per keyframe.
- A schedule frame shows the keyframe owning the middle of the pixel frames it stands for. Pixel frames stand
  for themselves (the animatic). CogVideoX's causal VAE packs the first pixel frame alone into latent frame 0
  and then r = (N - 1) / (T - 1) frames into each of the T - 1 others (r = 4), so 13 latent frames show the
  keyframes [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]. fps cancels: the rule needs frame counts only.
- Boxes (`VideoSettings.keyframe_boxes`): "hold" (default, the released code): a frame shows its keyframe's
  entities with their boxes. "interpolate" (an option; the paper's wording): the same entities, each box
  moving linearly between the middles of consecutive keyframes' spans where the entity is in both (matched
  by name, then by order among equal names); before the first middle and after the last, boxes hold.
- Temporal patches (CogVideoX 1.5, `patch_size_t` p = 2): a token frame stands for p latent frames. diffusers
  pads the latents in front to a multiple of p (`additional_frames` noise frames, dropped before decoding), so
  with pad = -latent_frames mod p token frame t covers the real latent frames t*p - pad .. t*p - pad + p - 1
  that exist: for 81 frames (21 latent frames, 11 token frames) token frame 0 is latent frame 0 alone and
  token frame t >= 1 is latent frames 2t - 1 and 2t. Each latent frame keeps its boxes by the rules above,
  and a token frame takes the union of its latent frames' regions: a token carries both frames' content, so
  an entity present in either may attend its prompt there (taking one frame would drop the other frame's
  entity to the background prompt at a keyframe change).
- One prompt per distinct region description, in order of first appearance, after the background
  prompt (index 0). A token belongs to every prompt whose box covers it (overlaps belong to all);
  the background prompt holds exactly the tokens no entity covers.
- Box -> token cells: rows round(y0 * H) .. round(y1 * H) (exclusive), likewise columns, and always at
  least one cell, so a tiny box still owns the cell it sits in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .story import Entity, Scene

BACKGROUND = 0
VAE_TEMPORAL = 4  # CogVideoX's VAE: 4 pixel frames per latent frame after the first
BoxMotion = Literal["hold", "interpolate"]


@dataclass(frozen=True)
class ScheduledRegion:
    """One entity on one latent frame."""

    name: str
    description: str
    box: tuple[float, float, float, float]
    character_id: str | None = None
    motion: str | None = None


def frame_positions(frames: int, pixel_frames: int | None = None) -> np.ndarray:
    """Where each of `frames` schedule frames sits in the clip, 0 (first pixel frame) to 1 (last): the middle
    of the pixel frames it stands for. `pixel_frames` None: the frames are latent frames of CogVideoX's VAE,
    of 4 * (frames - 1) + 1 pixel frames; equal to `frames`: they are the pixel frames."""
    pixel_frames = VAE_TEMPORAL * (frames - 1) + 1 if pixel_frames is None else pixel_frames
    if frames < 1 or pixel_frames < frames:
        raise ValueError(f"{frames} schedule frames cannot stand for {pixel_frames} pixel frames")
    if pixel_frames == 1:
        return np.zeros(frames)
    if frames == pixel_frames:
        return np.arange(frames) / (pixel_frames - 1)
    if frames == 1:
        return np.zeros(1)
    per_frame = (pixel_frames - 1) / (frames - 1)  # pixel frames per latent frame after the lone first one
    j = np.arange(frames)
    middles = np.where(j == 0, 0.0, (j - 0.5) * per_frame + 0.5)
    return middles / (pixel_frames - 1)


def frame_keyframes(num_keyframes: int, frames: int, pixel_frames: int | None = None) -> np.ndarray:
    """The keyframe each schedule frame shows: keyframe k owns (k / K, (k + 1) / K] of the clip, plus its
    first frame. int [frames]; [0,0,0,1,1,2,2,3,3,4,4,5,5] for 6 keyframes over 13 latent frames."""
    scaled = frame_positions(frames, pixel_frames) * num_keyframes
    return np.clip(np.ceil(scaled - 1e-9).astype(int) - 1, 0, num_keyframes - 1)


def keyframe_spans(num_keyframes: int) -> list[tuple[float, float]]:
    """(start, end) of each keyframe's span as fractions of the clip: equal shares, one second each at 6 s."""
    return [(k / num_keyframes, (k + 1) / num_keyframes) for k in range(num_keyframes)]


def _tracks(entities: list[Entity]) -> dict[tuple[str, int], Entity]:
    """Key entities by (name, how many earlier entities of the keyframe share the name)."""
    seen: dict[str, int] = {}
    keyed = {}
    for entity in entities:
        ordinal = seen.get(entity.name, 0)
        seen[entity.name] = ordinal + 1
        keyed[(entity.name, ordinal)] = entity
    return keyed


def schedule_boxes(scene: Scene, frames: int, pixel_frames: int | None = None,
                   boxes: BoxMotion = "hold") -> list[list[ScheduledRegion]]:
    """Boxes of every entity on each of `frames` frames (latent frames, or pixel frames: see `frame_positions`)."""
    if boxes not in ("hold", "interpolate"):
        raise ValueError(f"boxes must be 'hold' or 'interpolate', got {boxes!r}")
    keyframes = scene.keyframes
    count = len(keyframes)
    owners = frame_keyframes(count, frames, pixel_frames)
    positions = frame_positions(frames, pixel_frames)
    tracks = [_tracks(k.entities) for k in keyframes]
    schedule = []
    for owner, position in zip(owners, positions):
        # Interpolation runs between the middles of consecutive keyframes' spans.
        middle = (owner + 0.5) / count
        other = owner - 1 if position < middle else owner + 1
        regions = []
        for key, entity in tracks[owner].items():
            box = entity.box
            partner = tracks[other].get(key) if boxes == "interpolate" and 0 <= other < count else None
            if partner is not None:
                before, after = (partner, entity) if other < owner else (entity, partner)
                start = (min(owner, other) + 0.5) / count
                fraction = (position - start) * count  # the middles are 1 / count apart
                box = tuple(float(v) for v in np.array(before.box) + fraction * (np.array(after.box) - np.array(before.box)))
            regions.append(ScheduledRegion(entity.name, entity.description, box, entity.character_id, entity.motion))
        schedule.append(regions)
    return schedule


def token_frame_latents(latent_frames: int, patch_size_t: int = 1) -> list[range]:
    """The real latent frames each token frame covers, with diffusers' front padding (see the module
    docstring): [range(0, 1), range(1, 3), ..., range(19, 21)] for 21 latent frames and patch_size_t 2."""
    if latent_frames < 1 or patch_size_t < 1:
        raise ValueError(f"{latent_frames} latent frames with patch_size_t {patch_size_t}")
    pad = -latent_frames % patch_size_t
    tokens = -(-latent_frames // patch_size_t)
    return [range(max(t * patch_size_t - pad, 0), (t + 1) * patch_size_t - pad) for t in range(tokens)]


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


def build_region_plan(scene: Scene, grid: tuple[int, int, int], pixel_frames: int | None = None,
                      boxes: BoxMotion = "hold", patch_size_t: int = 1) -> RegionPlan:
    """Prompts and token masks for a scene on a (frames, rows, cols) token grid (13 x 30 x 45 for 2B at 480x720;
    `VideoSettings.token_grid`).

    `pixel_frames` (the video's frame count; None: 4 * (frames - 1) + 1, with patch_size_t 1 only) and `boxes`
    as in `schedule_boxes`. `patch_size_t` latent frames per token frame (CogVideoX 1.5: 2): the latent frames
    are scheduled and each token frame takes the union of its latent frames' regions (`token_frame_latents`).
    Raises ValueError when the grid's frames are not the token frames of `pixel_frames`.
    """
    frames, rows, cols = grid
    latent_frames = frames
    if patch_size_t != 1:
        if pixel_frames is None:
            raise ValueError("a temporally patched grid needs the video's frame count (pixel_frames)")
        latent_frames = (pixel_frames - 1) // VAE_TEMPORAL + 1
    groups = token_frame_latents(latent_frames, patch_size_t)
    if len(groups) != frames:
        raise ValueError(f"{pixel_frames} frames make {len(groups)} token frames with patch_size_t {patch_size_t}, "
                         f"but the grid has {frames}")
    schedule = schedule_boxes(scene, latent_frames, pixel_frames, boxes)
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
    for t, latents in enumerate(groups):
        for regions in (schedule[j] for j in latents):
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
