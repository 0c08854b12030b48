"""The paper's story metrics, computed over frames with encoders loaded through transformers.

    from dreamrunner.metrics import CLIPEncoder, character_consistency
    clip = CLIPEncoder.from_pretrained()                 # openai/clip-vit-large-patch14-336
    character_consistency(frames, reference_images, clip)

`evaluate` scores whole sets of videos (a project's chosen renders or a folder) and returns an
`EvalReport` laid out like the paper's Table 1. See docs/metrics.md.
"""

from .encoders import (
    DEFAULT_CLIP,
    DEFAULT_DINO,
    CLIPEncoder,
    DINOv2Encoder,
    ImageEncoder,
    TextImageEncoder,
    VideoTextEncoder,
)
from .evaluate import COLUMNS, Column, EvalConfig, EvalReport, VideoSample, VideoScores, evaluate, score_video
from .frames import MetricsError, read_video, sample_indices
from .loading import EncoderSpec, Encoders, load_encoders, load_hooks, tiny_encoders
from .quality import (
    DEFAULT_AESTHETIC_CLIP,
    FrameInterpolator,
    ImageQualityScorer,
    LaionAestheticScorer,
    frame_quality,
    motion_smoothness,
)
from .sources import samples_from_folder, samples_from_project
from .story_metrics import (
    Event,
    character_consistency,
    events_from_texts,
    fine_grained_text_alignment,
    fine_grained_video_text_alignment,
    scene_events,
    text_alignment,
    transition_smoothness,
    video_text_alignment,
)

__all__ = [
    "COLUMNS", "CLIPEncoder", "Column", "DEFAULT_AESTHETIC_CLIP", "DEFAULT_CLIP", "DEFAULT_DINO", "DINOv2Encoder",
    "EncoderSpec", "Encoders", "EvalConfig", "EvalReport", "Event", "FrameInterpolator", "ImageEncoder",
    "ImageQualityScorer", "LaionAestheticScorer", "MetricsError", "TextImageEncoder", "VideoSample", "VideoScores",
    "VideoTextEncoder", "character_consistency", "evaluate", "events_from_texts", "fine_grained_text_alignment",
    "fine_grained_video_text_alignment", "frame_quality", "load_encoders", "load_hooks", "motion_smoothness", "read_video",
    "sample_indices", "samples_from_folder", "samples_from_project", "scene_events", "score_video", "text_alignment",
    "tiny_encoders", "transition_smoothness", "video_text_alignment",
]
