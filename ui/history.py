"""Undo and redo in the page: two buttons under the project status, and Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y)
anywhere outside a text field (inside one, the browser's own text undo stays).

The history itself is the workspace's (`Workspace.undo` / `Workspace.redo`): every story edit, from any
tab, is a step. After an undo or redo the whole page shows the story as it is now, at the same scene and
keyframe.
"""

from __future__ import annotations

import gradio as gr

from .messages import guarded

# Sent with the page (app.py: launch(head=...)). Keys typed into text fields keep their own meaning.
KEYS_SCRIPT = """
<script>
document.addEventListener("keydown", (event) => {
  if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key !== "z" && key !== "y") return;
  const target = event.target;
  if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
  const button = document.querySelector(key === "y" || event.shiftKey ? "#redo-button" : "#undo-button");
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""


class HistoryBar:
    """Undo and redo buttons; part of `ui.editor.Editor`."""

    def build_history_bar(self) -> None:
        with gr.Row(elem_id="history-bar"):
            self.undo_button = gr.Button("↶ Undo", elem_id="undo-button", size="sm", scale=0, min_width=90)
            self.redo_button = gr.Button("↷ Redo", elem_id="redo-button", size="sm", scale=0, min_width=90)

    def wire_history_bar(self) -> None:
        where = [self.folder, self.scene_list, self.keyframe]
        self.undo_button.click(guarded(lambda *args: self.replay(*args, undo=True)), where, self.all_outputs)
        self.redo_button.click(guarded(lambda *args: self.replay(*args, undo=False)), where, self.all_outputs)

    def replay(self, folder, scene_id, keyframe, undo: bool):
        if not folder:
            raise gr.Error("no project is open")
        step = self.workspace.undo(folder) if undo else self.workspace.redo(folder)
        gr.Info(f"{'undid' if undo else 'redid'}: {step.label}")
        return self.everything(folder, scene_id, keyframe)
