"""Model backends: the CogVideoX components a stage needs, loaded from weights or built tiny for tests.

Every stage takes a `ModelComponents` and never cares where it came from, so tests run the very code
paths users run with real checkpoints, on tiny random-weight models built from small configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelComponents:
    """The parts of a CogVideoX text-to-video model, as diffusers' CogVideoXPipeline holds them."""

    name: str
    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    # True for random weights: everything generated from these components is noise, not a result.
    is_noise: bool = False
    # Frame geometry the model was made for (VideoSettings field values), e.g. num_frames=49, height=480.
    video_defaults: dict = field(default_factory=dict)

    @property
    def max_text_tokens(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def pipeline_kwargs(self) -> dict:
        return {"tokenizer": self.tokenizer, "text_encoder": self.text_encoder, "vae": self.vae,
                "transformer": self.transformer, "scheduler": self.scheduler}


NOISE_LABEL = "RANDOM WEIGHTS - NOISE, NOT A RESULT"
