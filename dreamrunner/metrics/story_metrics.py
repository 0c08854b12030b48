"""The paper's story metrics: character consistency, full-text and fine-grained text alignment, transitions.

Every score is a cosine similarity between L2-normalized embeddings, averaged as the paper describes and
reported times 100 (the paper's scale: a CLIP text score of 0.2342 is printed as 23.42). Cosines are taken in
float64 and within [-1, 1] (`cosine_matrix`), so identical inputs score exactly 100 and nothing scores more.

- Character consistency: mean similarity of every scored frame to every reference image of a character
  (CLIP and DINO image embeddings).
- Full-text alignment: mean CLIP similarity of every scored frame to the scene text; for a video-text
  encoder (ViCLIP), the similarity of the whole clip to the text.
- Fine-grained alignment: each event description is compared with the frames of its own time span only,
  then the events are averaged.
- Transition smoothness: mean DINO similarity between consecutive scored frames.

Each function takes frames (uint8 [F, H, W, 3] or a list of PIL images) and an encoder; the
`*_from_embeddings` forms let a pipeline embed a video once and reuse it for several metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..regions import keyframe_spans
from ..story import Scene
from .encoders import ImageEncoder, TextImageEncoder, VideoTextEncoder
from .frames import Images, MetricsError, as_frames, frame_times

SCALE = 100.0


@dataclass(frozen=True)
class Event:
    """A fine-grained description and the part of the video it describes, as fractions 0 (first frame) .. 1."""

    text: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise MetricsError("an event description is empty")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise MetricsError(f"event {self.text[:40]!r}: span [{self.start}, {self.end}] is not within [0, 1]")


def events_from_texts(texts: Sequence[str]) -> list[Event]:
    """Events of equal length, in order, covering the video."""
    count = len(texts)
    return [Event(text, i / count, (i + 1) / count) for i, text in enumerate(texts)]


def keyframe_text(scene: Scene, index: int) -> str:
    """A keyframe's fine-grained description: its region descriptions in plan order, without repeats."""
    descriptions = dict.fromkeys(e.description.strip() for e in scene.keyframes[index].entities)
    return ". ".join(d.rstrip(".") for d in descriptions if d)


def scene_events(scene: Scene) -> list[Event]:
    """The scene's events on the video's time axis, from its keyframes.

    Same timing as the region schedule (`dreamrunner.regions.keyframe_spans`): keyframe k of K owns the k-th
    K-th of the video (one second each for 6 keyframes over 49 frames at 8 fps). Consecutive keyframes with
    the same description form one event; keyframes without entities are left out.
    """
    events: list[Event] = []
    for k, (start, end) in enumerate(keyframe_spans(len(scene.keyframes))):
        text = keyframe_text(scene, k)
        if not text:
            continue
        if events and events[-1].text == text and np.isclose(events[-1].end, start):
            events[-1] = Event(text, events[-1].start, float(end))
        else:
            events.append(Event(text, float(start), float(end)))
    return events


def event_frame_groups(events: Sequence[Event], times: np.ndarray) -> list[np.ndarray]:
    """For each event, the positions of the frames (by their times) that fall in its span [start, end)."""
    groups = []
    for event in events:
        inside = (times >= event.start) & ((times < event.end) | ((event.end >= 1.0) & (times <= 1.0)))
        groups.append(np.flatnonzero(inside))
    return groups


# --- on embeddings -------------------------------------------------------------------------------------

def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embeddings.to(torch.float64), dim=-1)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of a [N, D] with every row of b [M, D]: float64 [N, M] within [-1, 1].

    Encoders give float32 embeddings normalized to about 1e-7, so a dot product of an embedding with itself
    can read above 1 (a score of 100.0002). Here rows are renormalized in float64 and the cosine is taken as
    1 - |a - b|^2 / 2, exactly 1 for identical rows, then clamped to [-1, 1].
    """
    distance = torch.cdist(_unit(a), _unit(b), compute_mode="donot_use_mm_for_euclid_dist")
    return (1.0 - distance.square() / 2).clamp(-1.0, 1.0)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of a [N, D] with the same row of b [N, D], as `cosine_matrix` takes it: [N]."""
    return (1.0 - (_unit(a) - _unit(b)).square().sum(-1) / 2).clamp(-1.0, 1.0)


def mean_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of two sets of normalized embeddings, times 100."""
    if len(a) == 0 or len(b) == 0:
        raise MetricsError("cannot average a similarity over an empty set of embeddings")
    return float(cosine_matrix(a, b).mean()) * SCALE


def consecutive_similarity(embeddings: torch.Tensor) -> float | None:
    """Mean cosine similarity of each frame to the next, times 100; None for fewer than two frames."""
    if len(embeddings) < 2:
        return None
    return float(cosine_rows(embeddings[:-1], embeddings[1:]).mean()) * SCALE


def fine_grained_from_embeddings(frame_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                                 groups: Sequence[np.ndarray]) -> float | None:
    """Mean over events of the similarity of the event's frames to its text; events without frames are left out."""
    scores = [mean_similarity(frame_embeddings[torch.as_tensor(g)], text_embeddings[i:i + 1])
              for i, g in enumerate(groups) if len(g)]
    return float(np.mean(scores)) if scores else None


# --- on frames -----------------------------------------------------------------------------------------

def _times(frames: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    if times is None:
        return frame_times(np.arange(len(frames)), len(frames))
    times = np.asarray(times, dtype=float)
    if times.shape != (len(frames),):
        raise MetricsError(f"got {len(times)} frame times for {len(frames)} frames")
    return times


def character_consistency(frames: Images, references: Images, encoder: ImageEncoder) -> float:
    """Mean similarity of every frame to every reference image of one character (CLIP or DINO)."""
    return mean_similarity(encoder.encode_images(frames), encoder.encode_images(references))


def text_alignment(frames: Images, text: str, encoder: TextImageEncoder) -> float:
    """Mean CLIP similarity of every frame to a text."""
    return mean_similarity(encoder.encode_images(frames), encoder.encode_texts([text]))


def fine_grained_text_alignment(frames: Images, events: Sequence[Event], encoder: TextImageEncoder,
                                times: np.ndarray | None = None) -> float | None:
    """Mean over events of the CLIP similarity of the event's frames to its description.

    `times` places each frame on the video (0..1); by default the frames are taken as the whole video,
    evenly spaced. None when no event has a frame.
    """
    frames = as_frames(frames)
    groups = event_frame_groups(events, _times(frames, times))
    return fine_grained_from_embeddings(encoder.encode_images(frames), encoder.encode_texts([e.text for e in events]),
                                        groups)


def video_text_alignment(frames: Images, text: str, encoder: VideoTextEncoder) -> float:
    """Similarity of the whole clip to a text with a video-text encoder (ViCLIP in the paper)."""
    return mean_similarity(encoder.encode_videos([as_frames(frames)]), encoder.encode_texts([text]))


def fine_grained_video_text_alignment(frames: Images, events: Sequence[Event], encoder: VideoTextEncoder,
                                      times: np.ndarray | None = None) -> float | None:
    """Mean over events of the video-text similarity of the event's own clip to its description."""
    frames = as_frames(frames)
    groups = event_frame_groups(events, _times(frames, times))
    kept = [i for i, g in enumerate(groups) if len(g)]
    if not kept:
        return None
    videos = encoder.encode_videos([frames[groups[i]] for i in kept])
    texts = encoder.encode_texts([events[i].text for i in kept])
    return float(cosine_rows(videos, texts).mean()) * SCALE


def transition_smoothness(frames: Images, encoder: ImageEncoder) -> float | None:
    """Mean DINO similarity between consecutive frames; None for a single frame."""
    return consecutive_similarity(encoder.encode_images(frames))
