"""The editor's Blocks: for now a page that shows the open project; the full storyboard editor grows here."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from dreamrunner.project import Project, ProjectError


def _summary(folder: Path | None) -> str:
    if folder is None:
        return "No project open. Import one with `dreamrunner import-plan FILE --out DIR` and pass `--project DIR`."
    try:
        story = Project.load(folder).story
    except ProjectError as error:
        return f"Cannot open the project: {error}"
    lines = [f"**{story.title or 'Untitled story'}**: {len(story.scenes)} scenes, {len(story.characters)} characters"]
    lines += [f"- {scene.id}: {scene.narration or scene.background}" for scene in story.scenes[:20]]
    return "\n".join(lines)


def build_app(project: Path | None = None) -> gr.Blocks:
    with gr.Blocks(title="DreamRunner Studio") as app:
        gr.Markdown("# DreamRunner Studio")
        gr.Markdown(_summary(project))
    return app
