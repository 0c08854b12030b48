"""Motion clips tab: per motion of a scene, retrieve reference clips (dreamrunner.retrieval), watch them
with their scores, approve or reject them, or add your own; approved clips are copied into the project
(media/clips/) and listed in `scene.approved_clips`, which is what motion priors train on."""

from __future__ import annotations

import hashlib
import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from dreamrunner import edits
from dreamrunner.errors import DreamRunnerError
from dreamrunner.story import ClipRef

from .jobs import Cancels, progress_html, run_streaming, stream_job
from .messages import guarded
from .stages import available, load
from .widgets import ProjectDropdown

CLIP_COLUMNS = ["id", "motion", "score", "source", "caption"]


class ClipError(DreamRunnerError):
    pass


def _approval(clip: ClipRef) -> str:
    """The approved-clip dropdown's value: one approval (a clip may be approved for several motions)."""
    return f"{clip.motion}\t{clip.id}"


class ClipsTab:
    """Mixed into `ui.editor.Editor`."""

    clip_cancels = Cancels()

    def build_clips_tab(self) -> None:
        gr.Markdown("For each motion of a scene, find reference clips in the clip library, watch them and "
                    "approve the ones that show the motion; a motion prior is tuned on the approved clips.")
        with gr.Row():
            self.clips_scene = ProjectDropdown(label="Scene", elem_id="clips-scene")
            self.clips_motion = ProjectDropdown(label="Motion", elem_id="clips-motion")
            # The demo library's drawn figures and cartoon rabbit escape the HOG people detector
            # (dreamrunner/assets/clips/README.md): moving-subject segmentation is the default here.
            self.clips_detector = gr.Dropdown([("moving subject", "motion"), ("people (HOG)", "hog")], value="motion",
                                              label="Subject detector", elem_id="clips-detector")
            self.find_clips = gr.Button("Find clips", variant="primary", elem_id="find-clips")
        if not available("retrieval"):
            gr.Markdown("*The retrieval stage (`dreamrunner.retrieval`) is not in this installation: add your "
                        "own clips below.*", elem_id="clips-unavailable")
        self.clips_progress = gr.HTML(elem_id="clips-progress")
        self.clips_notes = gr.Markdown(elem_id="clips-notes")
        # The clips found: {"scene", "motion", "clips": [...], "dropped", "warnings"}; they belong to that motion.
        self.candidates = gr.State(None)
        self.candidate_gallery = gr.Gallery(label="Retrieved clips (best first)", elem_id="clip-gallery",
                                            columns=5, height=220, allow_preview=False)
        with gr.Row():
            with gr.Column(scale=2):
                self.candidate_video = gr.Video(label="Selected clip", elem_id="clip-video", interactive=False,
                                                height=260)
            with gr.Column(scale=1):
                self.candidate_info = gr.Markdown(elem_id="clip-info")
                self.candidate_index = gr.Number(visible=False, elem_id="clip-index")
                self.approve_clip = gr.Button("Approve", variant="primary", elem_id="approve-clip")
                self.reject_clip = gr.Button("Reject", variant="stop", elem_id="reject-clip")
        gr.Markdown("#### Approved clips of this scene")
        self.approved_table = gr.Dataframe(headers=CLIP_COLUMNS, elem_id="approved-clips", interactive=False,
                                           wrap=True)
        with gr.Row():
            self.approved_choice = ProjectDropdown(label="Approved clip", elem_id="approved-choice")
            self.unapprove = gr.Button("Remove from approved", elem_id="unapprove-clip")
            self.own_clip = gr.File(label="Add your own clip for this motion (mp4, webm, mov)",
                                    file_types=["video"], elem_id="own-clip")
        self.clips_outputs = [self.clips_scene, self.clips_motion, self.approved_table, self.approved_choice]

    def clips_view(self, folder, scene_id=None, motion=None) -> dict:
        story = self.project(folder).story
        ids = [s.id for s in story.scenes]
        scene_id = scene_id if scene_id in ids else (ids[0] if ids else None)
        if scene_id is None:
            return {self.clips_scene: gr.update(choices=[], value=None),
                    self.clips_motion: gr.update(choices=[], value=None), self.approved_table: [],
                    self.approved_choice: gr.update(choices=[], value=None)}
        scene = story.scene(scene_id)
        motion = motion if motion in scene.motions else (scene.motions[0] if scene.motions else None)
        rows = [[c.id, c.motion, "" if c.score is None else round(c.score, 3), c.source, c.caption]
                for c in scene.approved_clips]
        choices = [(f"{c.motion}: {c.id}", _approval(c)) for c in scene.approved_clips]
        return {self.clips_scene: gr.update(choices=[(f"{n}. {s.description or s.id}", s.id)
                                                     for n, s in enumerate(story.scenes, start=1)], value=scene_id),
                self.clips_motion: gr.update(choices=scene.motions, value=motion),
                self.approved_table: rows, self.approved_choice: gr.update(choices=choices,
                                                                          value=choices[0][1] if choices else None)}

    def wire_clips_tab(self) -> None:
        where = [self.folder, self.clips_scene, self.clips_motion]
        candidate_outputs = [self.candidates, self.candidate_gallery, self.candidate_video, self.candidate_info,
                             self.candidate_index]
        # Clips found for one motion are not offered for another: a new scene or motion clears them.
        self.clips_scene.input(guarded(lambda folder, scene_id: {**self.clips_view(folder, scene_id),
                                                                 **self.candidates_view(None, None)}),
                               [self.folder, self.clips_scene], [*self.clips_outputs, self.clips_notes,
                                                                 *candidate_outputs])
        self.clips_motion.input(guarded(lambda folder, scene_id, motion: {
            **self.clips_view(folder, scene_id, motion), **self.candidates_view(None, None)}), where,
            [*self.clips_outputs, self.clips_notes, *candidate_outputs])
        self.find_clips.click(guarded(self.retrieve_job), [*where, self.clips_detector],
                              [self.clips_progress, self.clips_notes, *candidate_outputs], show_progress="hidden")
        self.candidate_gallery.select(guarded(self.on_gallery_select), [self.candidates],
                                      [self.candidate_video, self.candidate_info, self.candidate_index])
        self.approve_clip.click(guarded(self.approve), [*where, self.candidates, self.candidate_index],
                                [self.status, *self.clips_outputs])
        self.reject_clip.click(guarded(self.reject), [*where, self.candidates, self.candidate_index],
                               [self.status, *self.clips_outputs, self.clips_notes, *candidate_outputs])
        self.unapprove.click(guarded(self.remove_approved), [*where, self.approved_choice],
                             [self.status, *self.clips_outputs])
        self.own_clip.upload(guarded(self.add_own_clip), [*where, self.own_clip],
                             [self.status, self.own_clip, *self.clips_outputs])

    def retrieve_job(self, folder, scene_id, motion, detector, request: gr.Request):
        if not motion:
            raise gr.Error("this scene has no motion to find clips for; add one in the storyboard")
        retrieval = load("retrieval")
        token = self.clip_cancels.new(request.session_hash if request else None)
        key = hashlib.sha1(f"{folder}\n{motion}".encode()).hexdigest()[:16]
        out = Path(tempfile.gettempdir()) / "dreamrunner-clips" / key
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        settings = retrieval.RetrievalSettings(output_dir=str(out), detector=detector or "motion")

        def work(progress, cancel):
            return retrieval.retrieve_clips(motion, retrieval.default_demo_catalog(), settings, progress=progress,
                                            cancel=cancel)

        result = yield from stream_job(run_streaming(work, token),
                                       lambda event, text="": {self.clips_progress: progress_html(event, text)})
        found = {"scene": scene_id, "motion": motion, "dropped": len(result.dropped), "warnings": result.warnings,
                 "clips": [{"id": c.id, "path": c.path, "caption": c.caption, "score": float(c.score),
                            "source": "retrieval"} for c in result.clips if c.path]}
        yield {self.clips_progress: progress_html(None, f"retrieval done: {', '.join(result.stages)}"),
               **self.candidates_view(found, 0 if found["clips"] else None)}

    def candidates_view(self, found: dict | None, index: int | None) -> dict:
        """The clips found for a motion (None: none yet) with their count, one of them selected."""
        clips = found["clips"] if found else []
        gallery = [(c["path"], f"{c['score']:.3f} · {c['caption'][:60]}") for c in clips]
        if found:
            notes = [f"**{len(clips)} clip(s)** found for *{html.escape(found['motion'])}* still to review; "
                     f"{found['dropped']} candidate(s) left out."]
            notes += [f"- {html.escape(w, quote=False)}" for w in found["warnings"]]
        else:
            notes = ["*Find clips for this motion, or add your own below.*"]
        view = {self.candidates: found, self.candidate_gallery: gallery, self.clips_notes: "\n".join(notes)}
        return {**view, **dict(zip((self.candidate_video, self.candidate_info, self.candidate_index),
                                   self.select_candidate(found, index)))}

    def on_gallery_select(self, candidates, event: gr.SelectData):
        return self.select_candidate(candidates, event.index)

    def select_candidate(self, found, index: int | None = None):
        clips = found["clips"] if found else []
        if index is None or not 0 <= int(index) < len(clips):
            return None, "*No clip selected.*", None
        clip = clips[int(index)]
        info = (f"**{html.escape(clip['id'])}**  \nscore **{clip['score']:.3f}**  \n"
                f"{html.escape(clip['caption'])}")
        return clip["path"], info, int(index)

    def _candidate(self, found, scene_id, motion, index) -> dict:
        clips = found["clips"] if found else []
        if index is None or not 0 <= int(index) < len(clips):
            raise ClipError("select a retrieved clip first (click it in the gallery)")
        if (found["scene"], found["motion"]) != (scene_id, motion):
            raise ClipError(f"these clips were found for {found['motion']!r} of scene {found['scene']}; find clips "
                            f"for {motion!r} first")
        return clips[int(index)]

    def approve(self, folder, scene_id, motion, found, index):
        clip = self._candidate(found, scene_id, motion, index)
        with self.workspace.edit(folder) as project:
            edits.approve_clip(project, scene_id, motion, clip["path"], clip["id"], clip["caption"], clip["score"],
                               clip["source"])
        gr.Info(f"approved {clip['id']} for {motion!r}")
        return {self.status: self.status_text(folder), **self.clips_view(folder, scene_id, motion)}

    def reject(self, folder, scene_id, motion, found, index):
        clip = self._candidate(found, scene_id, motion, index)
        with self.workspace.edit(folder) as project:
            scene = project.story.scene(scene_id)
            if any(c.id == clip["id"] and c.motion == motion for c in scene.approved_clips):
                edits.unapprove_clip(project.story, scene_id, motion, clip["id"])
        rest = {**found, "clips": [c for c in found["clips"] if c["id"] != clip["id"]]}
        return {self.status: self.status_text(folder), **self.clips_view(folder, scene_id, motion),
                **self.candidates_view(rest, 0 if rest["clips"] else None)}

    def remove_approved(self, folder, scene_id, motion, approval):
        if not approval or "\t" not in approval:
            raise ClipError("choose an approved clip to remove")
        approved_motion, clip_id = approval.split("\t", 1)
        with self.workspace.edit(folder) as project:
            edits.unapprove_clip(project.story, scene_id, approved_motion, clip_id)
        return {self.status: self.status_text(folder), **self.clips_view(folder, scene_id, motion)}

    def add_own_clip(self, folder, scene_id, motion, upload):
        if not motion:
            raise ClipError("choose the motion this clip shows")
        path = Path(upload if isinstance(upload, str) else upload.name)
        with self.workspace.edit(folder) as project:
            clip = edits.approve_clip(project, scene_id, motion, path)
        gr.Info(f"added {clip.id} for {motion!r}")
        return {self.status: self.status_text(folder), self.own_clip: None,
                **self.clips_view(folder, scene_id, motion)}
