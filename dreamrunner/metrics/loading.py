"""Which models score which column: the encoder set, loaded from a spec, with the reason for each one missing.

A model that cannot be loaded is not an error here: its columns are skipped and the report says why.
Models transformers does not ship (ViCLIP, MUSIQ, AMT) come in through hooks: `module:function`, called
with the device, returning an object of the matching interface.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ..backends import default_device
from .encoders import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLIP,
    DEFAULT_DINO,
    CLIPEncoder,
    DINOv2Encoder,
    ImageEncoder,
    TextImageEncoder,
    VideoTextEncoder,
)
from .frames import MetricsError
from .quality import DEFAULT_AESTHETIC_CLIP, FrameInterpolator, ImageQualityScorer, LaionAestheticScorer

SLOTS = ("clip", "dino", "viclip", "aesthetic", "imaging_quality", "interpolator")

NO_VICLIP = ("ViCLIP (InternVid) is not available through transformers; pass a video-text encoder hook "
             "(--viclip module:function)")
NO_AESTHETIC_HEAD = ("needs the LAION aesthetic predictor head that VBench uses (sa_0_4_vit_l_14_linear.pth, a linear "
                     "layer over CLIP ViT-L/14 embeddings); pass --aesthetic-head PATH")
NO_IMAGING = ("VBench's imaging quality uses MUSIQ (SPAQ weights, pyiqa), which transformers does not provide; "
              "pass an image-quality hook (--imaging-quality module:function)")
NO_INTERPOLATOR = ("VBench's motion smoothness uses the AMT-S frame-interpolation model, which transformers does not "
                   "provide; pass a frame-interpolator hook (--interpolator module:function)")


@dataclass
class Encoders:
    """The models the metrics use; a slot left None has its reason in `unavailable`."""

    clip: TextImageEncoder | None = None
    dino: ImageEncoder | None = None
    viclip: VideoTextEncoder | None = None
    aesthetic: ImageQualityScorer | None = None
    imaging_quality: ImageQualityScorer | None = None
    interpolator: FrameInterpolator | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    def reason(self, slot: str) -> str:
        return self.unavailable.get(slot, f"no {slot} model was given")

    @property
    def random_weights(self) -> list[str]:
        """The slots whose models have random weights (their numbers measure nothing)."""
        return [slot for slot in SLOTS if getattr(getattr(self, slot), "random_weights", False)]

    def describe(self) -> dict[str, dict]:
        return {slot: {"model": getattr(self, slot).model_id,
                       "random_weights": bool(getattr(self, slot).random_weights)}
                for slot in SLOTS if getattr(self, slot) is not None}


@dataclass
class EncoderSpec:
    """Which models to load (configuration as data)."""

    clip_model: str = DEFAULT_CLIP
    dino_model: str = DEFAULT_DINO
    aesthetic_clip_model: str = DEFAULT_AESTHETIC_CLIP
    aesthetic_head: str | None = None
    viclip: str | None = None
    imaging_quality: str | None = None
    interpolator: str | None = None
    device: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    # Only use models already in the local Hugging Face cache (no network round trips when offline).
    local_files_only: bool = False


def load_hook(spec: str, what: str) -> Callable:
    """The function named by `module:function`."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise MetricsError(f"{what} hook {spec!r} must be written module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise MetricsError(f"{what} hook {spec!r}: cannot import {module_name}: {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise MetricsError(f"{what} hook {spec!r}: {module_name} has no function {name!r}")
    return function


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def load_encoders(spec: EncoderSpec) -> Encoders:
    """Load every model the spec names; each one that fails is recorded in `unavailable` with why."""
    device = spec.device or default_device()
    common = dict(device=device, batch_size=spec.batch_size, local_files_only=spec.local_files_only)
    encoders = Encoders()
    try:
        encoders.clip = CLIPEncoder.from_pretrained(spec.clip_model, **common)
    except OSError as error:
        encoders.unavailable["clip"] = f"CLIP model {spec.clip_model!r} could not be loaded ({_first_line(error)})"
    try:
        encoders.dino = DINOv2Encoder.from_pretrained(spec.dino_model, **common)
    except OSError as error:
        encoders.unavailable["dino"] = f"DINOv2 model {spec.dino_model!r} could not be loaded ({_first_line(error)})"
    if spec.aesthetic_head is None:
        encoders.unavailable["aesthetic"] = NO_AESTHETIC_HEAD
    else:
        try:
            encoders.aesthetic = LaionAestheticScorer.from_files(spec.aesthetic_head, spec.aesthetic_clip_model,
                                                                 **common)
        except OSError as error:
            encoders.unavailable["aesthetic"] = (f"aesthetic CLIP model {spec.aesthetic_clip_model!r} could not be "
                                                 f"loaded ({_first_line(error)})")
    return load_hooks(spec, encoders)


def load_hooks(spec: EncoderSpec, encoders: Encoders) -> Encoders:
    """Fill the slots of models transformers does not ship from the spec's hooks; the others keep their reason."""
    device = spec.device or default_device()
    hooks = (("viclip", spec.viclip, NO_VICLIP, VideoTextEncoder),
             ("imaging_quality", spec.imaging_quality, NO_IMAGING, ImageQualityScorer),
             ("interpolator", spec.interpolator, NO_INTERPOLATOR, FrameInterpolator))
    for slot, hook, missing, interface in hooks:
        if hook is None:
            encoders.unavailable.setdefault(slot, missing)
            continue
        model = load_hook(hook, slot)(device)
        if not isinstance(model, interface):
            raise MetricsError(f"{slot} hook {hook!r} returned a {type(model).__name__}, which lacks the "
                               f"{interface.__name__} interface")
        setattr(encoders, slot, model)
        encoders.unavailable.pop(slot, None)
    return encoders


def tiny_encoders(seed: int = 0, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Encoders:
    """Random-weight CLIP, DINOv2 and aesthetic head built from small configs: plumbing only, never results."""
    clip = CLIPEncoder.tiny(seed, device=device, batch_size=batch_size)
    encoders = Encoders(clip=clip, dino=DINOv2Encoder.tiny(seed, device=device, batch_size=batch_size),
                        aesthetic=LaionAestheticScorer.tiny(clip, seed))
    encoders.unavailable.update(viclip=NO_VICLIP, imaging_quality=NO_IMAGING, interpolator=NO_INTERPOLATOR)
    return encoders
