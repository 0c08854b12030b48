"""Priors tab: tune subject priors (from a character's reference images) and motion priors (from the
clips approved for a motion) with dreamrunner.priors, with progress, cancel and reuse of a prior already
trained on the same inputs and settings. A trained prior is bound (scale 1) to the scenes that show its
character or motion, which is how rendering picks it up."""

from __future__ import annotations

import html

import gradio as gr

from dreamrunner import edits
from dreamrunner.machine import read_machine_settings

from .jobs import GPU, Cancels, cancel_handler, progress_html, run_streaming, stream_job
from .messages import guarded
from .render_tab import components_for, machine_memory, ray_cluster
from .stages import load
from .widgets import ProjectDropdown

PRIOR_COLUMNS = ["id", "kind", "target", "steps", "loss first → last", "model", "bound to scenes"]


class PriorsTab:
    """Mixed into `ui.editor.Editor`."""

    prior_cancels = Cancels()

    def build_priors_tab(self) -> None:
        gr.Markdown("Test-time tuning of LoRA priors on the render backend's model (Render tab): subject "
                    "priors on odd transformer blocks, motion priors on even ones (0-based, as in the authors' code). "
                    "Empty training steps: 160 for a subject prior, 300 for a motion prior. A prior already trained on "
                    "the same inputs and settings is reused, not trained again. On the tiny backends the "
                    "priors are trained on random weights: they exercise the flow, they learn nothing useful.")
        with gr.Row():
            self.prior_steps = gr.Number(label="Training steps", precision=0, minimum=1, elem_id="prior-steps")
            self.prior_rank = gr.Number(label="LoRA rank", precision=0, minimum=1, elem_id="prior-rank")
        with gr.Row():
            self.subject_choice = ProjectDropdown(label="Character (subject prior)", elem_id="subject-choice")
            self.train_subject = gr.Button("Train subject prior", variant="primary", elem_id="train-subject")
            self.motion_choice = ProjectDropdown(label="Motion with approved clips (motion prior)",
                                             elem_id="motion-choice")
            self.train_motion = gr.Button("Train motion prior", variant="primary", elem_id="train-motion")
            self.prior_cancel = gr.Button("Cancel", variant="stop", elem_id="prior-cancel")
        self.prior_progress = gr.HTML(elem_id="prior-progress")
        self.prior_table = gr.Dataframe(headers=PRIOR_COLUMNS, elem_id="priors", interactive=False, wrap=True)
        gr.Markdown("Bind a prior to scenes with a strength (0-4; 1 as trained), unbind it, or delete it from the "
                    "story (its file stays in `media/priors`, so training it again on the same inputs reuses it).")
        with gr.Row():
            self.prior_choice = ProjectDropdown(label="Prior", elem_id="prior-choice")
            self.prior_scenes = ProjectDropdown(label="Scenes (none chosen: the scenes it belongs to, or all for "
                                                      "unbind)", multiselect=True, elem_id="prior-scenes")
            self.prior_scale = gr.Number(label="Scale", value=1.0, minimum=0, maximum=4, step=0.1,
                                         elem_id="prior-scale")
        with gr.Row():
            self.bind_prior_button = gr.Button("Bind", elem_id="bind-prior")
            self.unbind_prior_button = gr.Button("Unbind", elem_id="unbind-prior")
            self.delete_prior_button = gr.Button("Delete prior", variant="stop", elem_id="delete-prior")
        self.priors_outputs = [self.prior_steps, self.prior_rank, self.subject_choice, self.motion_choice,
                               self.prior_table, self.prior_choice, self.prior_scenes]

    def priors_view(self, folder, prior_id=None, scene_ids=()) -> dict:
        story = self.project(folder).story
        subjects = [(f"{c.name} ({c.id}, {len(c.reference_images)} images)", c.id) for c in story.characters]
        motions = sorted({c.motion for s in story.scenes for c in s.approved_clips})
        rows = []
        for prior in story.priors:
            card = prior.card
            loss = (f"{card['loss_first']:.4f} → {card['loss_last']:.4f}"
                    if "loss_first" in card and "loss_last" in card else "")
            bound = [f"{s.id} ×{b.scale:g}" for s in story.scenes for b in s.prior_bindings if b.prior_id == prior.id]
            model = str(card.get("model", "")) + (" (noise)" if card.get("is_noise") else "")
            rows.append([prior.id, prior.kind, prior.target, card.get("steps", ""), loss, model, ", ".join(bound)])
        ids = [p.id for p in story.priors]
        chosen = prior_id if prior_id in ids else (ids[0] if ids else None)
        scenes = [(f"{n}. {s.description or s.id}", s.id) for n, s in enumerate(story.scenes, start=1)]
        return {self.prior_steps: story.settings.prior.max_steps, self.prior_rank: story.settings.prior.rank,
                self.subject_choice: gr.update(choices=subjects, value=subjects[0][1] if subjects else None),
                self.motion_choice: gr.update(choices=motions, value=motions[0] if motions else None),
                self.prior_table: rows, self.prior_choice: gr.update(choices=ids, value=chosen),
                self.prior_scenes: gr.update(choices=scenes, value=[s for s in scene_ids or () if s in
                                                                     {value for _, value in scenes}])}

    def wire_priors_tab(self) -> None:
        for component, field in ((self.prior_steps, "max_steps"), (self.prior_rank, "rank")):
            component.input(guarded(lambda folder, value, field=field: self.set_prior_setting(folder, field, value)),
                            [self.folder, component], [self.status])
        outputs = [self.status, self.prior_progress, *self.priors_outputs]
        self.train_subject.click(guarded(self.train_subject_job), [self.folder, self.subject_choice], outputs,
                                 concurrency_id=GPU, concurrency_limit=1, show_progress="hidden")
        self.train_motion.click(guarded(self.train_motion_job), [self.folder, self.motion_choice], outputs,
                                concurrency_id=GPU, concurrency_limit=1, show_progress="hidden")
        self.prior_cancel.click(guarded(cancel_handler(self.prior_cancels)), None, None, queue=False)
        manage = [self.folder, self.prior_choice, self.prior_scenes]
        self.bind_prior_button.click(guarded(self.bind_prior), [*manage, self.prior_scale],
                                     [self.status, *self.priors_outputs])
        self.unbind_prior_button.click(guarded(self.unbind_prior), manage, [self.status, *self.priors_outputs])
        self.delete_prior_button.click(guarded(self.delete_prior), [self.folder, self.prior_choice],
                                       [self.status, *self.priors_outputs])

    def _chosen_prior(self, prior_id):
        if not prior_id:
            raise gr.Error("choose a prior first (train one above)")
        return prior_id

    def bind_prior(self, folder, prior_id, scene_ids, scale):
        with self.workspace.edit(folder) as project:
            bound = edits.bind_prior(project.story, self._chosen_prior(prior_id), scene_ids or None,
                                     1.0 if scale is None else float(scale))
        gr.Info(f"{prior_id} bound to {', '.join(bound) or 'no scene (none shows its target)'}")
        return {self.status: self.status_text(folder), **self.priors_view(folder, prior_id, scene_ids)}

    def unbind_prior(self, folder, prior_id, scene_ids):
        with self.workspace.edit(folder) as project:
            removed = edits.unbind_prior(project.story, self._chosen_prior(prior_id), scene_ids or None)
        gr.Info(f"{prior_id} unbound from {', '.join(removed)}" if removed else f"{prior_id} was not bound there")
        return {self.status: self.status_text(folder), **self.priors_view(folder, prior_id, scene_ids)}

    def delete_prior(self, folder, prior_id):
        with self.workspace.edit(folder) as project:
            prior = edits.delete_prior(project.story, self._chosen_prior(prior_id))
        gr.Info(f"deleted the prior {prior.id} and its bindings; its file {prior.path} stays for reuse")
        return {self.status: self.status_text(folder), **self.priors_view(folder)}

    def set_prior_setting(self, folder, field, value):
        if value is None or value == "":
            raise gr.Error(f"{field} needs a value")
        with self.workspace.edit(folder) as project:
            edits.set_setting(project.story, f"prior.{field}", int(value))
        return self.status_text(folder)

    def train_subject_job(self, folder, character_id, request: gr.Request):
        if not character_id:
            raise gr.Error("add a character with reference images first (Story tab)")
        yield from self._train_job(folder, "subject", character_id, request)

    def train_motion_job(self, folder, motion, request: gr.Request):
        if not motion:
            raise gr.Error("approve clips for a motion first (Motion clips tab)")
        yield from self._train_job(folder, "motion", motion, request)

    def _train_job(self, folder, kind: str, target: str, request):
        priors = load("priors")
        token = self.prior_cancels.new(request.session_hash if request else None)
        live = self.project(folder)
        # The job reads a copy taken now; its result is committed to the live story below.
        snapshot = live.snapshot()
        backend = snapshot.story.settings.render.backend
        machine = read_machine_settings(self.machine_file)
        cluster = ray_cluster(machine)
        yield {self.prior_progress: progress_html(None, f"loading the {backend} backend…" if cluster is None else
                                                  "handing the prior to Ray (starting it and its workers the first "
                                                  "time)…")}

        def commit(prior, outcome):
            with self.workspace.edit(folder) as project:
                return prior, outcome, edits.register_prior(project.story, prior)

        def work(progress, cancel):
            if cluster is None:
                components = components_for(backend, self.machine_file, training=True)
                train = priors.train_subject if kind == "subject" else priors.train_motion
                return commit(*train(snapshot, target, components, progress=progress, cancel=cancel))
            # The prior as a task on a Ray worker's GPU (the CLI's `train-subject|train-motion --ray`); the editor's
            # process alone commits it.
            from dreamrunner.distributed import GraphRun, PriorTask, story_graph

            done = []
            GraphRun(cluster, snapshot, backend, commit_prior=lambda task, prior, outcome: done.append(
                         commit(prior, outcome)), commit_scene=None, model_path=machine.model_paths.get(backend),
                     memory=machine_memory(machine, training=True), progress=progress,
                     cancel=cancel).run(story_graph(snapshot.story, [PriorTask(kind, target)], [])).raise_failures()
            return done[0]

        prior, outcome, bound = yield from stream_job(
            run_streaming(work, token, gpu=True), lambda event, text="": {self.prior_progress: progress_html(event, text)},
            token, kept=lambda: ("no prior was added to the story (training it again with the same inputs and "
                                 "settings resumes from its last checkpoint, if one was written)"))
        how = "reused (already trained on these inputs and settings)" if outcome.cached else \
            f"trained {outcome.card.get('steps')} steps"
        noise = " — on random weights (noise)" if outcome.card.get("is_noise") else ""
        done = f"{prior.id}: {how}{noise}; bound to {', '.join(bound) or 'no scene yet'}"
        gr.Info(html.escape(done), title="Training finished")  # seen from any tab
        yield {self.status: self.status_text(folder), self.prior_progress: progress_html(None, done),
               **self.priors_view(folder, prior.id)}
