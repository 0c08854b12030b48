"""The storyboard data model: one `Story` flows through every stage and is what a project file stores.

Pydantic (v2) rather than dataclasses because every stage needs what it gives for free: validation
with the location of each failure (which scene, keyframe, entity), lossless JSON round trips, and a
JSON schema the planner hands to LLMs for structured output.

Stages add to the story (approved clips, trained priors, renders); they never keep a second copy of
the plan. Fields a user changed by hand are listed in `user_edited` so re-planning can keep them.
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .backends import temporal_patch, vae_spatial
from .media import DEFAULT_BACKGROUND, background_rgb
from .video_presets import MAX_SIDE, MODEL_VIDEO, frames_message

NUM_KEYFRAMES = 6
# The most frames any model here makes (CogVideoX 1.5: 161); what each model makes is video_presets.MODEL_VIDEO.
# More would leave every training distribution (and grow attention quadratically).
MAX_NUM_FRAMES = max(max(row.frame_counts) for row in MODEL_VIDEO.values())


def _check_media_path(path: str) -> str:
    """Media paths are relative to the project folder and may not leave it."""
    if not path:
        raise ValueError("media path is empty")
    if (control := next((c for c in path if ord(c) < 32 or ord(c) == 127), None)) is not None:
        # No file system takes NUL; the others break portable file names and the tools given the path.
        raise ValueError(f"media path {path!r} contains the control character {control!r}")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in path.split("/")):
        raise ValueError(f"media path {path[:60]!r}... has a name longer than file systems take (255 bytes)")
    if "\\" in path:
        raise ValueError(f"media path {path!r} must use '/' separators")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"media path {path!r} must be relative to the project folder, not absolute")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"media path {path!r} escapes the project folder")
    return normal


MediaPath = Annotated[str, AfterValidator(_check_media_path)]


def slug(text: str, fallback: str = "item") -> str:
    """The one id and file-name rule: ASCII letters and digits joined by '-', e.g. "Mira Moon" -> "mira-moon"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.casefold()).strip("-")[:40].strip("-") or fallback


def unique_id(base: str, taken: set[str]) -> str:
    """`base`, or `base-2`, `base-3`, ... whichever is not taken."""
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}-{number}", number + 1
    return candidate


def _allows_bool(annotation: Any) -> bool:
    """Whether a field's type takes True/False: `bool` (or a Literal of a bool) anywhere in it."""
    if annotation is bool or isinstance(annotation, bool):
        return True
    return any(_allows_bool(arg) for arg in get_args(annotation))


# Seeds are 0..2**63 - 1: what every consumer takes (torch.Generator.manual_seed, numpy, an int64 field). A
# negative seed is refused, not wrapped: torch reads -1 as 2**64 - 1, so two numbers would name one render.
MAX_SEED = 2**63 - 1
MAX_VARIANTS = 64
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Checked(BaseModel):
    """The one rule for numbers in every model a user or a file fills (project files, `dreamrunner set`,
    the editor, planner and retrieval settings): unknown keys are refused (a typo in a hand-edited project
    is reported, not dropped), every float is finite (no Infinity, NaN or 1e309: a project file could not
    store it as JSON), and a number field refuses true/false, which pydantic would read as 1/0
    (`video.num_frames = true` is not one frame)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        holds_bool = isinstance(value, bool) or (isinstance(value, (list, tuple))
                                                  and any(isinstance(v, bool) for v in value[:16]))
        if holds_bool and info.field_name and not _allows_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"must be a number, not {json.dumps(value)[:40]}")
        return value


class Model(Checked):
    model_config = ConfigDict(validate_assignment=True)


def _check_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    for name, value in zip(("x0", "y0", "x1", "y1"), box):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} = {value} is outside [0, 1]")
    if not x0 < x1:
        raise ValueError(f"x0 = {x0} must be less than x1 = {x1}")
    if not y0 < y1:
        raise ValueError(f"y0 = {y0} must be less than y1 = {y1}")
    return box


# A normalized box (left, top, right, bottom), origin top-left.
Box = Annotated[tuple[float, float, float, float], AfterValidator(_check_box)]


class Editable(Model):
    # Names of this object's fields that a user set by hand; re-planning keeps them.
    user_edited: list[str] = Field(default_factory=list)

    @field_validator("user_edited")
    @classmethod
    def _known_fields(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(cls.model_fields) - {"entities"})
        if unknown:
            raise ValueError(f"user_edited names unknown fields {unknown}")
        return sorted(set(names))

    def mark_edited(self, *fields: str) -> None:
        self.user_edited = [*self.user_edited, *fields]

    def is_edited(self, field: str) -> bool:
        return field in self.user_edited


class Character(Model):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    # The rare token a subject prior is tuned on, e.g. "[v1]"; it stands in prompts for this character.
    token: str = Field(pattern=r"^\[[^\[\]\s]+\]$")
    description: str = ""
    reference_images: list[MediaPath] = Field(default_factory=list)


class Entity(Editable):
    """One region of a keyframe: [name, motion, description] with its box, as in the paper's plans."""

    name: str = Field(min_length=1)
    character_id: str | None = None
    motion: str | None = None
    description: str = Field(min_length=1)
    box: Box


def entity_key(entity: Entity) -> str:
    """Who an entity is across keyframes (its track): its character, else its name."""
    return f"character:{entity.character_id}" if entity.character_id else f"name:{entity.name.strip().casefold()}"


class KeyFrame(Editable):
    index: int = Field(ge=0, lt=NUM_KEYFRAMES)
    entities: list[Entity] = Field(default_factory=list)


class ClipRef(Model):
    """A reference clip the user approved for one motion of a scene."""

    id: str = Field(min_length=1)
    motion: str = Field(min_length=1)
    path: MediaPath
    caption: str = ""
    score: float | None = None
    source: str = ""


class PriorBinding(Model):
    """Binds a trained prior (subject or motion LoRA) to this scene with a strength."""

    prior_id: str = Field(min_length=1)
    scale: float = Field(default=1.0, ge=0.0, le=4.0)


class RenderResult(Model):
    seed: Seed
    path: MediaPath
    cache_key: str = Field(min_length=1)
    backend: str = Field(min_length=1)
    # True when the frames come from random weights (the tiny backend): they are noise, not a result.
    is_noise: bool = False
    # The priors (and strengths) this render was made with; its cache key hashes their files.
    priors: list[PriorBinding] = Field(default_factory=list)
    # The settings it was rendered with, so the render history can list them (None: rendered before they
    # were recorded). `plan_digest` is `plan_digest(scene)` at render time: it tells a render of an older plan.
    steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None
    region_control: str | None = None  # `RegionControl.name`: "sr3ai-fast", or the stock baseline
    plan_digest: str | None = None


class Scene(Editable):
    id: str = Field(min_length=1)
    description: str = ""
    narration: str = ""
    motions: list[str] = Field(default_factory=list)
    background: str = Field(min_length=1)
    keyframes: list[KeyFrame]
    approved_clips: list[ClipRef] = Field(default_factory=list)
    prior_bindings: list[PriorBinding] = Field(default_factory=list)
    renders: list[RenderResult] = Field(default_factory=list)
    chosen_render: int | None = None
    # This scene's own sampling settings; None: the story default (`scene_render_settings`).
    render: RenderOverrides | None = None

    @model_validator(mode="after")
    def _check_keyframes(self) -> Scene:
        if len(self.keyframes) != NUM_KEYFRAMES:
            raise ValueError(f"has {len(self.keyframes)} keyframes, expected {NUM_KEYFRAMES}")
        for position, keyframe in enumerate(self.keyframes):
            if keyframe.index != position:
                raise ValueError(f"keyframe at position {position} has index {keyframe.index}")
        if self.chosen_render is not None and not 0 <= self.chosen_render < len(self.renders):
            raise ValueError(f"chosen_render {self.chosen_render} is not one of its {len(self.renders)} renders")
        return self


PLAN_FIELDS = {"description", "narration", "motions", "background", "keyframes"}


def scene_plan(scene: Scene) -> dict:
    """The part of a scene that decides what a render shows (its plan), without the `user_edited` marks."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "user_edited"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(scene.model_dump(mode="json", include=PLAN_FIELDS))


def plan_digest(scene: Scene) -> str:
    """A short SHA-256 of `scene_plan(scene)`: equal digests, equal plans."""
    import hashlib
    import json

    text = json.dumps(scene_plan(scene), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Prior(Model):
    """A trained LoRA: a subject prior for a character or a motion prior for a motion."""

    id: str = Field(min_length=1)
    kind: Literal["subject", "motion"]
    target: str = Field(min_length=1)  # character id (subject) or motion text (motion)
    path: MediaPath
    card: dict = Field(default_factory=dict)


class VideoSettings(Model):
    """Frame geometry. The latent factors: a 4x temporal VAE, `vae_spatial` pixels per latent cell (8, or 16
    for Wan 2.2 TI2V-5B's VAE), patch 2, and `patch_size_t` latent frames per token frame: 1 for CogVideoX 2B/5B
    and Wan, 2 for CogVideoX 1.5 (the story's render backend must be of that kind: `Story` checks both)."""

    num_frames: int = Field(default=49, ge=1)
    fps: int = Field(default=8, ge=1, le=120)
    # CogVideoX 2B/5B were trained at 480x720; a side past 2048 gives a token grid (and region masks) that
    # no GPU attends over, so validation stops there instead of building it.
    height: int = Field(default=480, ge=16, le=MAX_SIDE)
    width: int = Field(default=720, ge=16, le=MAX_SIDE)
    # Fixed by the model's VAE and transformer (they divide frame counts and sides): stored for the record;
    # vae_spatial and patch_size_t follow the model (Wan 2.2 TI2V-5B: 16; CogVideoX 1.5: patch_size_t 2).
    vae_spatial: Literal[8, 16] = 8
    vae_temporal: Literal[4] = 4
    patch_size: Literal[2] = 2
    patch_size_t: Literal[1, 2] = 1
    # Boxes within a keyframe's second (dreamrunner.regions): "hold" them (the released code) or "interpolate"
    # between keyframes (the paper's wording).
    keyframe_boxes: Literal["hold", "interpolate"] = "hold"

    @model_validator(mode="after")
    def _check_geometry(self) -> VideoSettings:
        # What every model's VAE needs: one latent of the first frame and one of every 4 after it. A model's own
        # rule (CogVideoX 8N+1, 1.5 16N+1, Wan 4N+1) is its MODEL_VIDEO row, which `Story` holds it to.
        if self.num_frames > MAX_NUM_FRAMES:
            raise ValueError(f"num_frames = {self.num_frames} is more than any model makes: at most "
                             f"{MAX_NUM_FRAMES} (CogVideoX 1.5; each backend's frame counts: docs/rendering.md)")
        if (self.num_frames - 1) % self.vae_temporal:
            lower = self.num_frames - (self.num_frames - 1) % self.vae_temporal
            higher = min(lower + self.vae_temporal, MAX_NUM_FRAMES)
            raise ValueError(f"num_frames = {self.num_frames} is not 4N+1 (the VAE makes one latent of the first "
                             f"frame and one of every 4 after it), e.g. {lower} or {higher}")
        step = self.vae_spatial * self.patch_size
        if self.height % step or self.width % step:
            raise ValueError(f"height and width must be multiples of {step}, got {self.height}x{self.width}")
        return self

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // self.vae_temporal + 1

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(frames, rows, cols) of video tokens; 13 x 30 x 45 for 49 frames at 480x720. Token frames are
        ceil(latent frames / patch_size_t), as diffusers pads the latents: 11 x 48 x 85 for CogVideoX 1.5's
        81 frames (21 latent frames + 1 padding) at 768x1360; 31 x 22 x 40 for Wan 2.2 TI2V-5B's 121 frames at
        704x1280 (vae_spatial 16: 32 pixels per token)."""
        frames = -(-self.latent_frames // self.patch_size_t)
        step = self.vae_spatial * self.patch_size
        return frames, self.height // step, self.width // step


# Sampler presets (scheduler, guidance, steps). "paper": the authors' released story run (inference.sh: CogVideoX's
# DPM scheduler, CogVideoXDPMScheduler in diffusers, guidance 9.0, 50 steps), the default for stories.
# "cogvideox": diffusers' CogVideoX defaults (DDIM, guidance 6.0), what DreamRunner used before.
SAMPLER_PRESETS = {
    "paper": {"scheduler": "dpm", "guidance_scale": 9.0, "steps": 50},
    "cogvideox": {"scheduler": "ddim", "guidance_scale": 6.0, "steps": 50},
}


DTYPES = ("bf16", "fp16", "fp32")


class RenderSettings(Model):
    """How scenes are sampled: the story default (`settings.render`); a scene may override the sampling
    fields (`Scene.render`), and `scene_render_settings` merges the two for every renderer."""

    backend: str = "tiny"
    scheduler: Literal["dpm", "ddim"] = SAMPLER_PRESETS["paper"]["scheduler"]
    steps: int = Field(default=SAMPLER_PRESETS["paper"]["steps"], ge=1, le=1000)
    guidance_scale: float = Field(default=SAMPLER_PRESETS["paper"]["guidance_scale"], ge=0.0, le=100.0)
    # Guidance rising from 1 to 1 + guidance_scale over the steps (diffusers' CogVideoXPipeline `use_dynamic_cfg`).
    use_dynamic_cfg: bool = False
    negative_prompt: str = ""
    seed: Seed = 42
    # Variant v renders with seed + v, so the last one must still be a seed.
    variants: int = Field(default=1, ge=1, le=MAX_VARIANTS)
    # Explicit seeds, one variant each; when given they replace seed + variants.
    seeds: list[Seed] = Field(default_factory=list, max_length=MAX_VARIANTS)
    # Weights and activations: None is the backend's own (fp16 for CogVideoX-2B, bf16 for 5B, fp32 for tiny).
    dtype: Literal["bf16", "fp16", "fp32"] | None = None

    @model_validator(mode="after")
    def _check_last_seed(self) -> RenderSettings:
        if self.seed + self.variants - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} with {self.variants} variants passes the largest seed, {MAX_SEED}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} name a seed twice; each variant needs its own seed")
        # CogVideo's own demo: "use_dynamic_cfg=True  # This is used for DPM scheduler, for DDIM scheduler, it
        # should be False". diffusers would run it with DDIM all the same; we refuse.
        if self.use_dynamic_cfg and self.scheduler != "dpm":
            raise ValueError(f"use_dynamic_cfg works with scheduler 'dpm' only, not {self.scheduler!r}: choose "
                             "scheduler 'dpm' or turn use_dynamic_cfg off")
        return self

    def seed_list(self) -> list[int]:
        """The seeds of a scene's variants: `seeds` where given, else `seed`, `seed + 1`, ... (`variants` of them)."""
        return list(self.seeds) or [self.seed + v for v in range(self.variants)]

    @model_validator(mode="before")
    @classmethod
    def _saved_before_presets(cls, data):
        """Settings saved before the scheduler was a setting (every field of then, no `scheduler`) rendered
        with DDIM: those still holding that era's defaults (50 steps, guidance 6.0) move to the paper preset;
        other values were chosen by hand for DDIM, and keep it."""
        saved = {"backend", "steps", "guidance_scale", "negative_prompt", "seed", "variants"}
        if isinstance(data, dict) and "scheduler" not in data and saved <= set(data):
            chosen = (data["steps"], data["guidance_scale"]) != (50, 6.0)
            data = {**data, **({"scheduler": "ddim"} if chosen else SAMPLER_PRESETS["paper"])}
        return data

    def with_preset(self, name: str) -> RenderSettings:
        """These settings with a preset's scheduler, guidance and steps."""
        if name not in SAMPLER_PRESETS:
            raise ValueError(f"unknown sampler preset {name!r}; choose one of {sorted(SAMPLER_PRESETS)}")
        return self.model_copy(update=SAMPLER_PRESETS[name])


class RenderOverrides(Checked):
    """A scene's own sampling settings (`Scene.render`); a field left None takes the story default. The model
    (backend, dtype) and the frame geometry are the story's: every scene of a story video shares them."""

    model_config = ConfigDict(validate_assignment=True)

    scheduler: Literal["dpm", "ddim"] | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    use_dynamic_cfg: bool | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    variants: int | None = None
    seeds: list[int] | None = None

    @model_validator(mode="after")
    def _check_values(self) -> RenderOverrides:
        # The bounds of the story default, one rule for both (how fields combine is checked when merged).
        fields = self.given()
        for name, value in fields.items():
            RenderSettings.__pydantic_validator__.validate_assignment(RenderSettings.model_construct(), name, value)
        return self

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


SCENE_RENDER_FIELDS = tuple(RenderOverrides.model_fields)


def scene_render_settings(story: Story, scene: Scene) -> RenderSettings:
    """The settings `scene` renders with: the story default with the scene's override on top. An override that
    names `seed` or `variants` but not `seeds` renders those, not the default's explicit seeds. The one merge
    every renderer uses; raises ValueError (pydantic's) when the two do not go together."""
    settings = story.settings.render
    if scene.render is None:
        return settings
    given = scene.render.given()
    if given.keys() & {"seed", "variants"} and "seeds" not in given:
        given["seeds"] = []
    return RenderSettings.model_validate({**settings.model_dump(), **given})


# Steps per prior kind in the authors' released story run: motion checkpoints at 120, 300 and 360 steps, subject
# checkpoints at 160 (docs/priors.md, "How many steps").
DEFAULT_PRIOR_STEPS = {"motion": 300, "subject": 160}


class PriorSettings(Model):
    """Test-time LoRA tuning; defaults are those of the paper's code."""

    # Upper bounds on what reaches torch as a tensor size or loop count: far above any use, below overflow.
    rank: int = Field(default=32, ge=1, le=1024)
    learning_rate: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=1, ge=1, le=256)
    # None: the kind's default (DEFAULT_PRIOR_STEPS); a number applies to both kinds.
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    lora_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    checkpoint_every: int = Field(default=100, ge=1, le=1_000_000)
    seed: Seed = 0
    # Motion priors may train below the model's resolution, e.g. (240, 352): about 4x fewer video tokens.
    motion_resolution: tuple[int, int] | None = None
    # Memory/speed trade-off (dreamrunner.priors.memory, .speed; measured in docs/benchmarks.md); none changes
    # the objective. Checkpointing: which blocks recompute their activations; LoRA matmuls in the backbone's
    # dtype with fp32 master weights; torch.compile of each transformer block ("gpu": on CUDA only). The
    # defaults keep a margin under 24 GB at each model family's default size (H200, docs/benchmarks.md).
    # `uncheckpointed_blocks` None: the family's own count (priors.memory.DEFAULT_UNCHECKPOINTED_BLOCKS).
    gradient_checkpointing: Literal["off", "full", "selective"] = "selective"
    uncheckpointed_blocks: int | None = Field(default=None, ge=0, le=1000)
    lora_compute: Literal["float32", "backbone"] = "backbone"
    compile_blocks: Literal["off", "gpu", "always"] = "gpu"

    @model_validator(mode="before")
    @classmethod
    def _saved_before_kind_steps(cls, data):
        """Settings saved before per-kind step counts (the fields of then, no `lora_dropout`) that still hold
        that era's default of 500 steps move to the per-kind defaults; a count chosen by hand stays."""
        saved = {"rank", "learning_rate", "weight_decay", "batch_size", "max_steps", "checkpoint_every", "seed"}
        if isinstance(data, dict) and "lora_dropout" not in data and saved <= set(data) and data["max_steps"] == 500:
            data = {**data, "max_steps": None}
        return data

    def steps_for(self, kind: str) -> int:
        """Training steps of a prior of this kind ("subject" or "motion")."""
        return self.max_steps if self.max_steps is not None else DEFAULT_PRIOR_STEPS[kind]

    @field_validator("motion_resolution")
    @classmethod
    def _check_motion_resolution(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        # 8x VAE downsampling then 2x2 patches: both sides must be multiples of 16.
        if size is not None and (size[0] < 16 or size[1] < 16 or size[0] % 16 or size[1] % 16):
            raise ValueError(f"motion_resolution {size[0]}x{size[1]} must be positive multiples of 16 (e.g. 240x352)")
        return size


class StorySettings(Model):
    video: VideoSettings = Field(default_factory=VideoSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)
    prior: PriorSettings = Field(default_factory=PriorSettings)
    # The colour the transparent parts of a reference image are composited on when it is added (editor and
    # `plan --character`): a colour name or #rrggbb. See dreamrunner.media.
    reference_background: str = DEFAULT_BACKGROUND

    @field_validator("reference_background")
    @classmethod
    def _check_background(cls, color: str) -> str:
        try:
            background_rgb(color)
        except ValueError:
            raise ValueError(f"reference_background {color!r} is not a colour (a name such as 'white', or "
                             f"'#rrggbb')") from None
        return color


class Story(Model):
    title: str = ""
    topic: str = ""
    characters: list[Character] = Field(default_factory=list)
    scenes: list[Scene] = Field(default_factory=list)
    priors: list[Prior] = Field(default_factory=list)
    settings: StorySettings = Field(default_factory=StorySettings)

    @model_validator(mode="after")
    def _check_backend_geometry(self) -> Story:
        # Checked on the whole story (not on assignment to its settings), so a backend and the geometry it
        # needs can be set in either order within one change. The frame size is held to the model when it is
        # set and before a render (video_presets.check_video), so projects saved at another size still load.
        render, video = self.settings.render, self.settings.video
        wanted = temporal_patch(render.backend)
        fix = (f"`dreamrunner set PROJECT render.backend={render.backend}` (or the editor's model choice) switches "
               f"the video settings to the model's own with it")
        if video.vae_spatial != vae_spatial(render.backend):
            raise ValueError(
                f"settings: render.backend {render.backend!r} takes video.vae_spatial = "
                f"{vae_spatial(render.backend)} (its VAE's pixels per latent cell), but the video settings have "
                f"vae_spatial = {video.vae_spatial}: {fix}")
        if video.patch_size_t != wanted:
            kinds = {1: "one latent frame per token frame (CogVideoX 2B/5B, Wan 2.1)",
                     2: "two latent frames per token frame (CogVideoX 1.5)"}
            raise ValueError(
                f"settings: render.backend {render.backend!r} takes video.patch_size_t = {wanted}, "
                f"{kinds[wanted]}, but the video settings have patch_size_t = {video.patch_size_t}: {fix}")
        if (message := frames_message(render.backend, video.num_frames)) is not None:
            raise ValueError(f"settings: {message}; set video.num_frames to one of them, or {fix}")
        return self

    @model_validator(mode="after")
    def _check_references(self) -> Story:
        _unique("character id", [c.id for c in self.characters])
        _unique("character token", [c.token for c in self.characters])
        _unique("scene id", [s.id for s in self.scenes])
        _unique("prior id", [p.id for p in self.priors])
        characters = {c.id for c in self.characters}
        priors = {p.id for p in self.priors}
        for s, scene in enumerate(self.scenes):
            for keyframe in scene.keyframes:
                for e, entity in enumerate(keyframe.entities):
                    if entity.character_id is not None and entity.character_id not in characters:
                        raise ValueError(
                            f"scene {s + 1} ({scene.id!r}), keyframe {keyframe.index + 1}, entity {e + 1} "
                            f"({entity.name!r}): character_id {entity.character_id!r} is not a character of the story"
                        )
            try:
                scene_render_settings(self, scene)
            except ValueError as error:
                detail = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
                raise ValueError(f"scene {s + 1} ({scene.id!r}): its render settings with the story default: "
                                 f"{detail.removeprefix('Value error, ')}") from None
            for binding in scene.prior_bindings:
                if binding.prior_id not in priors:
                    raise ValueError(f"scene {s + 1} ({scene.id!r}): prior {binding.prior_id!r} is not a prior of the story")
        for prior in self.priors:
            if prior.kind == "subject" and prior.target not in characters:
                raise ValueError(f"prior {prior.id!r}: subject target {prior.target!r} is not a character of the story")
        return self

    def character(self, character_id: str) -> Character:
        for character in self.characters:
            if character.id == character_id:
                return character
        raise KeyError(f"no character with id {character_id!r}")

    def scene(self, scene_id: str) -> Scene:
        for scene in self.scenes:
            if scene.id == scene_id:
                return scene
        raise KeyError(f"no scene with id {scene_id!r}")


def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is used twice")
        seen.add(value)
