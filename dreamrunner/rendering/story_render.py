"""Story rendering: scenes in order (or chosen ones), each cached by a hash of everything that affects it.

A scene's cache key hashes its plan (background, narration, motions, every keyframe's entities and
boxes), the bound priors (id, kind, target, scale and the SHA-256 of each LoRA file), frame geometry,
sampling settings, the model and the region control. Each variant is one seed; the clip of (key, seed)
lives at `media/renders/<scene id>/<key[:16]>-seed<seed>.mp4` with a JSON sidecar holding its
`RenderResult`. An edit changes the keys of the scenes it touched only, so only those re-render; undoing
an edit finds the earlier clips again.

The renderer reads the story it was given and never changes or saves it: after every scene it hands the
finished renders to its `commit` callback, which stores them in the live story (`dreamrunner.edits.
store_renders`) and saves it, so a cancel or crash loses at most the scene in progress and edits made while
the job runs are kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import edits
from ..backends import (MemoryOptions, ModelComponents, backend_video_defaults, load_backend, temporal_patch,
                        vae_spatial)
from ..errors import DreamRunnerError
from ..files import file_sha256
from ..jobs import CancelToken, Progress, ProgressCallback
from ..project import Project
from ..regions import build_region_plan
from ..story import (RenderResult, RenderSettings, Scene, Story, VideoSettings, plan_digest, scene_plan,
                     scene_render_settings)
from ..validation import first_message
from ..video_presets import check_video

# Receives a scene id and the renders (variants) finished for it; stores them in the live story.
RenderCommit = Callable[[str, list[RenderResult]], None]
from ..attention import bound_prompts
from ..attention.lora import low_noise_file
from .pipeline import DreamRunnerPipeline, LoraBinding, RegionControl, SceneInput, default_region_control, pipeline_class
from ..video_io import write_video

# Bump when a change to the rendering code changes what a given key renders.
RENDER_FORMAT_VERSION = 2  # 2: keyframe timing of issue 16 (one second per keyframe, boxes held)
RENDERS_DIR = "media/renders"


class RenderError(DreamRunnerError):
    pass


def render_geometry(video: VideoSettings, components_name: str, video_defaults: dict) -> VideoSettings:
    """The geometry a scene renders at: the story's, except that random-weight (tiny) models render at
    their own small frame size, keeping the story's frame count and fps (export scales frames up).
    Raises RenderError when the backend is of another kind than the geometry (CogVideoX 1.0 vs 1.5, Wan 2.2
    TI2V-5B's 16x VAE vs an 8x one)."""
    if vae_spatial(components_name) != video.vae_spatial:
        raise RenderError(f"the {components_name} backend needs vae_spatial {vae_spatial(components_name)} video "
                          f"settings, but the story's are for vae_spatial {video.vae_spatial} (another kind): render "
                          f"with the story's backend, or switch the story to it (`dreamrunner set PROJECT "
                          f"render.backend={components_name}` switches the video settings with it)")
    if temporal_patch(components_name) != video.patch_size_t:
        raise RenderError(f"the {components_name} backend needs patch_size_t {temporal_patch(components_name)} "
                          f"video settings, but the story's are for patch_size_t {video.patch_size_t} (another "
                          f"kind): render with the story's backend, or switch the story to it (`dreamrunner set "
                          f"PROJECT render.backend={components_name}` switches the video settings with it)")
    if components_name.startswith("tiny") and video.height * video.width > video_defaults["height"] * video_defaults["width"]:
        return video.model_copy(update={"height": video_defaults["height"], "width": video_defaults["width"]})
    return video


def torch_dtype(name: str | None):
    """A `RenderSettings.dtype` name as a torch dtype; None (the backend's own) for None."""
    import torch

    return None if name is None else {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def scene_prompt(scene: Scene, prompts: tuple[str, ...]) -> str:
    """The whole-scene prompt of the stock path: narration, the region descriptions, then the background."""
    parts = [scene.narration.strip()] if scene.narration.strip() else []
    parts += [p for p in prompts[1:]]
    parts.append(scene.background)
    return ". ".join(part.rstrip(".") for part in parts) + "."


def bound_in_order(scene: Scene) -> list:
    """A scene's prior bindings in the order they render and are hashed: by prior id, so the order they were
    bound in (which means nothing) changes neither the frames (LoRA sums) nor the cache key."""
    return sorted(scene.prior_bindings, key=lambda binding: binding.prior_id)


def scene_input(project: Project | None, scene: Scene, video: VideoSettings,
                grid: tuple[int, int, int] | None = None) -> SceneInput:
    """A scene's region plan on `grid` (default: the token grid of `video`), its stock prompt and its bound
    priors, whose files `project` holds (None: a scene without priors; one with priors raises RenderError)."""
    if project is None and scene.prior_bindings:
        raise RenderError(f"scene {scene.id!r} binds priors, whose files only its project knows: pass "
                          "dreamrunner.rendering.story_render.scene_input(project, scene, video)")
    plan = build_region_plan(scene, tuple(grid) if grid is not None else video.token_grid, video.num_frames,
                             video.keyframe_boxes, video.patch_size_t)
    priors = {prior.id: prior for prior in project.story.priors} if project is not None else {}
    loras = []
    for binding in bound_in_order(scene):
        prior = priors[binding.prior_id]
        path = project.resolve(prior.path)
        loras.append(LoraBinding(name=prior.id, path=path, kind=prior.kind, scale=binding.scale,
                                 prompts=bound_prompts(plan, prior.kind, prior.target),
                                 low_noise_path=low_noise_file(path, prior.card)))
    return SceneInput(prompt=scene_prompt(scene, plan.prompts), region_plan=plan, loras=tuple(loras))


def scene_cache_key(project: Project, scene: Scene, backend: str, region_control: str, video: VideoSettings) -> str:
    """Hash of everything that affects a scene's frames, except the seed (each variant is a seed)."""
    story = project.story
    priors = {prior.id: prior for prior in story.priors}
    bound = []
    for binding in bound_in_order(scene):
        prior = priors[binding.prior_id]
        path = project.resolve(prior.path)
        if not path.is_file():
            raise RenderError(f"scene {scene.id!r}: the LoRA file of prior {prior.id!r} ({prior.path}) is missing")
        entry = {"id": prior.id, "kind": prior.kind, "target": prior.target, "scale": binding.scale,
                 "sha256": file_sha256(path)}
        low_noise = low_noise_file(path, prior.card)
        if low_noise is not None:  # a two-expert prior: its low-noise file renders too (named only then: old keys hold)
            if not low_noise.is_file():
                raise RenderError(f"scene {scene.id!r}: the low-noise LoRA file of prior {prior.id!r} "
                                  f"({low_noise.name}, beside {prior.path}) is missing")
            entry["low_noise_sha256"] = file_sha256(low_noise)
        bound.append(entry)
    plan = scene_plan(scene)
    render = _settings(story, scene)
    sampling = {"scheduler": render.scheduler, "steps": render.steps, "guidance_scale": render.guidance_scale,
                "negative_prompt": render.negative_prompt}
    # Named only when set, so the keys of renders made before these settings existed still match.
    if render.use_dynamic_cfg:
        sampling["use_dynamic_cfg"] = True
    if render.dtype is not None:
        sampling["dtype"] = render.dtype
    payload = {
        "version": RENDER_FORMAT_VERSION,
        "backend": backend,
        "region_control": region_control,
        "plan": plan,
        "priors": bound,
        "video": video.model_dump(mode="json"),
        "sampling": sampling,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _settings(story: Story, scene: Scene) -> RenderSettings:
    try:
        return scene_render_settings(story, scene)
    except ValueError as error:
        raise RenderError(f"scene {scene.id!r}: {first_message(error)}") from None


def variant_seeds(story: Story, variants: int | None = None, scene: Scene | None = None) -> list[int]:
    """The seeds of a scene's variants (`RenderSettings.seed_list` of its settings; the story default without
    `scene`); `variants` counts them from the seed instead of an explicit seeds list, checked by the same rule
    as the setting (at most `MAX_VARIANTS`, the last one a seed)."""
    render = story.settings.render if scene is None else _settings(story, scene)
    if variants is not None:
        try:
            render = RenderSettings.model_validate({**render.model_dump(), "variants": variants, "seeds": []})
        except ValueError as error:
            raise DreamRunnerError(f"{variants} variants: {first_message(error)}") from None
    return render.seed_list()


@dataclass
class SceneRenderOutcome:
    scene_id: str
    seed: int
    path: str
    cached: bool


@dataclass
class StoryRenderReport:
    outcomes: list[SceneRenderOutcome] = field(default_factory=list)

    @property
    def rendered(self) -> list[tuple[str, int]]:
        return [(o.scene_id, o.seed) for o in self.outcomes if not o.cached]

    @property
    def cached(self) -> list[tuple[str, int]]:
        return [(o.scene_id, o.seed) for o in self.outcomes if o.cached]


class StoryRenderer:
    """Renders a project's scenes, loading the model only when some scene is not cached."""

    def __init__(
        self,
        project: Project,
        backend: str | None = None,
        *,
        model_path: str | None = None,
        memory: MemoryOptions | None = None,
        components: ModelComponents | Callable[[], ModelComponents] | None = None,
        region_control: RegionControl | None = None,
        preview_every: int = 5,
        writes: bool = True,
    ):
        """`writes` False: render without writing clips or committing (a context-parallel rank other than 0,
        which takes part in every scene call while rank 0 writes; `commit` is then not called)."""
        self.writes = writes
        self.project = project
        self.backend = backend or project.story.settings.render.backend
        self._components = components
        self._model_path = model_path
        self._memory = memory
        self.region_control = region_control or default_region_control()
        self.preview_every = preview_every
        self._pipeline: DreamRunnerPipeline | None = None

    @property
    def pipeline(self) -> DreamRunnerPipeline:
        if self._pipeline is None:
            components = self._components
            if callable(components):
                components = components()
            if components is None:
                components = load_backend(self.backend, self._model_path,
                                          dtype=torch_dtype(self.project.story.settings.render.dtype),
                                          memory=self._memory)
            video = self.geometry()
            self._pipeline = pipeline_class(components).from_components(
                components, self.region_control,
                video={"num_frames": video.num_frames, "height": video.height, "width": video.width})
        return self._pipeline

    def _video_defaults(self) -> dict:
        return backend_video_defaults(self.backend)

    def geometry(self) -> VideoSettings:
        """The frame geometry scenes render at; raises VideoPresetError when the model does not make the story's."""
        video = self.project.story.settings.video
        check_video(self.backend, video.num_frames, video.height, video.width)
        return render_geometry(video, self.backend, self._video_defaults())

    def scene_key(self, scene: Scene) -> str:
        return scene_cache_key(self.project, scene, self.backend, self.region_control.name, self.geometry())

    def clip_path(self, scene: Scene, key: str, seed: int) -> str:
        return f"{RENDERS_DIR}/{scene.id}/{key[:16]}-seed{seed}.mp4"

    def cached(self, scene: Scene, key: str, seed: int) -> RenderResult | None:
        """The render of (key, seed): listed in the scene with its file, or its file and sidecar on disk; else None."""
        for render in scene.renders:
            if render.cache_key == key and render.seed == seed and self.project.resolve(render.path).is_file():
                return render
        relative = self.clip_path(scene, key, seed)
        sidecar = self.project.resolve(relative).with_suffix(".json")
        if self.project.resolve(relative).is_file() and sidecar.is_file():
            try:
                return RenderResult.model_validate_json(sidecar.read_text(encoding="utf-8"))
            except ValueError:
                return None  # a damaged sidecar: render again
        return None

    def render_scene(self, index: int, commit: RenderCommit, *, variants: int | None = None, force: bool = False,
                     progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                     place: tuple[int, int] = (1, 1), seeds: list[int] | None = None) -> list[SceneRenderOutcome]:
        """Render (or find cached) every variant of scene `index` (0-based) and hand them to `commit`.

        `place` is (n, count): this is the n-th of the `count` scenes the job renders, for the progress text.
        `seeds` renders just those variants (one task of a distributed run) instead of the scene's seeds."""
        story = self.project.story
        if not 0 <= index < len(story.scenes):
            raise RenderError(f"there is no scene {index + 1}; the story has {len(story.scenes)} scenes")
        cancel = cancel or CancelToken()
        scene = story.scenes[index]
        key = self.scene_key(scene)
        video = self.geometry()
        render_settings = _settings(story, scene)
        seeds = seeds if seeds is not None else variant_seeds(story, variants, scene)
        results: list[RenderResult] = []
        outcomes = []
        for number, seed in enumerate(seeds):
            cancel.check()
            found = None if force else self.cached(scene, key, seed)
            if found is not None:
                results.append(found)
                outcomes.append(SceneRenderOutcome(scene.id, seed, found.path, cached=True))
                continue
            # Said once: which scene of the job (its number in the story only when the job renders several),
            # which variant; the step count is the Progress's own.
            where = f"scene {scene.id}" if place[1] == 1 else f"scene {place[0]} of {place[1]} ({scene.id})"
            where += f", variant {number + 1} of {len(seeds)}" if len(seeds) > 1 else ""
            where += f", seed {seed}"

            def forward(step: Progress, where=where) -> None:
                if progress is not None:
                    progress(Progress("render", step.step, step.total, where,
                                      eta_seconds=step.eta_seconds, preview=step.preview))

            output = self.pipeline(
                scene_input(self.project, scene, video), seed=seed, scheduler=render_settings.scheduler,
                num_inference_steps=render_settings.steps, guidance_scale=render_settings.guidance_scale,
                use_dynamic_cfg=render_settings.use_dynamic_cfg, negative_prompt=render_settings.negative_prompt,
                num_frames=video.num_frames, height=video.height, width=video.width,
                progress=forward, cancel=cancel, preview_every=self.preview_every,
            )
            relative = self.clip_path(scene, key, seed)
            target = self.project.resolve(relative)
            if self.writes:
                write_video(target, output.frames, video.fps)
            result = RenderResult(seed=seed, path=relative, cache_key=key, backend=self.pipeline.backend_name,
                                  is_noise=output.is_noise, priors=[b.model_copy() for b in scene.prior_bindings],
                                  steps=render_settings.steps, guidance_scale=render_settings.guidance_scale,
                                  scheduler=render_settings.scheduler, region_control=self.region_control.name,
                                  plan_digest=plan_digest(scene))
            if self.writes:
                target.with_suffix(".json").write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
            results.append(result)
            outcomes.append(SceneRenderOutcome(scene.id, seed, relative, cached=False))
        if self.writes:
            commit(scene.id, results)
        return outcomes

    def render(self, commit: RenderCommit, scenes: list[int] | None = None, *, variants: int | None = None,
               force: bool = False, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> StoryRenderReport:
        """Render the given scenes (0-based; default all) in order, committing each scene as it finishes."""
        story = self.project.story
        indices = list(range(len(story.scenes))) if scenes is None else scenes
        report = StoryRenderReport()
        for number, index in enumerate(indices, start=1):
            report.outcomes += self.render_scene(index, commit, variants=variants, force=force, progress=progress,
                                                 cancel=cancel, place=(number, len(indices)))
        return report


def commit_to(project: Project) -> RenderCommit:
    """The commit of a caller that owns `project` (the CLI, scripts): store each scene's renders and save."""
    def commit(scene_id: str, results: list[RenderResult]) -> None:
        with project.edit():
            edits.store_renders(project, scene_id, results)
    return commit
