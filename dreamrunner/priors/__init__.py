"""Subject and motion priors: test-time LoRA tuning on CogVideoX or Wan 2.1 (0-based blocks, as the released code: motion even, subject odd)."""

from .data import PriorDataError, TrainingClip, load_static_clip, load_video_clip, subject_caption
from .encoding import EncodingCache, model_fingerprint
from .lora import PriorFileError, TARGET_MODULES, prior_blocks, read_card, save_prior
from .objectives import debiased_temporal_loss, diffusion_targets, frame_loss
from .service import (PriorError, PriorOutcome, PriorRequest, current_prior, motion_request, subject_request,
                      train_motion, train_prior, train_subject)
from .training import Example, MotionTrainer, SubjectTrainer, TrainResult

__all__ = [
    "EncodingCache", "Example", "MotionTrainer", "PriorDataError", "PriorError", "PriorFileError", "PriorOutcome",
    "PriorRequest", "SubjectTrainer", "current_prior", "motion_request", "subject_request", "TARGET_MODULES", "TrainResult", "TrainingClip", "debiased_temporal_loss",
    "diffusion_targets", "frame_loss", "load_static_clip", "load_video_clip", "model_fingerprint", "prior_blocks",
    "read_card", "save_prior", "subject_caption", "train_motion", "train_prior", "train_subject",
]
