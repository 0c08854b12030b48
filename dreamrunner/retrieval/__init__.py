"""Retrieval-augmented motion priors: find reference clips for a motion in a caption catalog.

BM25 over captions -> attribute filters -> tracking-based segments -> CLIP re-ranking -> 4-20 clips.
The public API the editor and CLI use is exported here; see docs/retrieval.md.
"""

from .catalog import ClipCatalog
from .dense import CaptionEncoder, load_caption_encoder
from .detection import (
    Detection,
    Detector,
    DetectorUnavailable,
    HogPeopleDetector,
    MotionBlobDetector,
    TransformersDetector,
    make_detector,
)
from .filters import ClipFilter
from .importers import read_table, read_video_folder
from .pipeline import (
    DroppedClip,
    RetrievalResult,
    RetrievalSettings,
    RetrievedClip,
    default_demo_catalog,
    retrieve_clips,
)
from .records import CatalogError, ClipRecord, UnreadableVideo
from .rerank import ClipFrameScorer, ClipScorer, FunctionScorer, ScorerUnavailable, select_clips
from .tracking import IouTracker, Segment, Segmenter
from .video import VideoInfo, materialise, probe, sample_frames

__all__ = [
    "CaptionEncoder", "CatalogError", "ClipCatalog", "ClipFilter", "ClipFrameScorer", "ClipRecord", "ClipScorer",
    "Detection", "Detector", "DetectorUnavailable", "DroppedClip", "FunctionScorer", "HogPeopleDetector",
    "IouTracker", "MotionBlobDetector", "RetrievalResult", "RetrievalSettings", "RetrievedClip",
    "ScorerUnavailable", "Segment", "Segmenter", "TransformersDetector", "UnreadableVideo", "VideoInfo",
    "default_demo_catalog", "load_caption_encoder", "make_detector", "materialise", "probe", "read_table",
    "read_video_folder", "retrieve_clips", "sample_frames", "select_clips",
]
