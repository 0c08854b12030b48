"""Render and Export tabs, and the storyboard's animatic: they drive dreamrunner.rendering and
dreamrunner.export (loaded on first use) through `ui.jobs`.

Renders read a copy of the story taken when the job starts, so the storyboard stays editable while a
scene renders; each finished scene's variants are committed to the live story at once (one edit through
`Workspace.edit`, autosaved), so edits made meanwhile stay and a crash loses at most the scene in progress.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import re
import tempfile
from pathlib import Path

import gradio as gr

from dreamrunner import edits
from dreamrunner.backends import BACKENDS, NOISE_LABEL
from dreamrunner.backends.memory import COMPILE_CHOICES, MEMORY_CHOICES, QUANTIZE_CHOICES, MemoryOptions
from dreamrunner.distributed import INSTALL as RAY_INSTALL
from dreamrunner.machine import (MACHINE_FILE, MachineSettings, MachineSettingsError, read_machine_settings,
                                 update_machine_settings)
from dreamrunner.story import DTYPES, plan_digest, scene_render_settings
from dreamrunner.video_presets import MODEL_VIDEO

from . import board
from .jobs import GPU, Cancels, cancel_handler, progress_html, run_streaming, stream_job
from .messages import guarded, warn
from .stages import load
from .widgets import ProjectDropdown, ProjectRadio

BACKEND_CHOICES = [("tiny (random weights: noise, for trying the flow)", "tiny"),
                   ("tiny-5b (random weights: noise)", "tiny-5b"),
                   ("tiny-1.5 (random weights: noise, CogVideoX 1.5 family)", "tiny-1.5"),
                   ("CogVideoX-2B (weights needed)", "cogvideox-2b"),
                   ("CogVideoX-5B (weights needed)", "cogvideox-5b"),
                   ("CogVideoX 1.5 5B (weights needed)", "cogvideox1.5-5b"),
                   ("tiny-wan (random weights: noise, Wan 2.1 family)", "tiny-wan"),
                   ("Wan 2.1 T2V 1.3B (weights needed)", "wan2.1-1.3b"),
                   ("Wan 2.1 T2V 14B (weights needed)", "wan2.1-14b"),
                   ("tiny-wan2.2 (random weights: noise, Wan 2.2 A14B kind: two experts)", "tiny-wan2.2"),
                   ("tiny-wan2.2-5b (random weights: noise, Wan 2.2 TI2V-5B kind)", "tiny-wan2.2-5b"),
                   ("Wan 2.2 T2V A14B (weights needed)", "wan2.2-a14b"),
                   ("Wan 2.2 TI2V 5B (weights needed)", "wan2.2-ti2v-5b")]
MEMORY_LABELS = [("auto: the fastest that fits this GPU's free memory", "auto"),
                 ("none: every model on the GPU (fastest, most memory)", "none"),
                 ("vae-tiling: all on the GPU, tiled VAE decode", "vae-tiling"),
                 ("model: each model on the GPU only while it runs", "model"),
                 ("group: transformer block by block (least memory)", "group")]
assert [value for _, value in MEMORY_LABELS] == list(MEMORY_CHOICES)
RAY_LABELS = [("off: jobs run in the editor's process", "off"),
              ("local: a Ray over this machine's GPUs", "local"),
              ("cluster: the Ray cluster at the address", "cluster")]
RAY_MISSING = f"Ray is not installed in this Python: {RAY_INSTALL} (or pip install ray), then restart the editor"
WEIGHT_BACKENDS = [name for name in BACKENDS if not name.startswith("tiny")]  # backends that load weights
EXPORTS_DIR = "exports"
_components: dict[tuple, object] = {}


# Whose render settings the Render tab edits: the story default, or the chosen scene's own.
STORY_SCOPE, SCENE_SCOPE = "Story default", "This scene"
DEFAULT_DTYPE = "the model's own"
# Render-tab fields that are the story's whatever the scope (the model and the frame geometry).
STORY_FIELDS = ("backend", "dtype", "size", "num_frames")


def components_for(backend: str, machine_file: Path, training: bool = False, dtype: str | None = None):
    """Model components for the backend, its dtype (`RenderSettings.dtype`, None: the model's own) and this
    machine's settings, loaded once: the next render does not reload weights. Another backend, dtype, machine
    setting or use frees the loaded models first (one model on the GPU). Training gets its own (a render
    quantizes and compiles its transformer in place; training does neither)."""
    machine = read_machine_settings(machine_file)
    key = (backend, training, dtype, machine.model_dump_json())
    if key not in _components:
        from dreamrunner.backends import load_backend
        from dreamrunner.rendering.story_render import torch_dtype

        _components.clear()
        _components[key] = load_backend(backend, machine.model_paths.get(backend), dtype=torch_dtype(dtype),
                                        memory=machine_memory(machine, training))
    return _components[key]


def machine_memory(machine: MachineSettings, training: bool = False) -> MemoryOptions:
    """This machine's memory options for a render, or for training (which neither quantizes nor compiles)."""
    return MemoryOptions(preset=machine.memory, quantize="none" if training else machine.quantize,
                         compile="off" if training else machine.compile)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_cluster(machine: MachineSettings):
    """The Ray cluster the machine's Ray setting names (`RayCluster.at`, as the CLI's `--ray [ADDRESS]`), or
    None when it is off. Raises RayUnavailable without Ray, MachineSettingsError for a cluster with no address."""
    if machine.ray == "off":
        return None
    from dreamrunner.distributed import RayCluster, require_ray

    require_ray()
    address = machine.ray_address.strip()
    if machine.ray == "cluster" and not address:
        raise MachineSettingsError("Ray is set to a cluster but its address is empty: type it in the Render tab's "
                                   "\"This machine\" (host:port or ray://host:10001), or choose local")
    # The editor's own loaded model is let go: Ray's workers load and keep theirs.
    _components.clear()
    return RayCluster.at(address if machine.ray == "cluster" else None)


def render_values(story, scope: str, scene_id: str | None) -> dict:
    """The Render tab's settings as its widgets hold them: the story default, or (scene scope) what the scene
    renders with (`scene_render_settings`); `use_default` says whether the scene has settings of its own."""
    scene = next((s for s in story.scenes if s.id == scene_id), None) if scope == SCENE_SCOPE else None
    settings = story.settings.render if scene is None else scene_render_settings(story, scene)
    video = story.settings.video
    return {"scope": scope, "scene": scene.id if scene else None, "use_default": scene is None or scene.render is None,
            "backend": settings.backend, "dtype": settings.dtype or DEFAULT_DTYPE,
            "size": f"{video.width}x{video.height}", "num_frames": video.num_frames, "scheduler": settings.scheduler,
            "steps": settings.steps, "guidance_scale": settings.guidance_scale,
            "use_dynamic_cfg": settings.use_dynamic_cfg, "negative_prompt": settings.negative_prompt,
            "seeds": ", ".join(map(str, settings.seeds or [settings.seed])), "variants": settings.variants}


def render_change(field: str, value) -> dict:
    """The `edits.set_render_settings` fields a Render-tab widget's value means."""
    if field == "dtype":
        return {"dtype": None if value in (None, "", DEFAULT_DTYPE) else value}
    if field == "seeds":
        try:
            seeds = [int(part) for part in re.split(r"[,\s]+", str(value).strip()) if part]
        except ValueError:
            raise edits.EditError(f"seeds {value!r}: give whole numbers separated by commas, e.g. 42 or 1, 2, 3") \
                from None
        return edits.seed_fields(seeds)
    return {field: value}


def _with_cues(video: Path, webvtt: Path | None) -> gr.Video:
    """The story video for the Export tab's player, with its WebVTT cues where they are not burned in
    (browsers do not show an mp4's own subtitle track)."""
    return gr.Video(value=str(video), subtitles=str(webvtt) if webvtt else None)


def _render_label(render, position: int, scene) -> str:
    """One line of the render history: the settings a variant was made with, and whether the scene's plan
    changed since (a variant of an older plan stays listed until deleted)."""
    parts = [f"seed {render.seed}"]
    if render.steps is not None:
        parts.append(f"{render.steps} steps")
    if render.guidance_scale is not None:
        parts.append(f"guidance {render.guidance_scale:g}")
    if render.scheduler is not None:
        parts.append(f"{render.scheduler} sampler")
    if render.region_control is not None:
        parts.append(render.region_control)
    parts.append(render.backend)
    if render.plan_digest is None:
        parts.append("plan then: not recorded")
    elif render.plan_digest != plan_digest(scene):
        parts.append("older plan (changed since)")
    else:
        parts.append("current plan")
    noise = " — NOISE" if render.is_noise else ""
    return f"variant {position + 1}: {' · '.join(parts)}{noise}"


class RenderTab:
    """Mixed into `ui.editor.Editor` (uses its workspace, project(), status_text())."""

    cancels = Cancels()

    # -- animatic (Storyboard tab) -------------------------------------------------------------------

    def animatic(self, folder, scene_id):
        project = self.project(folder)
        story = project.story
        scene = story.scene(scene_id)
        load("rendering")
        from dreamrunner.rendering.animatic import render_animatic
        from dreamrunner.video_io import write_video

        video = story.settings.video
        folder_ = Path(tempfile.gettempdir()) / "dreamrunner-animatics"
        folder_.mkdir(exist_ok=True)
        key = hashlib.sha1(f"{project.folder}\n{scene.model_dump_json()}\n{video.model_dump_json()}".encode()).hexdigest()
        target = folder_ / f"{key[:20]}-{scene.id}.mp4"
        if not target.is_file():
            write_video(target, render_animatic(scene, video), video.fps)
        return str(target)

    # -- Render tab ----------------------------------------------------------------------------------

    def build_render_tab(self) -> None:
        gr.Markdown("Render each scene with region attention and its bound priors. The **tiny** backends run "
                    "anywhere with random weights: what they make is noise and is labelled so. CogVideoX needs "
                    "its weights (see the README).")
        with gr.Row():
            self.render_backend = gr.Dropdown(BACKEND_CHOICES, label="Backend", elem_id="render-backend")
            self.render_dtype = gr.Dropdown([DEFAULT_DTYPE, *DTYPES], label="Precision (dtype)",
                                            elem_id="render-dtype")
            self.render_size = ProjectDropdown(label="Frame size (width x height)", elem_id="render-size")
            self.render_frames = ProjectDropdown(label="Frames per scene", elem_id="render-frames")
        with gr.Accordion("This machine (memory, speed, model folders, Ray: not saved in the project)", open=False):
            with gr.Row():
                self.machine_memory = gr.Dropdown(MEMORY_LABELS, label="GPU memory preset", elem_id="machine-memory")
                self.machine_quantize = gr.Dropdown(list(QUANTIZE_CHOICES), label="Quantize the transformer "
                                                    "(torchao, int8/fp8 weights)", elem_id="machine-quantize")
                self.machine_compile = gr.Dropdown(list(COMPILE_CHOICES), label="Compile the transformer blocks",
                                                   elem_id="machine-compile")
            installed = ray_installed()
            with gr.Row():
                self.machine_ray = gr.Radio(RAY_LABELS, label="Ray: render and train priors as tasks, one GPU each "
                                            "(docs/scaling.md)", elem_id="machine-ray", interactive=installed,
                                            info=None if installed else RAY_MISSING)
                self.machine_ray_address = gr.Textbox(label="Ray cluster address (host:port or ray://host:10001)",
                                                      elem_id="machine-ray-address", interactive=installed)
            self.machine_paths = {name: gr.Textbox(label=f"{name} model folder (or hub id; empty: "
                                                   f"$DREAMRUNNER_{name.split('-')[-1].upper()} or the hub)",
                                                   elem_id=f"machine-path-{name}") for name in WEIGHT_BACKENDS}
        with gr.Row():
            self.render_scene_choice = ProjectDropdown(label="Scene", elem_id="render-scene")
            self.render_scope = gr.Radio([STORY_SCOPE, SCENE_SCOPE], value=STORY_SCOPE,
                                         label="Sampling settings of", elem_id="render-scope")
            self.render_use_default = gr.Checkbox(label="This scene uses the story default", value=True,
                                                  visible=False, elem_id="render-use-default")
        with gr.Row():
            self.render_scheduler = gr.Dropdown(["dpm", "ddim"], label="Scheduler", elem_id="render-scheduler")
            self.render_steps = gr.Number(label="Steps", precision=0, minimum=1, elem_id="render-steps")
            self.render_guidance = gr.Number(label="Guidance scale", minimum=0, elem_id="render-guidance")
            self.render_dynamic_cfg = gr.Checkbox(label="Dynamic guidance (DPM only)", elem_id="render-dynamic-cfg")
            self.render_seed = gr.Textbox(label="Seed(s)", placeholder="42, or 1, 2, 3", elem_id="render-seed")
            self.render_variants = gr.Number(label="Variants (from one seed)", precision=0, minimum=1, maximum=8,
                                             elem_id="render-variants")
        self.render_negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="render-negative")
        self.render_shown = gr.State(None)  # the settings the tab shows (board.page_change's `was`)
        with gr.Row():
            self.render_button = gr.Button("Render scene", variant="primary", elem_id="render-scene-button")
            self.render_all_button = gr.Button("Render all scenes", elem_id="render-all")
            self.render_cancel = gr.Button("Cancel", variant="stop", elem_id="render-cancel")
        self.render_progress = gr.HTML(elem_id="render-progress")
        with gr.Row():
            self.render_preview = gr.Image(label="Live preview (middle frame, from the latents)",
                                           elem_id="render-preview", height=240, interactive=False)
            with gr.Column():
                self.variant_choice = ProjectRadio(label="Variants of this scene", elem_id="variant-choice")
                self.noise_note = gr.HTML(elem_id="noise-note")
                self.variant_video = gr.Video(label="Variant", elem_id="variant-video", interactive=False,
                                              height=240)
                with gr.Row():
                    self.use_variant = gr.Button("Use this variant in the export", elem_id="use-variant")
                    self.delete_variant = gr.Button("Delete this variant", elem_id="delete-variant",
                                                    variant="stop")
        self.render_fields = {"backend": self.render_backend, "dtype": self.render_dtype, "size": self.render_size,
                              "num_frames": self.render_frames, "scheduler": self.render_scheduler,
                              "steps": self.render_steps, "guidance_scale": self.render_guidance,
                              "use_dynamic_cfg": self.render_dynamic_cfg, "negative_prompt": self.render_negative,
                              "seeds": self.render_seed, "variants": self.render_variants}
        self.render_settings_outputs = [*self.render_fields.values(), self.render_use_default, self.render_shown]
        self.render_outputs = [*self.render_settings_outputs, self.render_scene_choice, self.variant_choice,
                               self.variant_video, self.noise_note]
        self.render_outputs += [self.machine_memory, self.machine_quantize, self.machine_compile, self.machine_ray,
                                self.machine_ray_address,
                                *self.machine_paths.values()]

    @property
    def machine_file(self) -> Path:
        return self.workspace.home / MACHINE_FILE

    def machine_view(self) -> dict:
        machine = read_machine_settings(self.machine_file)
        return {self.machine_memory: machine.memory, self.machine_quantize: machine.quantize,
                self.machine_compile: machine.compile, self.machine_ray: machine.ray,
                self.machine_ray_address: machine.ray_address,
                **{box: machine.model_paths.get(name, "") for name, box in self.machine_paths.items()}}

    def set_machine_setting(self, field, value, backend=None):
        """One machine setting from its widget; a model folder for `backend` (empty: back to the default)."""
        if field == "ray" and value != "off" and not ray_installed():
            raise gr.Error(RAY_MISSING)  # the page cannot choose it; a caller of the API is told the same
        try:
            if backend is not None:
                paths = dict(read_machine_settings(self.machine_file).model_paths)
                if (value or "").strip():
                    paths[backend] = value.strip()
                else:
                    paths.pop(backend, None)
                update_machine_settings(self.machine_file, model_paths=paths)
            else:
                update_machine_settings(self.machine_file, **{field: value.strip() if field == "ray_address" else value})
        except MachineSettingsError as error:
            raise gr.Error(str(error)) from None
        if field == "ray":
            gr.Info(f"Ray {value} saved for this machine: the next render and training jobs run "
                    + ("in the editor's process" if value == "off" else "as tasks on Ray"))
        elif field == "ray_address":
            gr.Info("the Ray cluster address is saved for this machine")
        else:
            gr.Info(f"{field if backend is None else backend + ' model folder'} saved for this machine; the next "
                    f"render loads the model with it")

    def render_view(self, folder, scene_id=None, scope=STORY_SCOPE) -> dict:
        story = self.project(folder).story
        choices = [(f"{n}. {s.description or s.id}", s.id) for n, s in enumerate(story.scenes, start=1)]
        ids = [s.id for s in story.scenes]
        scene_id = scene_id if scene_id in ids else (ids[0] if ids else None)
        return {**self.render_settings_view(folder, scene_id, scope),
                self.render_scene_choice: gr.update(choices=choices, value=scene_id),
                **self.variants_view(folder, scene_id), **self.machine_view()}

    def render_settings_view(self, folder, scene_id, scope=STORY_SCOPE) -> dict:
        """The settings widgets for `scope` (story default, or the scene's) and the record of what they show."""
        story = self.project(folder).story
        values = render_values(story, scope, scene_id)
        model = MODEL_VIDEO.get(values["backend"])
        sizes = [(f"{w}x{h} ({name})", f"{w}x{h}") for name, (h, w) in model.sizes.items()] if model else []
        if values["size"] not in [value for _, value in sizes]:
            sizes.append((values["size"], values["size"]))
        frames = list(model.frame_counts) if model else []
        frames += [] if values["num_frames"] in frames else [values["num_frames"]]
        view = {component: values[field] for field, component in self.render_fields.items()}
        view[self.render_size] = gr.update(choices=sizes, value=values["size"])
        view[self.render_frames] = gr.update(choices=frames, value=values["num_frames"])
        view[self.render_use_default] = gr.update(value=values["use_default"], visible=scope == SCENE_SCOPE)
        view[self.render_shown] = values
        return view

    def set_render_setting(self, folder, field, value, scope=STORY_SCOPE, scene_id=None, shown=None) -> dict:
        """One Render-tab setting: a story field (model, dtype, geometry), or a sampling field of the story default
        or (scene scope) of the scene's own settings. A value changed elsewhere since the tab showed it is not
        written back (`board.page_change`)."""
        from .editor import STALE

        if value is None or value == "":
            if field != "negative_prompt":
                raise gr.Error(f"{field} needs a value")
            value = ""
        shown = shown or {}
        # The value belongs to the scope and scene the tab showed, whatever they are by the time it arrives.
        if shown.get("scope") is not None:
            scope, scene_id = shown["scope"], shown.get("scene") or scene_id
        stored = render_values(self.project(folder).story, scope, scene_id)
        note = None
        try:
            change = board.page_change(value, shown.get(field), stored[field])
            if change == "stale":
                raise board.BoardEditError(f"the {field.replace('_', ' ')} setting was " + STALE.format(what=field))
            if change == "apply":
                with self.workspace.edit(folder) as project:
                    story = project.story
                    if field in ("size", "num_frames"):
                        edits.set_video(story, **{field: value})
                    elif field == "backend":
                        note = edits.set_backend(story, value)
                    elif field in STORY_FIELDS or scope != SCENE_SCOPE:
                        edits.set_render_settings(story, **render_change(field, value))
                    else:
                        edits.set_render_settings(story, scene_id, **render_change(field, value))
        except Exception as error:  # noqa: BLE001 - shown; the widgets go back to the stored settings
            warn(error)
        if note is not None:
            gr.Info(html.escape(note))
        return {self.status: self.status_text(folder), **self.render_settings_view(folder, scene_id, scope)}

    def use_default_render(self, folder, scene_id, use_default) -> dict:
        """The scene's "uses the story default" box: ticking it drops the scene's own settings."""
        if use_default:
            with self.workspace.edit(folder) as project:
                edits.use_story_render_settings(project.story, scene_id)
        else:
            gr.Info("change a setting below to give this scene its own value; the others follow the story default")
        return {self.status: self.status_text(folder), **self.render_settings_view(folder, scene_id, SCENE_SCOPE)}

    def variants_view(self, folder, scene_id, chosen_path=None) -> dict:
        """The scene's variants; each is named by its file (positions shift when another tab renders)."""
        project = self.project(folder)
        try:
            scene = project.story.scene(scene_id)
        except KeyError:
            scene = None
        if scene is None or not scene.renders:
            return {self.variant_choice: gr.update(choices=[], value=None), self.variant_video: None,
                    self.noise_note: "<i>No render of this scene yet: export uses its animatic.</i>"}
        paths = [r.path for r in scene.renders]
        position = paths.index(chosen_path) if chosen_path in paths else (scene.chosen_render or 0)
        render = scene.renders[position]
        choices = [(_render_label(r, i, scene) + (" ✓ used in export" if i == scene.chosen_render else ""), r.path)
                   for i, r in enumerate(scene.renders)]
        note = (f"<span class='noise-label'>{html.escape(NOISE_LABEL)}</span>" if render.is_noise
                else f"rendered with {html.escape(render.backend)}")
        path = project.resolve(render.path)
        return {self.variant_choice: gr.update(choices=choices, value=render.path),
                self.variant_video: str(path) if path.is_file() else None, self.noise_note: note}

    def wire_render_tab(self) -> None:
        for component, field in ((self.machine_memory, "memory"), (self.machine_quantize, "quantize"),
                                 (self.machine_compile, "compile"), (self.machine_ray, "ray")):
            component.input(guarded(lambda value, field=field: self.set_machine_setting(field, value)), [component],
                            None)
        self.machine_ray_address.blur(guarded(lambda value: self.set_machine_setting("ray_address", value or "")),
                                      [self.machine_ray_address], None)
        for name, box in self.machine_paths.items():
            box.blur(guarded(lambda value, name=name: self.set_machine_setting("model_paths", value, name)), [box], None)
        settings_outputs = [self.status, *self.render_settings_outputs]
        for field, component in self.render_fields.items():
            # Text is saved when the box loses focus (as the storyboard's fields), other widgets as they change.
            event = component.blur if isinstance(component, gr.Textbox) else component.input
            event(guarded(lambda folder, value, scope, scene_id, shown, field=field:
                          self.set_render_setting(folder, field, value, scope, scene_id, shown)),
                  [self.folder, component, self.render_scope, self.render_scene_choice, self.render_shown],
                  settings_outputs)
        self.render_use_default.input(guarded(self.use_default_render),
                                      [self.folder, self.render_scene_choice, self.render_use_default],
                                      settings_outputs)
        self.render_scope.input(guarded(self.render_settings_view),
                                [self.folder, self.render_scene_choice, self.render_scope],
                                self.render_settings_outputs)
        self.render_scene_choice.input(guarded(lambda folder, scene_id, scope: {
            **self.variants_view(folder, scene_id), **self.render_settings_view(folder, scene_id, scope)}),
            [self.folder, self.render_scene_choice, self.render_scope],
            [self.variant_choice, self.variant_video, self.noise_note, *self.render_settings_outputs])
        self.variant_choice.input(guarded(self.variants_view), [self.folder, self.render_scene_choice,
                                                                self.variant_choice],
                                  [self.variant_choice, self.variant_video, self.noise_note])
        self.use_variant.click(guarded(self.choose_variant), [self.folder, self.render_scene_choice,
                                                              self.variant_choice],
                               [self.status, self.variant_choice, self.variant_video, self.noise_note])
        self.delete_variant.click(guarded(self.delete_variant_of), [self.folder, self.render_scene_choice,
                                                                    self.variant_choice],
                                  [self.status, self.variant_choice, self.variant_video, self.noise_note])
        job_outputs = [self.status, self.render_progress, self.render_preview, self.variant_choice,
                       self.variant_video, self.noise_note]
        for button, job in ((self.render_button, self.render_job), (self.render_all_button, self.render_all_job)):
            # First, at once: the page drops the last job's result and says the job waits its turn; then the
            # job, in the GPU queue, whose place in it gradio shows on the progress area until it starts.
            button.click(guarded(self.job_waiting), [self.folder, self.render_scene_choice],
                         [self.render_progress, self.render_preview, self.variant_choice, self.variant_video,
                          self.noise_note], queue=False).then(
                guarded(job), [self.folder, self.render_scene_choice], job_outputs, concurrency_id=GPU,
                concurrency_limit=1, show_progress="full", show_progress_on=[self.render_progress])
        self.render_cancel.click(guarded(cancel_handler(self.cancels)), None, None, queue=False)

    def choose_variant(self, folder, scene_id, path):
        if not path:
            raise gr.Error("render the scene first, then choose one of its variants")
        with self.workspace.edit(folder) as project:
            render = next((r for r in project.story.scene(scene_id).renders if r.path == path), None)
            if render is None:
                raise gr.Error("that variant is no longer listed (another tab or program changed the renders); "
                               "choose again from the refreshed list")
            edits.choose_render(project.story, scene_id, render.seed, render.cache_key)
        view = self.variants_view(folder, scene_id, path)
        return self.status_text(folder), view[self.variant_choice], view[self.variant_video], view[self.noise_note]

    def delete_variant_of(self, folder, scene_id, path):
        if not path:
            raise gr.Error("choose the variant to delete")
        with self.workspace.edit(folder) as project:
            scene = project.story.scene(scene_id)
            position = next((i for i, r in enumerate(scene.renders) if r.path == path), None)
            if position is None:
                raise gr.Error("that variant is no longer listed (another tab or program changed the renders); "
                               "choose again from the refreshed list")
            render = scene.renders[position]
            was_chosen = scene.chosen_render == position
            edits.delete_render(project.story, scene_id, render.seed, render.cache_key)
        gr.Info(f"deleted variant {position + 1} (seed {render.seed}) of {scene_id} from the list; its file "
                f"{render.path} stays" + ("; export now uses the scene's animatic until you choose another variant"
                                          if was_chosen else ""))
        view = self.variants_view(folder, scene_id)
        return self.status_text(folder), view[self.variant_choice], view[self.variant_video], view[self.noise_note]

    def job_waiting(self, folder, scene_id, request: gr.Request):
        """What the Render tab shows from the click until the job starts (it may wait behind another job)."""
        self.cancels.reserve(request.session_hash if request else None)
        return {self.render_progress: progress_html(None, "waiting for the GPU: the render starts when the job "
                                                          "before it ends"),
                self.render_preview: None, **self.variants_view(folder, scene_id)}

    def render_all_job(self, folder, scene_id, request: gr.Request):
        yield from self.render_job(folder, scene_id, request, every_scene=True)

    def render_job(self, folder, scene_id, request: gr.Request, every_scene: bool = False):
        token = self.cancels.start(request.session_hash if request else None)
        snapshot = self.project(folder).snapshot()
        story = snapshot.story
        if not story.scenes:
            raise gr.Error("the story has no scenes to render; plan a story first")
        indices = list(range(len(story.scenes))) if every_scene else [[s.id for s in story.scenes].index(scene_id)]
        backend = story.settings.render.backend
        load("rendering")
        from dreamrunner.rendering.story_render import StoryRenderer

        dtype = story.settings.render.dtype
        renderer = StoryRenderer(snapshot, backend,
                                 components=lambda: components_for(backend, self.machine_file, dtype=dtype))
        machine = read_machine_settings(self.machine_file)
        cluster = ray_cluster(machine)
        yield {self.render_progress: progress_html(None, f"loading the {backend} backend…" if cluster is None else
                                                   "handing the variants to Ray (starting it and its workers the "
                                                   "first time)…"),
               self.render_preview: None}

        committed: list[str] = []

        def commit(scene_id_, results):
            with self.workspace.edit(folder) as project:
                edits.store_renders(project, scene_id_, results)
            committed.append(scene_id_)

        def kept() -> str:
            if not committed:
                return "no scene had finished, nothing new was kept"
            return f"the finished scene(s) {', '.join(committed)} are kept"

        def work(progress, cancel):
            if cluster is None:
                report = renderer.render(commit, indices, progress=progress, cancel=cancel)
                return report.rendered, report.cached
            # Each variant a task on Ray (the CLI's `render --ray`): one progress view of every task, Cancel stops
            # them all, and each finished scene is committed here, by the editor's process alone.
            from dreamrunner.distributed import GraphRun, story_graph

            graph = GraphRun(cluster, snapshot, backend, commit_prior=None, commit_scene=commit,
                             model_path=machine.model_paths.get(backend), memory=machine_memory(machine),
                             progress=progress, cancel=cancel).run(story_graph(story, [], indices))
            graph.raise_failures()
            outcomes = [outcome for _, outcome in graph.renders]
            return [o for o in outcomes if not o.cached], [o for o in outcomes if o.cached]

        def show(event, text=""):
            update = {self.render_progress: progress_html(event, text)}
            if event is not None and event.preview is not None:
                update[self.render_preview] = event.preview
            return update

        rendered, cached = yield from stream_job(run_streaming(work, token, gpu=True), show, token, kept)
        done = f"rendered {len(rendered)} variant(s), {len(cached)} from the cache" + (" on Ray" if cluster else "")
        shown = scene_id if not every_scene else story.scenes[indices[-1]].id
        yield {self.status: self.status_text(folder), self.render_progress: progress_html(None, done),
               **self.variants_view(folder, shown)}

    # -- Export tab ----------------------------------------------------------------------------------

    def build_export_tab(self) -> None:
        gr.Markdown("Stitch every scene (its chosen render, else its animatic) into one video with the "
                    "narration as subtitles. Each export is a new numbered file in the project's `exports/` "
                    "folder (`story-001.mp4`, `story-002.mp4`, ...); earlier ones stay until you delete them.")
        with gr.Row():
            self.export_crossfade = gr.Slider(0, 8, value=0, step=1, label="Crossfade (frames)",
                                              elem_id="export-crossfade")
            self.export_burn = gr.Checkbox(label="Burn subtitles into the video", value=False,
                                           elem_id="export-burn")
            self.export_button = gr.Button("Export story video", variant="primary", elem_id="export-button")
        self.export_progress = gr.HTML(elem_id="export-progress")
        self.export_choice = ProjectDropdown(label="Exports of this project (newest first)", elem_id="export-choice")
        with gr.Row():
            self.export_video = gr.Video(label="Story video", elem_id="export-video", interactive=False)
            self.export_files = gr.File(label="Download", file_count="multiple", elem_id="export-files",
                                        interactive=False)
        self.export_summary = gr.Markdown(elem_id="export-summary")
        self.export_outputs = [self.export_choice, self.export_video, self.export_files, self.export_summary]

    @staticmethod
    def exports_of(folder: Path) -> list[Path]:
        """The project's complete exports (video, .srt and manifest all there), newest first."""
        found = [video for video in (folder / EXPORTS_DIR).glob("*.mp4")
                 if video.with_suffix(".srt").is_file() and video.with_suffix(".json").is_file()]
        return sorted(found, key=lambda video: (video.stat().st_mtime, video.name), reverse=True)

    @staticmethod
    def next_export(folder: Path) -> Path:
        """exports/story-NNN.mp4 with the next free number: an export never replaces an earlier one."""
        numbers = [int(match.group(1)) for path in (folder / EXPORTS_DIR).glob("story-*.mp4")
                   if (match := re.fullmatch(r"story-(\d+)\.mp4", path.name))]
        return folder / EXPORTS_DIR / f"story-{max(numbers, default=0) + 1:03d}.mp4"

    def export_view(self, folder, name: str | None = None) -> dict:
        """One export of the project (default the newest; they survive restarts like the rest)."""
        exports = self.exports_of(self.project(folder).folder)
        choices = [video.name for video in exports]
        if not exports:
            return {self.export_choice: gr.update(choices=[], value=None), self.export_video: None,
                    self.export_files: None, self.export_summary: ""}
        out = exports[choices.index(name)] if name in choices else exports[0]
        files = [out, out.with_suffix(".srt"), out.with_suffix(".vtt"), out.with_suffix(".json")]
        vtt = files[2]  # exports before WebVTT was written have none
        try:
            burned = json.loads(files[3].read_text(encoding="utf-8"))["subtitles"]["burned_in"]
        except (OSError, ValueError, KeyError, TypeError):
            burned = True  # an unreadable manifest: show the video without a second copy of the cues
        return {self.export_choice: gr.update(choices=choices, value=out.name),
                self.export_video: _with_cues(out, vtt if vtt.is_file() and not burned else None),
                self.export_files: [str(path) for path in files if path.is_file()],
                self.export_summary: f"`{EXPORTS_DIR}/{out.name}`" + (" (the newest export)" if out == exports[0]
                                                                       else "")}

    def wire_export_tab(self) -> None:
        self.export_button.click(guarded(self.export_job), [self.folder, self.export_crossfade, self.export_burn],
                                 [self.export_progress, *self.export_outputs], show_progress="hidden")
        self.export_choice.input(guarded(self.export_view), [self.folder, self.export_choice], self.export_outputs)

    def export_job(self, folder, crossfade, burn, request: gr.Request):
        token = self.cancels.new(request.session_hash if request else None)
        live = self.project(folder)
        snapshot = live.snapshot()
        export = load("export")
        out = self.next_export(live.folder)
        out.parent.mkdir(exist_ok=True)

        def work(progress, cancel):
            return export.export_story(snapshot, out, crossfade_frames=int(crossfade or 0), burn_subtitles=bool(burn),
                                       progress=progress, cancel=cancel)

        result = yield from stream_job(run_streaming(work, token),
                                       lambda event, text="": {self.export_progress: progress_html(event, text)},
                                       token, kept=lambda: "no export was written; the earlier ones are unchanged")
        sources = ", ".join(f"{s.scene_id}: {s.source}" + (" (noise)" if s.is_noise else "") for s in result.scenes)
        noise = any(s.is_noise for s in result.scenes)
        summary = (f"`{EXPORTS_DIR}/{out.name}`: **{result.duration:.2f} s**, {result.num_frames} frames at "
                   f"{result.fps} fps, {result.width}x{result.height} — {sources}")
        if noise:
            summary += f"\n\n<span class='noise-label'>{html.escape(NOISE_LABEL)}</span> in the rendered scenes."
        yield {self.export_progress: progress_html(None, f"exported {out}"),
               **self.export_view(folder, out.name), self.export_summary: summary}
