"""retrieve_clips: motion text -> BM25 candidates -> dense re-score -> filters -> tracked segments ->
CLIP re-rank -> 4-20 clips (optionally cut to files at the model's frame rate), with every drop explained."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from pydantic import Field, field_validator

from ..files import ASSETS_DIR
from ..jobs import Cancelled, CancelToken, Progress, ProgressCallback
from ..story import Checked, slug
from .catalog import ClipCatalog
from .dense import load_caption_encoder
from .detection import make_detector
from .filters import ClipFilter
from .records import CatalogError, ClipRecord, UnreadableVideo
from .rerank import ClipFrameScorer, ClipScorer, ScorerUnavailable, rank_by_similarity, select_clips
from .tracking import Segmenter
from .video import materialise, probe, sample_frames

DEMO_CATALOG = ASSETS_DIR / "clips" / "catalog.jsonl"

# (record, local folder) -> local video file; see docs/retrieval.md "URL sources".
Downloader = Callable[[ClipRecord, Path], Path]


class RetrievalSettings(Checked):
    """Every knob of retrieval, as data (the UI edits it, the CLI maps flags onto it)."""


    candidates: int = Field(default=100, ge=1, le=1_000_000, description="BM25 top-k taken from the catalog")
    dense_model: str | None = Field(default="auto", description="'auto' (bundled MiniLM if installed), a "
                                    "sentence-transformers folder, or None for BM25 order only")
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    filters: ClipFilter = Field(default_factory=ClipFilter)
    text_only: bool = Field(default=False, description="stop after the caption stages (no video needed)")
    max_videos: int = Field(default=40, ge=1, le=100_000, description="candidates examined by the video stages")
    detector: str | None = Field(default="hog", description="'hog', 'motion', 'transformers:<model>', None")
    min_subject_area: float = Field(default=0.02, ge=0, le=1)
    min_track_seconds: float = Field(default=1.0, ge=0)
    sample_fps: float = Field(default=4.0, gt=0)
    clip_model: str | None = Field(default="openai/clip-vit-base-patch32")
    require_rerank: bool = Field(default=False, description="fail instead of skipping when CLIP is missing")
    min_similarity: float | None = None
    min_clips: int = Field(default=4, ge=1, le=10_000)
    max_clips: int = Field(default=20, ge=1, le=10_000)
    output_dir: str | None = Field(default=None, description="cut the chosen clips here as mp4")
    fps: int = Field(default=8, ge=1, le=120, description="frame rate of cut clips (CogVideoX: 8)")
    size: tuple[int, int] | None = Field(default=None, description="(width, height) of cut clips")
    allow_download: bool = Field(default=False, description="let the downloader hook fetch URL sources")
    allow_model_download: bool = Field(default=False, description="let transformers fetch CLIP / detector "
                                       "weights from the hub (otherwise: local folders and the local cache only)")

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        # Cut clips are H.264 in yuv420p, which needs positive, even sides.
        if size is not None and (min(size) < 2 or max(size) > 4096 or size[0] % 2 or size[1] % 2):
            raise ValueError(f"size {size[0]}x{size[1]} must be positive even numbers (width, height) up to 4096, "
                             "e.g. 720x480")
        return size


@dataclass
class RetrievedClip:
    record: ClipRecord
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    start: float | None = None  # the span used, in seconds of the source video
    end: float | None = None
    path: str | None = None  # the materialised clip, when output_dir was set

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def caption(self) -> str:
        return self.record.caption


@dataclass(frozen=True)
class DroppedClip:
    record: ClipRecord
    stage: str
    reason: str

    @property
    def id(self) -> str:
        return self.record.id


@dataclass
class RetrievalResult:
    motion: str
    clips: list[RetrievedClip] = field(default_factory=list)
    dropped: list[DroppedClip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)


def default_demo_catalog() -> ClipCatalog:
    """The small catalog in dreamrunner/assets/clips (Big Buck Bunny cuts, CC-BY, and labelled synthetic animations)."""
    return ClipCatalog.open(DEMO_CATALOG)


class _Run:
    """One retrieval: holds the result being built and reports progress."""

    def __init__(self, motion: str, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
        self.result = RetrievalResult(motion)
        self.progress = progress
        self.cancel = cancel or CancelToken()

    def report(self, stage: str, step: int, total: int, message: str = "") -> None:
        self.cancel.check()
        if self.progress is not None:
            self.progress(Progress(stage, step, total, message))

    def drop(self, record: ClipRecord, stage: str, reason: str) -> None:
        self.result.dropped.append(DroppedClip(record, stage, reason))


def retrieve_clips(motion: str, catalog: ClipCatalog, settings: RetrievalSettings | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                   scorers: list[ClipScorer] | None = None, detector=None,
                   downloader: Downloader | None = None) -> RetrievalResult:
    """Reference clips for one motion, best first, with the reason for every candidate left out.

    `scorers` replaces the CLIP model named in settings (tests inject them; a video-text model such as
    ViCLIP plugs in as one more scorer); `detector` replaces the one named in settings.
    """
    settings = settings or RetrievalSettings()
    if not motion.strip():
        raise CatalogError("the motion text is empty")
    run = _Run(motion, progress, cancel)
    result = run.result

    # 1. captions: BM25, then optional dense re-scoring
    run.report("text", 0, 1, "searching captions")
    hits = catalog.search(motion, k=settings.candidates, progress=progress, cancel=run.cancel)
    result.stages.append("bm25")
    if not hits:
        result.warnings.append(f"no caption in the catalog shares a word with {motion!r}")
        return result
    top = max(score for _, score in hits)
    text_scores = {record.id: {"bm25": score, "text": score / top} for record, score in hits}
    encoder = load_caption_encoder(settings.dense_model) if settings.dense_weight > 0 else None
    if encoder is not None:
        similarities = encoder.similarities(motion, [record.caption for record, _ in hits])
        for (record, _), similarity in zip(hits, similarities):
            parts = text_scores[record.id]
            parts["dense"] = float(similarity)
            parts["text"] = (1 - settings.dense_weight) * parts["text"] + settings.dense_weight * float(similarity)
        result.stages.append(f"dense:{encoder.name}")
    elif settings.dense_model not in (None, "auto"):
        result.warnings.append(f"dense model {settings.dense_model!r} unavailable")
    candidates = sorted((record for record, _ in hits), key=lambda r: -text_scores[r.id]["text"])

    # 2. attribute filters on what the catalog already knows
    kept: list[ClipRecord] = []
    for record in candidates:
        reason = settings.filters.check(record)
        if reason:
            run.drop(record, "filter", reason)
        else:
            kept.append(record)
    result.stages.append("filter")
    run.report("text", 1, 1, f"{len(kept)} candidates after filters")

    if settings.text_only:
        ranked = [(r, text_scores[r.id]["text"]) for r in kept]
        chosen, dropped = select_clips(ranked, settings.max_clips)
        result.clips = [RetrievedClip(r, s, dict(text_scores[r.id]), r.start, r.end) for r, s in chosen]
        for record, reason in dropped:
            run.drop(record, "select", reason)
        _check_count(result, settings)
        return result

    # 3. video stages: probe, re-filter, segment by tracking, sample frames
    examined, rest = kept[:settings.max_videos], kept[settings.max_videos:]
    for record in rest:
        run.drop(record, "video", f"beyond the {settings.max_videos} candidates examined (max_videos)")
    if detector is None and settings.detector:
        detector = make_detector(settings.detector, settings.allow_model_download)
    segmenter = Segmenter(detector, settings.min_subject_area, settings.min_track_seconds) if detector else None
    spans: dict[str, tuple[ClipRecord, str, float, float, list]] = {}
    for step, record in enumerate(examined):
        run.report("video", step, len(examined), record.id)
        try:
            span = _examine(record, catalog, settings, segmenter, downloader, run)
        except Cancelled:
            raise
        except UnreadableVideo as error:
            run.drop(record, "video", str(error))
            continue
        except Exception as error:  # one bad clip must not end the whole retrieval
            run.drop(record, "video", f"{type(error).__name__}: {error}")
            continue
        if span is not None:
            spans[record.id] = span
    run.report("video", len(examined), len(examined), f"{len(spans)} clips with a usable span")
    result.stages.append("segment" if segmenter else "probe")

    # 4. re-rank by text-frame similarity
    if scorers is None and settings.clip_model:
        try:
            scorers = [ClipFrameScorer.from_pretrained(settings.clip_model,
                                                       allow_download=settings.allow_model_download)]
        except ScorerUnavailable as error:
            if settings.require_rerank:
                raise
            result.warnings.append(f"CLIP re-ranking skipped: {error}")
            scorers = []
    ids = list(spans)
    if scorers:
        run.report("rerank", 0, len(ids), "scoring frames against the motion")
        ranked_full = rank_by_similarity(ids, {i: spans[i][4] for i in ids}, motion, scorers)
        for clip_id, combined, parts in ranked_full:
            text_scores[clip_id].update(parts)
        ranked = [(clip_id, combined) for clip_id, combined, _ in ranked_full]
        result.stages.append("rerank:" + ",".join(s.name for s in scorers))
        chosen, dropped = select_clips(ranked, settings.max_clips, settings.min_similarity)
    else:
        ranked = sorted(((i, text_scores[i]["text"]) for i in ids), key=lambda item: -item[1])
        chosen, dropped = select_clips(ranked, settings.max_clips)
    for clip_id, reason in dropped:
        run.drop(spans[clip_id][0], "select", reason)

    # 5. materialise the chosen clips at the model's frame rate
    out_dir = Path(settings.output_dir) if settings.output_dir else None
    for step, (clip_id, score) in enumerate(chosen):
        record, local, start, end, _ = spans[clip_id]
        clip = RetrievedClip(record, score, dict(text_scores[clip_id]), start, end)
        if out_dir is not None:
            run.report("materialise", step, len(chosen), clip_id)
            try:
                clip.path = str(materialise(local, out_dir / f"{slug(clip_id, 'clip')}.mp4", start, end,
                                            settings.fps, settings.size))
            except UnreadableVideo as error:
                run.drop(record, "materialise", str(error))
                continue
        result.clips.append(clip)
    if out_dir is not None:
        result.stages.append("materialise")
    _check_count(result, settings)
    return result


def _examine(record: ClipRecord, catalog: ClipCatalog, settings: RetrievalSettings, segmenter: Segmenter | None,
             downloader: Downloader | None, run: _Run):
    """(record with probed attributes, local path, start, end, frames) or None after recording a drop."""
    if record.is_remote:
        if not (settings.allow_download and downloader is not None):
            run.drop(record, "video", "remote source (URL) and the downloader hook is off")
            return None
        folder = Path(settings.output_dir or tempfile.gettempdir()) / "downloads"
        folder.mkdir(parents=True, exist_ok=True)
        local = str(downloader(record, folder))
    else:
        local = catalog.resolve_source(record)
    info = probe(local)
    start = record.start or 0.0
    end = min(record.end, info.duration) if record.end is not None else info.duration
    probed = replace(record, duration=end - start, fps=info.fps, width=info.width, height=info.height)
    reason = settings.filters.check(probed)
    if reason:
        run.drop(probed, "filter", reason)
        return None
    times, frames = sample_frames(local, start, end, settings.sample_fps)
    if segmenter is not None:
        segment, why = segmenter.segment(times, frames)
        if segment is None:
            run.drop(probed, "segment", why)
            return None
        start, end = segment.start, min(segment.end, end)
        frames = [f for t, f in zip(times, frames) if start <= t < end]
    return probed, local, start, end, frames


def _check_count(result: RetrievalResult, settings: RetrievalSettings) -> None:
    if len(result.clips) < settings.min_clips:
        result.warnings.append(f"only {len(result.clips)} clip(s) kept; a motion prior wants at least "
                               f"{settings.min_clips}: widen the filters or add clips to the catalog")
