"""The storyboard editor: Gradio Blocks over one project folder per browser session.

Every handler takes the session's project folder (a gr.State), changes the story with `dreamrunner.edits`
inside `Workspace.edit` (serialised, merged with other writers, rolled back on error, autosaved) and returns
what the page shows. The UI keeps widget state and pixel <-> normalized conversion only.
"""

from __future__ import annotations

import functools
import html
import secrets
import shutil
import time
from pathlib import Path

import gradio as gr
from gradio_image_annotation import image_annotator

from dreamrunner import edits
from dreamrunner.jobs import Progress
from dreamrunner.project import Project
from dreamrunner.story import NUM_KEYFRAMES, Story

from . import board, characters
from .backdrop import keyframe_backdrop, keyframe_thumbnail
from .clips_tab import ClipsTab
from .confirm import Confirm
from .history import HistoryBar
from .jobs import Cancels, cancel_handler, progress_html, run_streaming, stream_job
from .messages import drop_repeats, guarded, warn
from .priors_tab import PriorsTab
from .render_tab import RenderTab
from .stages import make_planner, planning_defaults
from .widgets import ProjectDropdown, ProjectRadio
from .workspace import StartupProblem, Workspace

CSS = """
#project-status {font-size: 0.9em}
#box-editor canvas {cursor: crosshair}
.noise-label {color: #b00020; font-weight: 600}
/* The box editor's rotate buttons turn the picture and every box with it; the storyboard has one upright
   frame, so they are hidden (a report from a turned picture is still read upright: ui.board.upright). */
#box-editor button[aria-label^="Rotate"] {display: none !important}
/* Whole pictures in galleries (a single image is not cropped into a strip), and a live preview the width
   of its panel however small the decoded frame is. */
.gallery img, .thumbnail-item img, .thumbnail-lg img, .preview img {object-fit: contain !important}
#render-preview img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
/* Dropdowns show their whole choice; the entity table's headers are not squeezed. */
.wrap-inner input, .wrap-inner .token {text-overflow: clip; min-width: 8ch}
#entities table {table-layout: auto}
#entities th {white-space: nowrap}
#keyframe-strip .thumbnail-item {aspect-ratio: 3 / 2}
"""

KEYFRAME_CHOICES = [(str(k + 1), k) for k in range(NUM_KEYFRAMES)]
STALE = ("changed elsewhere (another tab or program) since this page showed it; your change was not applied. "
         "The page now shows the current {what}; make the change again if you still want it.")


def _scene_choices(story: Story) -> list[tuple[str, str]]:
    return [(f"{n}. {s.description or s.id}", s.id) for n, s in enumerate(story.scenes, start=1)]


def _pick_scene(story: Story, scene_id: str | None):
    if not story.scenes:
        return None
    for scene in story.scenes:
        if scene.id == scene_id:
            return scene
    return story.scenes[0]


def _scene_words(scene) -> dict:
    """A scene's text fields as the Storyboard tab shows them (what `words_shown` remembers)."""
    return {"scene": scene.id, "narration": scene.narration, "motions": "\n".join(scene.motions),
            "background": scene.background, "description": scene.description}


def _story_words(story: Story) -> dict:
    """The Story tab's fields as shown (what `story_shown` remembers)."""
    return {"title": story.title, "topic": story.topic, "characters": characters.character_rows(story)}


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _keyframe_index(value) -> int:
    try:
        index = int(value)
    except (TypeError, ValueError):
        return 0
    return min(max(index, 0), NUM_KEYFRAMES - 1)


def _selected_index(event: gr.SelectData) -> int:
    return event.index


def _notes_html(notes: list[str]) -> str:
    """The planner's retries and repairs so far, under its progress (the newest last)."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes[-12:])
    more = " (the last 12 shown)" if len(notes) > 12 else ""
    return (f"<details open class='plan-notes'><summary>retries and repairs while planning: {len(notes)}{more}"
            f"</summary>"
            f"<ul>{items}</ul></details>")


def fresh_plan_seed() -> int:
    """A new offline-planner variant for a page (short enough to note down and type back)."""
    return secrets.randbelow(1_000_000)


class Editor(HistoryBar, ClipsTab, PriorsTab, RenderTab):
    """Builds the Blocks; holds the components that several tabs update."""

    plan_cancels = Cancels()

    def __init__(self, workspace: Workspace, startup_folder: Path, problem: StartupProblem | None = None):
        self.workspace = workspace
        self.startup_folder = Path(startup_folder)
        self.problem = problem  # the project that could not be opened at start, until restored or dismissed

    # -- shared views --------------------------------------------------------------------------------

    def project(self, folder) -> Project:
        if not folder:
            raise gr.Error("no project is open; open or create one in the Project tab")
        return self.workspace.open(folder)

    def status_text(self, folder) -> str:
        project = self.workspace.open(folder)
        story = project.story
        state = ("unsaved changes: press Save" if self.workspace.is_dirty(folder)
                 else "all changes saved" + (" (autosave on)" if self.workspace.state.autosave else ""))
        conflict = self.workspace.conflicts.get(project.folder.resolve())
        if conflict:
            state = (f"**not saved: {html.escape(conflict)}** Press *Revert to saved* for the other version, or "
                     f"*Save a copy here* to keep this one")
        history = self.workspace.history(folder)
        steps = "".join(f" — {word}: {html.escape(stack[-1].label)}"
                        for word, stack in (("undo", history.undo), ("redo", history.redo)) if stack)
        return (f"**{html.escape(story.title or 'Untitled story')}** — `{project.folder}` — "
                f"{_count(len(story.scenes), 'scene')}, {_count(len(story.characters), 'character')} — {state}"
                f"{steps}")

    def board_view(self, folder, scene_id, keyframe) -> dict:
        """Everything the Storyboard tab shows for one scene and keyframe."""
        story = self.project(folder).story
        scene = _pick_scene(story, scene_id)
        k = _keyframe_index(keyframe)
        if scene is None:
            return {self.scene_list: gr.update(choices=[], value=None), self.narration: "", self.motions: "",
                    self.background: "", self.scene_description: "", self.words_shown: {}, self.keyframe: k,
                    self.annotator: None, self.entities: [], self.delete_choice: gr.update(choices=[], value=None),
                    self.board_rev: "", self.keyframe_strip: []}
        size = board.canvas_size(story)
        keyframe_ = scene.keyframes[k]
        names = [(f"{i + 1}. {e.name}", i) for i, e in enumerate(keyframe_.entities)]
        labels, colors = board.label_choices(story, scene, k)
        return {
            self.scene_list: gr.update(choices=_scene_choices(story), value=scene.id),
            self.narration: scene.narration,
            self.motions: "\n".join(scene.motions),
            self.background: scene.background,
            self.scene_description: scene.description,
            self.words_shown: _scene_words(scene),
            self.keyframe: k,
            self.annotator: gr.update(value={"image": keyframe_backdrop(story, scene, k, size),
                                             "boxes": board.annotator_boxes(scene, k, size)},
                                      label_list=labels, label_colors=colors),
            self.entities: board.entity_rows(keyframe_),
            self.delete_choice: gr.update(choices=names, value=names[-1][1] if names else None),
            self.board_rev: board.revision(scene, k, size),
            self.keyframe_strip: self.keyframe_thumbnails(scene, k, size),
        }

    @staticmethod
    def keyframe_thumbnails(scene, k: int, size) -> list:
        return [(keyframe_thumbnail(scene, i, size), f"▶ {i + 1} (shown)" if i == k else f"keyframe {i + 1}")
                for i in range(NUM_KEYFRAMES)]

    def story_view(self, folder, character_id=None) -> dict:
        """The Story tab; the Character dropdown keeps `character_id` while it exists (else the first)."""
        project = self.project(folder)
        story = project.story
        ids = [(f"{c.name} ({c.id})", c.id) for c in story.characters]
        known = [value for _, value in ids]
        chosen = character_id if character_id in known else (known[0] if known else None)
        return {
            self.title: story.title,
            self.topic: story.topic,
            self.story_shown: _story_words(story),
            self.character_table: characters.character_rows(story),
            self.character_choice: gr.update(choices=ids, value=chosen),
            **self.references_view(project, chosen),
        }

    def references_view(self, project: Project, character_id: str | None) -> dict:
        """The reference images of one character, and an upload box that names whose images it adds."""
        try:
            character = project.story.character(character_id) if character_id else None
        except KeyError:
            character = None
        if character is None:
            return {self.reference_gallery: gr.update(value=[], label="Reference images"),
                    self.reference_upload: gr.update(label="Add a character first, then its reference images"),
                    self.reference_selected: None}
        who = f"{character.name} ({character.id})"
        return {self.reference_gallery: gr.update(value=[absolute for _, absolute in
                                                         self.reference_paths(project, character.id)],
                                                  label=f"Reference images of {who}"),
                self.reference_upload: gr.update(label=f"Add reference images of {who} (PNG, JPEG, WebP; "
                                                       f"at least 64 px)"),
                self.reference_selected: None}

    def project_view(self, folder) -> dict:
        return {
            self.status: self.status_text(folder),
            self.folder_box: str(self.project(folder).folder),
            self.recent: gr.update(choices=self.workspace.known_projects(), value=str(Path(folder).resolve())),
            self.autosave: self.workspace.state.autosave,
        }

    def everything(self, folder, scene_id=None, keyframe=0) -> dict:
        return {self.folder: str(folder), **self.project_view(folder), **self.story_view(folder),
                **self.board_view(folder, scene_id, keyframe), **self.render_view(folder),
                **self.clips_view(folder), **self.priors_view(folder), **self.export_view(folder)}

    @staticmethod
    def reference_paths(project: Project, character_id: str | None) -> list[tuple[str, str]]:
        """(project path, file) of each reference image of a character that exists, in gallery order."""
        if character_id is None:
            return []
        try:
            character = project.story.character(character_id)
        except KeyError:
            return []
        return [(p, str(project.resolve(p))) for p in character.reference_images if project.resolve(p).is_file()]

    # -- layout --------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        self.blocks = None
        with gr.Blocks(title="DreamRunner Studio") as blocks:
            self.blocks = blocks
            self.folder = gr.State(None)
            gr.Markdown("## DreamRunner Studio — storyboard editor")
            self.status = gr.Markdown(elem_id="project-status")
            self.build_history_bar()
            self.build_problem_notice()
            with gr.Tabs(elem_id="tabs"):
                with gr.Tab("Story", id="story", elem_id="tab-story"):
                    self.build_story_tab()
                with gr.Tab("Storyboard", id="storyboard", elem_id="tab-storyboard"):
                    self.build_storyboard_tab()
                with gr.Tab("Motion clips", id="clips", elem_id="tab-clips") as self.clips_tab:
                    self.build_clips_tab()
                with gr.Tab("Priors", id="priors", elem_id="tab-priors") as self.priors_tab:
                    self.build_priors_tab()
                with gr.Tab("Render", id="render", elem_id="tab-render") as self.render_tab:
                    self.build_render_tab()
                with gr.Tab("Export", id="export", elem_id="tab-export"):
                    self.build_export_tab()
                with gr.Tab("Project", id="project", elem_id="tab-project"):
                    self.build_project_tab()
            self.all_outputs = [self.folder, self.status, self.folder_box, self.recent, self.autosave,
                                *self.story_outputs, *self.board_outputs, *self.render_outputs,
                                *self.clips_outputs, *self.priors_outputs, *self.export_outputs]
            self.wire_story_tab()
            self.wire_storyboard_tab()
            self.wire_clips_tab()
            self.wire_priors_tab()
            self.wire_render_tab()
            self.wire_export_tab()
            self.wire_project_tab()
            self.wire_history_bar()
            # Tabs show what other tabs changed (scenes, motions, approved clips) when they are opened.
            self.clips_tab.select(guarded(self.clips_view), [self.folder, self.clips_scene, self.clips_motion],
                                  self.clips_outputs)
            self.priors_tab.select(guarded(self.priors_view), [self.folder], self.priors_outputs)
            self.render_tab.select(guarded(self.render_view), [self.folder, self.render_scene_choice,
                                                               self.render_scope], self.render_outputs)
            self.wire_problem_notice()
            blocks.load(guarded(self.on_load), outputs=[*self.all_outputs, self.problem_box])
        return blocks

    def on_load(self):
        last = self.workspace.state.last_project
        usable = (last is not None and self.workspace.is_allowed(last) and (last / "project.json").is_file()
                  and (self.problem is None or last != self.problem.folder))
        folder = last if usable else self.startup_folder
        return {**self.everything(folder), self.problem_box: gr.update(visible=self.problem is not None)}

    # -- a project that could not be opened at start -------------------------------------------------

    def problem_text(self) -> str:
        problem = self.problem
        if problem is None:
            return ""
        text = (f"**The project `{html.escape(str(problem.folder))}` could not be opened:** "
                f"{html.escape(problem.error)}\n\nThe demo story is open instead; the damaged files are untouched. ")
        if problem.backup_error is None:
            return text + ("*Open the backup* makes `project.json.bak` (the story before its last save) the "
                           "project again and keeps the damaged file beside it as `project.json.damaged-…`.")
        return text + f"Its backup cannot be used either: {html.escape(problem.backup_error)}"

    def build_problem_notice(self) -> None:
        with gr.Group(visible=self.problem is not None, elem_id="startup-problem") as self.problem_box:
            gr.Markdown(self.problem_text(), elem_id="startup-problem-text")
            with gr.Row():
                self.open_backup_button = gr.Button(
                    "Open the backup", variant="primary", elem_id="open-backup",
                    visible=self.problem is not None and self.problem.backup_error is None)
                self.keep_demo_button = gr.Button("Keep the demo", elem_id="keep-demo")

    def wire_problem_notice(self) -> None:
        self.open_backup_button.click(guarded(self.open_backup), [], [*self.all_outputs, self.problem_box])
        self.keep_demo_button.click(guarded(self.keep_demo), [], [self.problem_box])

    def open_backup(self):
        if self.problem is None:
            raise gr.Error("there is no damaged project to restore")
        folder = self.problem.folder
        self.workspace.restore_backup(folder)
        self.problem = None
        gr.Info(f"opened the backup of {folder}")
        return {**self.everything(folder), self.problem_box: gr.update(visible=False)}

    def keep_demo(self):
        self.problem = None
        return gr.update(visible=False)

    # -- Story tab -----------------------------------------------------------------------------------

    def build_story_tab(self) -> None:
        with gr.Row():
            self.title = gr.Textbox(label="Title", elem_id="story-title", scale=1)
            self.topic = gr.Textbox(label="Topic", elem_id="story-topic", lines=2, scale=3)
        gr.Markdown("### Characters\nEach character has a rare token (e.g. `[v1]`) that stands for it in prompts "
                    "and that its subject prior is tuned on.")
        self.character_table = gr.Dataframe(headers=characters.CHARACTER_COLUMNS, elem_id="characters",
                                            interactive=True, static_columns=[0], wrap=True)
        with gr.Row():
            self.new_character = gr.Textbox(label="New character name", elem_id="new-character", scale=2)
            self.add_character_button = gr.Button("Add character", elem_id="add-character", scale=1)
        with gr.Row():
            self.character_choice = ProjectDropdown(label="Character", elem_id="character-choice", scale=1)
            self.remove_character_button = gr.Button("Remove character", variant="stop", scale=0,
                                                     elem_id="remove-character")
        self.remove_character_confirm = Confirm("remove-character", "Remove the character")
        with gr.Row():
            self.reference_upload = gr.File(label="Add reference images (PNG, JPEG, WebP; at least 64 px)",
                                            file_count="multiple", file_types=["image"], elem_id="reference-upload")
            with gr.Column():
                self.reference_gallery = gr.Gallery(label="Reference images", elem_id="reference-gallery",
                                                    height=220, columns=4)
                # Which picture of the gallery was clicked (its position among the character's images).
                self.reference_selected = gr.State(None)
                self.remove_reference_button = gr.Button("Remove the selected image", elem_id="remove-reference",
                                                         size="sm")
        with gr.Accordion("Planner", open=False, elem_id="planner-settings"):
            env = planning_defaults()
            gr.Markdown("The offline planner needs no LLM. For an LLM, give an OpenAI-compatible endpoint "
                        "(OpenAI, Ollama, vLLM, llama.cpp server); the key is used for this session only and "
                        "never written to the project. With no key typed here, the server's own key is used "
                        "only with the server's own endpoint: another base URL needs its key typed here.")
            with gr.Row():
                self.planner_kind = gr.Radio([("Offline planner", "offline"), ("LLM", "llm")],
                                             value=env["kind"], label="Planner", elem_id="planner-kind")
                self.num_scenes = gr.Slider(0, 12, value=0, step=1, label="Scenes (0: the planner chooses 5-8)",
                                            elem_id="num-scenes")
            with gr.Row():
                self.llm_url = gr.Textbox(label="Base URL (…/v1)", value=env["base_url"], elem_id="llm-url")
                self.llm_model = gr.Textbox(label="Model", value=env["model"], elem_id="llm-model")
                self.llm_key = gr.Textbox(label="API key", type="password", elem_id="llm-key")
        with gr.Row():
            self.plan_button = gr.Button("Plan story", variant="primary", elem_id="plan-story", scale=3)
            self.plan_cancel = gr.Button("Cancel", variant="stop", elem_id="plan-cancel", scale=1)
            # A fresh variant per page, the next one after each plan: pressing again plans another story, and
            # typing a seed the toast named plans that story again (offline planner; an LLM samples anew).
            self.plan_seed = gr.Number(value=fresh_plan_seed, precision=0, minimum=0, label="Plan variant (seed)",
                                       elem_id="plan-seed", min_width=120, scale=1)
        self.plan_progress = gr.HTML(elem_id="plan-progress")
        self.plan_confirm = Confirm("plan", "Replace the plan")
        gr.Markdown("*Plan story* writes a new story plan and scene plans from the topic and characters, each "
                    "saved as it arrives. Over a planned story it first says what the new plan replaces and asks. "
                    "*Cancel* stops it (an LLM mid-answer) and keeps the plans finished; *Plan story* again, with "
                    "the same topic, goes on from them.")
        self.planner_inputs = [self.planner_kind, self.llm_url, self.llm_model, self.llm_key]
        # What this tab was last shown of the story's text fields: an edit is applied only where the stored
        # value is still the one the tab showed (another tab or a CLI command may have changed it meanwhile).
        self.story_shown = gr.State({})
        self.story_outputs = [self.title, self.topic, self.story_shown, self.character_table, self.character_choice,
                              self.reference_gallery, self.reference_upload, self.reference_selected]

    def wire_story_tab(self) -> None:
        for box, field in ((self.title, "title"), (self.topic, "topic")):
            box.blur(guarded(lambda folder, value, shown, field=field: self.set_story_field(folder, field, value, shown)),
                     [self.folder, box, self.story_shown], [self.status, box, self.story_shown])
        plan_inputs = [self.folder, self.topic, self.num_scenes, self.plan_seed, *self.planner_inputs]
        plan_outputs = [*self.all_outputs, self.plan_seed, self.plan_progress, *self.plan_confirm.outputs]
        # The job's own progress area says how far it is (ui.jobs): no overlay over the page, so Cancel and the
        # other tabs stay usable while it plans.
        self.plan_button.click(guarded(self.plan_story), plan_inputs, plan_outputs, show_progress="hidden")
        self.plan_confirm.yes.click(guarded(self.plan_story_confirmed), plan_inputs,
                                    plan_outputs, api_name="plan_story_confirmed", show_progress="hidden")
        self.plan_cancel.click(guarded(cancel_handler(self.plan_cancels)), None, None, queue=False)
        story_outputs = [self.status, *self.story_outputs]
        # A table reports one cell edit twice at once; the repeat is dropped, not answered twice.
        self.character_table.input(guarded(drop_repeats(self.edit_characters)),
                                   [self.folder, self.character_table, self.character_choice, self.story_shown],
                                   story_outputs)
        for trigger in (self.add_character_button.click, self.new_character.submit):
            trigger(guarded(self.add_character), [self.folder, self.new_character], [self.new_character, *story_outputs])
        remove_outputs = [*story_outputs, *self.remove_character_confirm.outputs]
        self.remove_character_button.click(guarded(self.remove_character), [self.folder, self.character_choice],
                                           remove_outputs)
        self.remove_character_confirm.yes.click(guarded(functools.partial(self.remove_character, confirmed=True)),
                                                [self.folder, self.character_choice], remove_outputs,
                                                api_name="remove_character_confirmed")
        self.character_choice.input(
            guarded(lambda folder, cid: {**self.references_view(self.project(folder), cid),
                                         **self.remove_character_confirm.hide()}),
            [self.folder, self.character_choice],
            [self.reference_gallery, self.reference_upload, self.reference_selected,
             self.remove_character_confirm.box])
        self.reference_upload.upload(guarded(self.add_references), [self.folder, self.character_choice,
                                                                    self.reference_upload],
                                     [self.status, self.reference_gallery, self.reference_upload,
                                      self.reference_selected])
        self.reference_gallery.select(_selected_index, None, [self.reference_selected], queue=False)
        self.remove_reference_button.click(guarded(self.remove_reference),
                                           [self.folder, self.character_choice, self.reference_selected],
                                           [self.status, self.reference_gallery, self.reference_upload,
                                            self.reference_selected])

    def plan_story(self, folder, topic, num_scenes, seed, kind, base_url, model, api_key,
                   request: gr.Request = None, confirmed=False):
        """Plan the story with the offline planner's variant `seed` (an empty field: a fresh one); the seed field
        then shows the next variant, so the next press plans another story. A job (ui.jobs): its progress area
        shows the story plan, then each scene plan, and the planner's retries and repairs as they happen;
        Cancel stops it (an LLM mid-answer, the offline planner between scenes)."""
        from dreamrunner.planning.base import is_planned

        seed = fresh_plan_seed() if seed is None or seed == "" else max(int(seed), 0)
        planner = make_planner(kind, base_url, model, api_key, seed=seed)  # settings that cannot work: said first
        before = self.project(folder).story
        wanted = int(num_scenes or 0)
        # A plan of this topic that stopped part way (a cancel, a failure, a timeout) goes on from the saved scene
        # plans, as `dreamrunner plan` does: nothing is thrown away, so nothing is asked.
        resume = before if (before.scenes and (topic or "").strip() == before.topic.strip()
                            and wanted in (0, len(before.scenes))
                            and not all(is_planned(s) for s in before.scenes)) else None
        lost = edits.plan_replaces(before) if resume is None else []
        if lost and not confirmed:
            yield self.plan_confirm.ask(
                "**Plan story replaces the plan of this story.** It throws away:\n\n"
                + "\n".join(f"- {html.escape(item)}" for item in lost)
                + "\n\nIt keeps the title, the characters and their reference images, the trained priors (bound "
                  "again to the new scenes) and the approved clips of motions the new plan has. Until the next "
                  "save, `project.json.bak` holds the story as it is now.")
            return
        token = self.plan_cancels.new(request.session_hash if request else None)
        how = "going on with the saved plan" if resume is not None else "planning"
        yield {self.plan_progress: progress_html(None, f"{how} with the {planner.name} planner…"),
               **self.plan_confirm.hide()}
        # Each result is saved as it arrives (a cancel or a failure keeps what was finished); the topic and all
        # of them are one undo step.
        press = f"plan-story-{time.monotonic_ns()}"
        with self.workspace.edit(folder, join=press) as project:
            edits.set_story_fields(project.story, topic=topic)
        story = self.project(folder).story
        notes: list[str] = []  # the LLM planner's retries and repairs, appended by the job's thread
        outline = {"saved": resume is not None}

        def work(progress, cancel):
            planner.progress, planner.cancel = progress, cancel
            if hasattr(planner, "note"):
                planner.note = notes.append

            def on_outline(planned):
                with self.workspace.edit(folder, join=press) as project:
                    project.story = edits.adopt_plan(project.story, planned)
                outline["saved"] = True
                progress(Progress("plan", 0, len(planned.scenes),
                                  f"saved the story plan: {len(planned.scenes)} scenes; planning each scene"))

            def on_scene(scene):
                with self.workspace.edit(folder, join=press) as project:
                    edits.store_scene_plan(project.story, scene)
                    scenes = project.story.scenes
                progress(Progress("plan", sum(is_planned(s) for s in scenes), len(scenes),
                                  f"saved the plan of scene {scene.id}"))

            return planner.plan_story(story.topic, list(story.characters), wanted or None,
                                      on_outline=on_outline, on_scene=on_scene, resume=resume)

        def kept() -> str:
            if not outline["saved"]:
                return "the story plan had not arrived: the story keeps its scenes (the topic is saved)"
            scenes = self.project(folder).story.scenes
            return (f"the story plan and {sum(is_planned(s) for s in scenes)} of {len(scenes)} scene plans are "
                    "saved; Plan story again with this topic goes on from them (Undo takes them back)")

        def show(event, text=""):
            return {self.plan_progress: progress_html(event, text) + _notes_html(notes)}

        try:
            yield from stream_job(run_streaming(work, token), show, token, kept)
        except Exception:
            # A cancel or a failure keeps what was finished: the page shows it (the toast says why it stopped).
            yield self.everything(folder)
            raise
        done = "went on with the saved plan and planned" if resume is not None else "planned"
        offline = kind != "llm"  # an LLM samples anew: no seed brings its plan back
        again = f" (variant {seed}: set Plan variant to {seed} to plan it again)" if offline else ""
        text = f"{done} {len(self.project(folder).story.scenes)} scenes with the {planner.name} planner{again}"
        gr.Info(html.escape(text))
        yield {**self.everything(folder), self.plan_seed: seed + 1, **show(None, text)}

    # The page's request reaches a handler only as a positional parameter with its type (gradio does not look
    # through functools.partial): the confirming and "Another plan" buttons have handlers of their own.
    def plan_story_confirmed(self, folder, topic, num_scenes, seed, kind, base_url, model, api_key,
                             request: gr.Request = None):
        yield from self.plan_story(folder, topic, num_scenes, seed, kind, base_url, model, api_key, request,
                                   confirmed=True)

    def set_story_field(self, folder, field, value, shown=None):
        value, was = value or "", (shown or {}).get(field)
        stored = getattr(self.project(folder).story, field)
        change = board.page_change(value, was, stored)
        if change == "stale":
            warn(board.BoardEditError(f"the {field} was " + STALE.format(what=field)))
        elif change == "apply":
            with self.workspace.edit(folder) as project:
                edits.set_story_fields(project.story, **{field: value})
        stored = getattr(self.project(folder).story, field)
        return self.status_text(folder), stored, {**(shown or {}), field: stored}

    def edit_characters(self, folder, table, character_id=None, shown=None):
        rows = table.values.tolist() if hasattr(table, "values") else table
        try:
            with self.workspace.edit(folder) as project:
                characters.apply_character_rows(project.story, rows, (shown or {}).get("characters"))
        except Exception as error:  # noqa: BLE001 - shown, and the table goes back to the story
            warn(error)
        return {self.status: self.status_text(folder), **self.story_view(folder, character_id)}

    def add_character(self, folder, name):
        with self.workspace.edit(folder) as project:
            character = edits.add_character(project.story, name)
        return {self.status: self.status_text(folder), self.new_character: "",
                **self.story_view(folder, character.id)}

    def remove_character(self, folder, character_id, confirmed=False):
        if not character_id:
            raise gr.Error("choose the character to remove")
        story = self.project(folder).story
        character = edits.find_character(story, character_id)
        if not confirmed:
            bound = [(s.id, k.index) for s in story.scenes for k in s.keyframes
                     for e in k.entities if e.character_id == character.id]
            priors = [p.id for p in story.priors if p.kind == "subject" and p.target == character.id]
            what = [f"{len(character.reference_images)} reference image(s) go off the story (their files stay "
                    f"in media/)"] if character.reference_images else []
            if bound:
                what.append(f"{len(bound)} entity box(es) in {len({s for s, _ in bound})} scene(s) lose their "
                            f"character and stay as plain entities")
            if priors:
                what.append(f"its subject prior(s) {', '.join(priors)} are deleted from the story")
            return self.remove_character_confirm.ask(
                f"**Remove {html.escape(character.name)} ({html.escape(character.id)})?**"
                + ("\n\n" + "\n".join(f"- {html.escape(w)}" for w in what) if what else ""))
        with self.workspace.edit(folder) as project:
            edits.remove_character(project.story, character.id, unbind=True)
        gr.Info(f"removed the character {character.name}")
        return {self.status: self.status_text(folder), **self.story_view(folder),
                **self.remove_character_confirm.hide()}

    def add_references(self, folder, character_id, files):
        if not character_id:
            raise gr.Error("add a character first, then its reference images")
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        try:
            with self.workspace.edit(folder) as project:
                character = edits.find_character(project.story, character_id)
                added = edits.add_reference_images(project, character.id, paths)
            gr.Info(f"added {len(added)} reference image(s) to {character.name}")
        except Exception as error:  # noqa: BLE001
            warn(error)
        view = self.references_view(self.project(folder), character_id)
        view[self.reference_upload]["value"] = None  # the upload box empties for the next images
        return {self.status: self.status_text(folder), **view}

    def remove_reference(self, folder, character_id, index):
        shown = self.reference_paths(self.project(folder), character_id)
        if index is None or not 0 <= int(index) < len(shown):
            raise gr.Error("click the reference image to remove in the gallery first")
        path = shown[int(index)][0]
        with self.workspace.edit(folder) as project:
            edits.remove_reference_image(project.story, character_id, path)
        gr.Info(f"removed {path} from the reference images of {character_id} (the file stays in media/)")
        return {self.status: self.status_text(folder), **self.references_view(self.project(folder), character_id)}

    # -- Storyboard tab ------------------------------------------------------------------------------

    def build_storyboard_tab(self) -> None:
        # Two columns: the scene's words on the left, its keyframe layout on the right (in view at once).
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                self.scene_list = ProjectRadio(label="Scenes", elem_id="scene-list")
                self.scene_description = gr.Textbox(label="Scene", elem_id="scene-description")
                self.narration = gr.Textbox(label="Narration", elem_id="narration", lines=3)
                self.motions = gr.Textbox(label="Motions (one per line; a changed motion changes the entities "
                                                "that carry it)", elem_id="motions", lines=2)
                self.background = gr.Textbox(label="Background", elem_id="background", lines=2)
                with gr.Row():
                    self.replan_button = gr.Button("Re-plan scene", elem_id="replan-scene")
                    self.another_plan_button = gr.Button("Another plan", elem_id="another-plan")
                    self.replan_cancel = gr.Button("Cancel", variant="stop", elem_id="replan-cancel", scale=0)
                self.replan_progress = gr.HTML(elem_id="replan-progress")
                with gr.Row():
                    self.replan_seed = gr.Number(value=0, precision=0, minimum=0, label="Plan variant (seed)",
                                                 elem_id="replan-seed", min_width=120)
                    self.replace_edits = gr.Checkbox(label="Replace my edits too (this re-plan only)", value=False,
                                                     elem_id="replace-edits")
                with gr.Accordion("Animatic: the scene plan as a moving sketch", open=False,
                                  elem_id="animatic-panel"):
                    self.animatic_button = gr.Button("Show the animatic of this scene", elem_id="animatic-button")
                    self.animatic_video = gr.Video(label="Animatic (plan preview, not a render)",
                                                   elem_id="animatic-video", interactive=False, height=240)
            with gr.Column(scale=5):
                self.keyframe_strip = gr.Gallery(label="Keyframes (click one to edit it)", elem_id="keyframe-strip",
                                                 columns=NUM_KEYFRAMES, rows=1, height=150, allow_preview=False,
                                                 object_fit="contain", show_label=True, interactive=False)
                self.keyframe = gr.Radio(KEYFRAME_CHOICES, value=0, label="Keyframe", elem_id="keyframe")
                self.annotator = image_annotator(label="Keyframe layout (faint: the neighbouring keyframes)",
                                                 elem_id="box-editor", sources=None,
                                                 show_clear_button=False, show_remove_button=True,
                                                 show_download_button=False, image_type="numpy", box_min_size=8,
                                                 handle_size=8, boxes_alpha=0.35)
                gr.Markdown("Drag a box to move it, drag its handles to resize it. *Create box* (or `C`), then "
                            "drag to draw a new one and pick who it is. Delete the selected box with its remove "
                            "button or *Delete entity*. Undo any change with ↶ Undo or Ctrl+Z.")
                # Which keyframe picture the box editor and table show (see board.revision); not shown.
                self.board_rev = gr.Textbox(visible=False, elem_id="board-rev")
                self.track_edits = gr.Checkbox(
                    value=True, elem_id="track-edits",
                    label="Name, character, motion and description apply to all keyframes (boxes stay per keyframe)")
                self.entities = gr.Dataframe(headers=board.ENTITY_COLUMNS, elem_id="entities", interactive=True,
                                             wrap=True, datatype=["str", "str", "str", "str", "number", "number",
                                                                  "number", "number"],
                                             column_widths=["13%", "11%", "13%", "31%", "8%", "8%", "8%", "8%"])
                with gr.Row():
                    self.add_entity_button = gr.Button("Add entity", elem_id="add-entity")
                    self.delete_choice = ProjectDropdown(label="Entity", elem_id="delete-choice", scale=1)
                    self.delete_entity_button = gr.Button("Delete entity", elem_id="delete-entity",
                                                          variant="stop")
        self.words_shown = gr.State({})  # the scene's text fields as this tab shows them (see story_shown)
        self.board_outputs = [self.scene_list, self.narration, self.motions, self.background, self.words_shown,
                              self.scene_description, self.keyframe, self.annotator, self.entities,
                              self.delete_choice, self.board_rev, self.keyframe_strip]

    def wire_storyboard_tab(self) -> None:
        where = [self.folder, self.scene_list, self.keyframe]

        self.scene_list.input(guarded(self.board_view), where, self.board_outputs)
        self.keyframe.input(guarded(self.board_view), where, self.board_outputs)
        self.keyframe_strip.select(guarded(self.pick_keyframe), [self.folder, self.scene_list], self.board_outputs)
        for box, field in ((self.narration, "narration"), (self.motions, "motions"),
                           (self.background, "background"), (self.scene_description, "description")):
            # Leaving a field (often by clicking another scene) saves it: no progress overlay, which would
            # swallow that click; only the description changes the scene list's labels.
            outputs = [self.status, box, self.words_shown] + ([self.scene_list] if field == "description" else [])
            save = (lambda folder, scene_id, value, shown, field=field:
                    self.set_scene_field(folder, scene_id, field, value, shown))
            saved = box.blur(guarded(save), [self.folder, self.scene_list, box, self.words_shown], outputs,
                             show_progress="hidden")
            if field == "motions":
                # The entities carry the scene's motions: show them on the scene and keyframe shown by then.
                saved.then(guarded(self.board_view), where, self.board_outputs, show_progress="hidden")
        keyframe_outputs = [self.status, self.annotator, self.entities, self.delete_choice, self.board_rev,
                            self.keyframe_strip, self.motions, self.words_shown]
        self.annotator.change(guarded(self.edit_boxes), [*where, self.board_rev, self.annotator, self.words_shown],
                              keyframe_outputs)
        self.entities.input(guarded(drop_repeats(self.edit_rows)), [*where, self.board_rev, self.track_edits,
                                                                    self.entities, self.words_shown], keyframe_outputs)
        self.add_entity_button.click(guarded(self.add_entity), where, [self.status, *self.board_outputs])
        self.animatic_button.click(guarded(self.animatic), [self.folder, self.scene_list], [self.animatic_video])
        replan_inputs = [*where, self.replace_edits, self.replan_seed, *self.planner_inputs]
        replan_outputs = [self.status, self.replace_edits, self.replan_seed, self.replan_progress,
                          *self.board_outputs]
        self.replan_button.click(guarded(self.replan_scene), replan_inputs, replan_outputs, show_progress="hidden")
        self.another_plan_button.click(guarded(self.another_plan),
                                       replan_inputs, replan_outputs, show_progress="hidden")
        self.replan_cancel.click(guarded(cancel_handler(self.plan_cancels)), None, None, queue=False)
        self.delete_entity_button.click(guarded(self.delete_entity), [*where, self.board_rev, self.delete_choice],
                                        [self.status, *self.board_outputs])

    def pick_keyframe(self, folder, scene_id, event: gr.SelectData):
        return self.board_view(folder, scene_id, event.index)

    def replan_scene(self, folder, scene_id, keyframe, replace_edits, seed, kind, base_url, model, api_key,
                     request: gr.Request = None, another=False):
        """A job (ui.jobs) as Plan story: the scene's new plan is streamed with progress and can be cancelled,
        which leaves the scene as it was."""
        if scene_id is None:
            raise gr.Error("choose a scene to re-plan")
        seed = max(int(seed or 0), 0) + (1 if another else 0)
        planner = make_planner(kind, base_url, model, api_key, seed=seed)
        token = self.plan_cancels.new(request.session_hash if request else None)
        yield {self.replan_progress: progress_html(None, f"re-planning {scene_id} with the {planner.name} planner…")}
        from dreamrunner.planning import replan_scene

        notes: list[str] = []

        def work(progress, cancel):
            planner.progress, planner.cancel = progress, cancel
            if hasattr(planner, "note"):
                planner.note = notes.append
            # A cancel or a failure inside the edit rolls it back: the scene stays as it was.
            with self.workspace.edit(folder) as project:
                project.story = replan_scene(project.story, scene_id, planner,
                                             {"*"} if replace_edits else frozenset())

        def show(event, text=""):
            return {self.replan_progress: progress_html(event, text) + _notes_html(notes)}

        yield from stream_job(run_streaming(work, token), show, token,
                              kept=lambda: f"scene {scene_id} keeps its plan")
        variant = f" (variant {seed})" if seed else ""
        text = (f"re-planned scene {scene_id}{variant}" + (", replacing your edits" if replace_edits
                                                           else ", keeping your edits") + "; Undo takes it back")
        gr.Info(html.escape(text))
        # "Replace my edits too" is for one re-plan: it is unticked so the next one keeps the edits again.
        yield {self.status: self.status_text(folder), self.replace_edits: False, self.replan_seed: seed,
               **show(None, text), **self.board_view(folder, scene_id, keyframe)}

    def another_plan(self, folder, scene_id, keyframe, replace_edits, seed, kind, base_url, model, api_key,
                     request: gr.Request = None):
        yield from self.replan_scene(folder, scene_id, keyframe, replace_edits, seed, kind, base_url, model, api_key,
                                     request, another=True)

    def set_scene_field(self, folder, scene_id, field, value, shown=None):
        value = value or ""
        # The text belongs to the scene the fields showed, whatever the scene list says by the time it arrives.
        shown = shown or {}
        scene_id = shown.get("scene") or scene_id
        was, stored = shown.get(field), _scene_words(self.project(folder).story.scene(scene_id))[field]
        try:
            change = board.page_change(value, was, stored)
            if change == "stale":
                raise board.BoardEditError(f"the {field} of scene {scene_id!r} was " + STALE.format(what=field))
            if change == "apply":
                with self.workspace.edit(folder) as project:
                    edits.edit_scene(project.story, scene_id,
                                     **{field: board.parse_motions(value) if field == "motions" else value})
        except Exception as error:  # noqa: BLE001 - shown; the field goes back to the stored value
            warn(error)
        story = self.project(folder).story
        stored = _scene_words(story.scene(scene_id))[field]
        box = {"narration": self.narration, "motions": self.motions, "background": self.background,
               "description": self.scene_description}[field]
        answer = {self.status: self.status_text(folder), box: stored,
                  self.words_shown: {**shown, "scene": scene_id, field: stored}}
        if field == "description":
            # The scene list is labelled with the scene descriptions. Its value is left alone: the user may have
            # chosen another scene by the time this answer arrives (leaving the field is what sent it).
            answer[self.scene_list] = gr.update(choices=_scene_choices(story))
        return answer

    def _keyframe_outputs(self, folder, scene_id, k, refresh_boxes: bool, shown=None):
        view = self.board_view(folder, scene_id, k)
        # The motions box is redrawn (entity motions join the scene's): the tab now shows those motions.
        words = view[self.words_shown]
        if (shown or {}).get("scene") == scene_id:
            words = {**shown, "motions": words.get("motions", "")}
        return {self.status: self.status_text(folder),
                self.annotator: view[self.annotator] if refresh_boxes else gr.skip(),
                self.entities: view[self.entities], self.delete_choice: view[self.delete_choice],
                self.board_rev: view[self.board_rev], self.keyframe_strip: view[self.keyframe_strip],
                self.motions: view[self.motions], self.words_shown: words}

    def _is_current(self, folder, scene_id, k, rev) -> bool:
        story = self.project(folder).story
        return rev == board.revision(story.scene(scene_id), k, board.canvas_size(story))

    def _stale(self, folder, scene_id, k, shown=None) -> dict:
        """An edit made against an older picture of the keyframe (another tab or a CLI command changed it):
        not applied; the page says so and shows the keyframe as it is now."""
        warn(board.BoardEditError("this keyframe was " + STALE.format(what="boxes")))
        return self._keyframe_outputs(folder, scene_id, k, refresh_boxes=True, shown=shown)

    def _notice_empty(self, folder, scene_id, k) -> None:
        if not self.project(folder).story.scene(scene_id).keyframes[k].entities:
            gr.Warning(f"keyframe {k + 1} of scene {html.escape(scene_id)} has no entities now: it will be drawn "
                       "from the background prompt alone. Undo (Ctrl+Z) brings the last one back.",
                       title="Empty keyframe")

    def edit_boxes(self, folder, scene_id, keyframe, rev, value, shown=None):
        if not value or scene_id is None:
            return gr.skip()
        k = _keyframe_index(keyframe)
        story = self.project(folder).story
        size = board.canvas_size(story)
        turned = (value.get("orientation") or 0) % 4
        boxes = board.upright(value.get("boxes") or [], turned, size)
        if not turned and board.shown_revision(scene_id, k, boxes) == rev:
            return gr.skip()  # the echo of a redraw: the boxes are the picture this tab was given
        if not self._is_current(folder, scene_id, k, rev):
            return self._stale(folder, scene_id, k, shown)
        if board.pending_box(story, scene_id, k, boxes, size):
            return gr.skip()  # a box being drawn: its label dialog is open; it is added when answered
        try:
            with self.workspace.edit(folder) as project:
                scene = project.story.scene(scene_id)
                before = len(scene.keyframes[k].entities)
                changes = board.apply_boxes(project.story, scene_id, k, boxes, size)
                # A drawn box goes to the end of the list and deleted ones change the numbering, and a turned
                # picture is shown upright again: redraw the editor.
                refresh = turned or len(scene.keyframes[k].entities) != before
        except Exception as error:  # noqa: BLE001 - shown; the editor goes back to the stored boxes
            warn(error)
            return self._keyframe_outputs(folder, scene_id, k, refresh_boxes=True, shown=shown)
        if not changes:
            return self._keyframe_outputs(folder, scene_id, k, refresh_boxes=True, shown=shown) if turned else gr.skip()
        deleted = [c for c in changes if c.startswith("deleted")]
        if deleted:
            gr.Info(f"{'; '.join(deleted)} on keyframe {k + 1}; Undo (Ctrl+Z) brings it back")
            self._notice_empty(folder, scene_id, k)
        return self._keyframe_outputs(folder, scene_id, k, refresh_boxes=refresh, shown=shown)

    def edit_rows(self, folder, scene_id, keyframe, rev, whole_track, table, shown=None):
        k = _keyframe_index(keyframe)
        if not self._is_current(folder, scene_id, k, rev):
            return self._stale(folder, scene_id, k, shown)
        rows = table.values.tolist() if hasattr(table, "values") else table
        try:
            with self.workspace.edit(folder) as project:
                board.apply_rows(project.story, scene_id, k, rows, whole_track=bool(whole_track))
        except Exception as error:  # noqa: BLE001
            warn(error)
        return self._keyframe_outputs(folder, scene_id, k, refresh_boxes=True, shown=shown)

    def add_entity(self, folder, scene_id, keyframe):
        k = _keyframe_index(keyframe)
        with self.workspace.edit(folder) as project:
            edits.add_entity(project.story, scene_id, k, "")
        return {self.status: self.status_text(folder), **self.board_view(folder, scene_id, k)}

    def delete_entity(self, folder, scene_id, keyframe, rev, position):
        k = _keyframe_index(keyframe)
        if position is None:
            raise gr.Error("choose the entity to delete")
        if not self._is_current(folder, scene_id, k, rev):
            return {**self._stale(folder, scene_id, k), **self.board_view(folder, scene_id, k)}
        with self.workspace.edit(folder) as project:
            entity = edits.delete_entity(project.story, scene_id, k, int(position))
        gr.Info(f"deleted {entity.name!r} on keyframe {k + 1}; Undo (Ctrl+Z) brings it back")
        self._notice_empty(folder, scene_id, k)
        return {self.status: self.status_text(folder), **self.board_view(folder, scene_id, k)}

    # -- Project tab ---------------------------------------------------------------------------------

    def build_project_tab(self) -> None:
        gr.Markdown("A project is a folder: `project.json` (the story), `project.json.bak` (the story before "
                    "the last save) and `media/`. With autosave on, every edit is written at once; the app "
                    "reopens the last project when it starts.")
        self.folder_box = gr.Textbox(label="Open project", elem_id="project-folder", interactive=False)
        with gr.Row():
            self.recent = gr.Dropdown(label="Projects", elem_id="recent-projects", allow_custom_value=True, scale=3)
            open_button = gr.Button("Open", elem_id="open-project", scale=0)
        with gr.Row():
            self.autosave = gr.Checkbox(label="Autosave", value=True, elem_id="autosave")
            save_button = gr.Button("Save", elem_id="save-project", variant="primary")
            reload_button = gr.Button("Revert to saved", elem_id="reload-project")
        self.revert_confirm = Confirm("revert", "Revert to saved")
        with gr.Row():
            self.new_folder = gr.Textbox(label="Folder (a name under the projects folder, or a path)",
                                         elem_id="new-folder", scale=3)
            new_button = gr.Button("New empty project", elem_id="new-project")
            demo_button = gr.Button("New from the demo story", elem_id="new-demo")
            copy_button = gr.Button("Save a copy here", elem_id="copy-project")

        self._project_buttons = (open_button, save_button, reload_button, new_button, demo_button, copy_button)

    def wire_project_tab(self) -> None:
        open_button, save_button, reload_button, new_button, demo_button, copy_button = self._project_buttons
        out = self.all_outputs
        open_button.click(guarded(self.open_project), [self.recent], out)
        save_button.click(guarded(self.save_project), [self.folder], [self.status])
        where = [self.folder, self.scene_list, self.keyframe]
        reload_button.click(guarded(self.revert_project), where, [*out, *self.revert_confirm.outputs])
        self.revert_confirm.yes.click(guarded(functools.partial(self.revert_project, confirmed=True)), where,
                                      [*out, *self.revert_confirm.outputs], api_name="revert_project_confirmed")
        new_button.click(guarded(lambda text: self.new_project(text, demo=False)), [self.new_folder], out,
                         api_name="new_project")
        demo_button.click(guarded(lambda text: self.new_project(text, demo=True)), [self.new_folder], out,
                          api_name="new_from_demo")
        copy_button.click(guarded(self.copy_project), [self.folder, self.new_folder], out)
        self.autosave.input(guarded(self.set_autosave), [self.folder, self.autosave], [self.status])

    def open_project(self, text):
        folder = self.workspace.resolve_folder(text)
        self.workspace.open(folder)
        return self.everything(folder)

    def save_project(self, folder):
        self.workspace.save(folder)
        gr.Info("project saved")
        return self.status_text(folder)

    def revert_project(self, folder, scene_id, keyframe, confirmed=False):
        if self.workspace.is_dirty(folder) and not confirmed:
            return self.revert_confirm.ask("**Revert to saved drops every change made since the last save.**")
        if not self.workspace.is_dirty(folder):
            gr.Info("every change is saved already: the project was read again from disk")
        self.workspace.reload(folder)
        return {**self.everything(folder, scene_id, keyframe), **self.revert_confirm.hide()}

    def new_project(self, text, demo: bool):
        folder = self.workspace.resolve_folder(text)
        if demo:
            story = Project.load(self.workspace.demo).story
            project = self.workspace.create(folder, story)
            source = self.workspace.demo / "media"
            if source.is_dir():
                shutil.copytree(source, project.media, dirs_exist_ok=True)
        else:
            self.workspace.create(folder, Story(title=folder.name))
        return self.everything(folder)

    def copy_project(self, folder, text):
        target = self.workspace.resolve_folder(text)
        self.workspace.copy_to(folder, target)
        gr.Info(f"saved a copy in {target} and opened it")
        return self.everything(target)

    def set_autosave(self, folder, enabled):
        self.workspace.set_autosave(enabled)
        if enabled and self.workspace.is_dirty(folder):
            self.workspace.save(folder)
        return self.status_text(folder)


def build_app(workspace: Workspace, startup_folder: Path,
              problem: StartupProblem | None = None) -> tuple[gr.Blocks, Editor]:
    editor = Editor(workspace, startup_folder, problem)
    blocks = editor.build()
    return blocks, editor
