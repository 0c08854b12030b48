"""Scoring a set of videos with every metric whose model is loaded, and the report in the paper's Table 1 layout.

Each video is decoded once, its scored frames embedded once per encoder, and every metric of that encoder
reads the same embeddings. Reference embeddings are computed once per character and encoder.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backends import NOISE_LABEL
from ..jobs import CancelToken, Progress, ProgressCallback
from .frames import MetricsError, as_frames, frame_times, read_image, read_video, sample_indices, video_length
from .loading import Encoders
from .quality import frame_quality, motion_smoothness
from .story_metrics import (
    Event,
    consecutive_similarity,
    event_frame_groups,
    fine_grained_from_embeddings,
    fine_grained_video_text_alignment,
    mean_similarity,
    video_text_alignment,
)

REPORT_FORMAT = "dreamrunner-eval"
REPORT_VERSION = 1
PLUMBING_LABEL = "RANDOM-WEIGHT ENCODERS - PLUMBING ONLY, THE NUMBERS MEASURE NOTHING"


@dataclass(frozen=True)
class Column:
    key: str
    group: str
    label: str
    slot: str  # the `Encoders` slot whose model it needs


# The paper's Table 1, left to right.
COLUMNS = (
    Column("consistency_clip", "Character consistency", "CLIP", "clip"),
    Column("consistency_dino", "Character consistency", "DINO", "dino"),
    Column("full_text_clip", "Full-text alignment", "CLIP", "clip"),
    Column("full_text_viclip", "Full-text alignment", "ViCLIP", "viclip"),
    Column("fine_text_clip", "Fine-grained alignment", "CLIP", "clip"),
    Column("fine_text_viclip", "Fine-grained alignment", "ViCLIP", "viclip"),
    Column("transition_dino", "Transition", "DINO", "dino"),
    Column("aesthetics", "Visual quality", "Aesthetics", "aesthetic"),
    Column("imaging_quality", "Visual quality", "Imaging", "imaging_quality"),
    Column("motion_smoothness", "Visual quality", "Smoothness", "interpolator"),
)


@dataclass
class VideoSample:
    """One video to score with what it is meant to show."""

    name: str
    video: str | os.PathLike | np.ndarray  # a video file, or frames uint8 [F, H, W, 3]
    text: str | None = None  # the full scene text
    events: list[Event] = field(default_factory=list)  # fine-grained descriptions on the time axis
    references: dict[str, list] = field(default_factory=dict)  # character -> image files or uint8 arrays
    is_noise: bool = False
    notes: list[str] = field(default_factory=list)

    def frame_count(self) -> int:
        return len(as_frames(self.video)) if isinstance(self.video, np.ndarray) else video_length(self.video)

    def load_frames(self, indices: np.ndarray | None = None) -> np.ndarray:
        """All frames, or those at `indices` (a file decodes and keeps only those)."""
        if isinstance(self.video, np.ndarray):
            frames = as_frames(self.video)
            return frames if indices is None else frames[indices]
        return read_video(self.video, indices)

    @property
    def source(self) -> str:
        return "<frames>" if isinstance(self.video, np.ndarray) else str(self.video)


@dataclass
class VideoScores:
    name: str
    video: str
    is_noise: bool
    num_frames: int
    scored_frames: int
    scores: dict[str, float | None]
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalReport:
    source: str
    columns: list[Column]
    skipped: dict[str, str]  # column key -> why it has no numbers
    rows: list[VideoScores]
    encoders: dict[str, dict]
    random_encoders: list[str]
    max_frames: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def noise(self) -> bool:
        return any(row.is_noise for row in self.rows)

    @property
    def mean(self) -> dict[str, float | None]:
        """Each column averaged over the videos that have a value for it (the row comparable to the paper's)."""
        result = {}
        for column in self.columns:
            values = [row.scores[column.key] for row in self.rows if row.scores.get(column.key) is not None]
            result[column.key] = float(np.mean(values)) if values else None
        return result

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "source": self.source,
            "noise": self.noise,
            "noise_label": NOISE_LABEL if self.noise else None,
            "random_encoders": self.random_encoders,
            "plumbing_label": PLUMBING_LABEL if self.random_encoders else None,
            "scale": "cosine similarities and VBench scores, times 100",
            "max_frames": self.max_frames,
            "encoders": self.encoders,
            "columns": [{"key": c.key, "group": c.group, "label": c.label} for c in self.columns],
            "skipped": self.skipped,
            "rows": [{"name": r.name, "video": r.video, "is_noise": r.is_noise, "num_frames": r.num_frames,
                      "scored_frames": r.scored_frames, "scores": r.scores, "notes": r.notes} for r in self.rows],
            "mean": self.mean,
            "notes": self.notes,
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One line per video plus a `mean` line; empty cells where a video has no value."""
        path = Path(path)
        keys = [c.key for c in self.columns]
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["video", "is_noise", *keys])
            for row in self.rows:
                writer.writerow([row.name, row.is_noise, *(_csv_value(row.scores[k]) for k in keys)])
            mean = self.mean
            writer.writerow(["mean", self.noise, *(_csv_value(mean[k]) for k in keys)])
        return path

    def format_table(self) -> str:
        """The scores as text, grouped like the paper's Table 1, with what was skipped and why."""
        lines = [f"DreamRunner story metrics: {self.source}"]
        if self.noise:
            lines.append(f"!! {NOISE_LABEL}: rows marked * are renders from random weights (tiny backend)")
        if self.random_encoders:
            lines.append(f"!! {PLUMBING_LABEL} ({', '.join(self.random_encoders)})")
        if self.columns:
            lines += _table(self)
        lines.append("Scores: cosine similarity x 100 (CLIP, DINO, ViCLIP); VBench scores x 100 (visual quality).")
        if self.skipped:
            lines.append("Skipped columns (no number is reported for them):")
            by_reason: dict[str, list[str]] = {}
            for column in COLUMNS:
                if column.key in self.skipped:
                    by_reason.setdefault(self.skipped[column.key], []).append(f"{column.group} {column.label}")
            lines += [f"  - {', '.join(names)}: {reason}" for reason, names in by_reason.items()]
        for row in self.rows:
            lines += [f"  note, {row.name}: {note}" for note in row.notes]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _csv_value(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _table(report: EvalReport) -> list[str]:
    names = [row.name + (" *" if row.is_noise else "") for row in report.rows] + ["mean"]
    values = [[_cell(row.scores[c.key]) for c in report.columns] for row in report.rows]
    values.append([_cell(report.mean[c.key]) for c in report.columns])
    widths = [max(len(c.label), *(len(v[i]) for v in values)) for i, c in enumerate(report.columns)]
    groups: list[tuple[str, list[int]]] = []
    for i, column in enumerate(report.columns):
        if groups and groups[-1][0] == column.group:
            groups[-1][1].append(i)
        else:
            groups.append((column.group, [i]))
    for group, members in groups:  # widen a group's columns until its title fits
        while sum(widths[i] for i in members) + 2 * (len(members) - 1) < len(group):
            widths[min(members, key=lambda i: widths[i])] += 1
    first = max(len("video"), *(len(n) for n in names))

    def line(label: str, cells: Sequence[str]) -> str:
        parts = ["  ".join(cells[i].rjust(widths[i]) for i in members) for _, members in groups]
        return f"{label.ljust(first)} | " + " | ".join(parts)

    group_titles = [g.center(sum(widths[i] for i in m) + 2 * (len(m) - 1)) for g, m in groups]
    rule = "-" * first + "-+-" + "-+-".join("-" * len(t) for t in group_titles)
    out = [f"{'video'.ljust(first)} | " + " | ".join(group_titles), line("", [c.label for c in report.columns]), rule]
    out += [line(name, cells) for name, cells in zip(names[:-1], values[:-1])]
    out += [rule, line(names[-1], values[-1])]
    return out


def available_columns(encoders: Encoders) -> tuple[list[Column], dict[str, str]]:
    columns = [c for c in COLUMNS if getattr(encoders, c.slot) is not None]
    skipped = {c.key: encoders.reason(c.slot) for c in COLUMNS if getattr(encoders, c.slot) is None}
    return columns, skipped


@dataclass
class EvalConfig:
    # Frames scored per video, spread evenly with the first and last kept; None scores every decoded frame.
    max_frames: int | None = None


class _ReferenceCache:
    """Reference images are read and embedded once per character and encoder, however many videos show them."""

    def __init__(self) -> None:
        self._images: dict[tuple, list[np.ndarray]] = {}
        self._embeddings: dict[tuple, torch.Tensor] = {}

    def embeddings(self, character: str, images: list, encoder, slot: str) -> torch.Tensor:
        key = (character, *(f"array@{id(i)}" if isinstance(i, np.ndarray) else str(i) for i in images))
        if key not in self._images:
            self._images[key] = [image if isinstance(image, np.ndarray) else read_image(image) for image in images]
        if key + (slot,) not in self._embeddings:
            self._embeddings[key + (slot,)] = encoder.encode_images(self._images[key])
        return self._embeddings[key + (slot,)]


def _consistency(frame_embeddings: torch.Tensor, sample: VideoSample, encoder, slot: str,
                 cache: _ReferenceCache) -> float | None:
    """Mean over the video's characters (those with reference images) of frame-to-reference similarity."""
    scores = [mean_similarity(frame_embeddings, cache.embeddings(name, images, encoder, slot))
              for name, images in sample.references.items() if images]
    return float(np.mean(scores)) if scores else None


def score_video(sample: VideoSample, encoders: Encoders, config: EvalConfig,
                cache: _ReferenceCache | None = None) -> VideoScores:
    """Every available metric for one video."""
    cache = cache or _ReferenceCache()
    # Motion smoothness needs every consecutive frame; the other metrics only the scored ones, so without it
    # only those are decoded (a long video sampled to a few frames never holds all of them).
    frames = sample.load_frames() if encoders.interpolator is not None else None
    total = len(frames) if frames is not None else sample.frame_count()
    indices = sample_indices(total, config.max_frames)
    times = frame_times(indices, total)
    scored = frames[indices] if frames is not None else sample.load_frames(indices)
    groups = event_frame_groups(sample.events, times)
    event_texts = [event.text for event in sample.events]
    scores: dict[str, float | None] = {}
    if encoders.clip is not None:
        embeddings = encoders.clip.encode_images(scored)
        scores["consistency_clip"] = _consistency(embeddings, sample, encoders.clip, "clip", cache)
        scores["full_text_clip"] = (mean_similarity(embeddings, encoders.clip.encode_texts([sample.text]))
                                    if sample.text else None)
        scores["fine_text_clip"] = (fine_grained_from_embeddings(embeddings, encoders.clip.encode_texts(event_texts),
                                                                 groups) if sample.events else None)
    if encoders.dino is not None:
        embeddings = encoders.dino.encode_images(scored)
        scores["consistency_dino"] = _consistency(embeddings, sample, encoders.dino, "dino", cache)
        scores["transition_dino"] = consecutive_similarity(embeddings)
    if encoders.viclip is not None:
        scores["full_text_viclip"] = video_text_alignment(scored, sample.text, encoders.viclip) if sample.text else None
        scores["fine_text_viclip"] = (fine_grained_video_text_alignment(scored, sample.events, encoders.viclip, times)
                                      if sample.events else None)
    if encoders.aesthetic is not None:
        scores["aesthetics"] = frame_quality(scored, encoders.aesthetic)
    if encoders.imaging_quality is not None:
        scores["imaging_quality"] = frame_quality(scored, encoders.imaging_quality)
    if encoders.interpolator is not None:
        scores["motion_smoothness"] = motion_smoothness(frames, encoders.interpolator)
    notes = list(sample.notes)
    if not any(sample.references.values()):
        notes.append("no character reference images: no character consistency")
    if not sample.text:
        notes.append("no scene text: no full-text alignment")
    if not sample.events:
        notes.append("no event descriptions: no fine-grained alignment")
    if len(scored) < 2:
        notes.append("fewer than two scored frames: no transition score")
    return VideoScores(sample.name, sample.source, sample.is_noise, total, len(scored),
                       {c.key: scores.get(c.key) for c in COLUMNS if c.key in scores}, notes)


def evaluate(samples: Sequence[VideoSample], encoders: Encoders, config: EvalConfig | None = None,
             source: str = "", progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> EvalReport:
    """Score every video with every metric whose model is loaded; columns without a model are skipped, with why."""
    config = config or EvalConfig()
    columns, skipped = available_columns(encoders)
    if not columns:
        raise MetricsError("no metric can be computed, every model it needs is missing:\n" +
                           "\n".join(f"  - {slot}: {encoders.reason(slot)}" for slot in dict.fromkeys(
                               c.slot for c in COLUMNS)) +
                           "\n(--tiny-encoders runs the pipeline on random weights, as a plumbing check only)")
    if not samples:
        raise MetricsError("no videos to score")
    cache = _ReferenceCache()
    rows = []
    for step, sample in enumerate(samples):
        if cancel is not None:
            cancel.check()
        if progress is not None:
            progress(Progress("eval", step, len(samples), f"scoring {sample.name}"))
        rows.append(score_video(sample, encoders, config, cache))
    if progress is not None:
        progress(Progress("eval", len(samples), len(samples), "done"))
    return EvalReport(source, columns, skipped, rows, encoders.describe(), encoders.random_weights, config.max_frames)
