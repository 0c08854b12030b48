"""A confirmation step in the page for actions that throw work away (Plan story over a planned story,
Remove character, Revert to saved): the action's button first says what will be lost and asks; only the
confirming button does it. The question sits under the button, so it is seen where the click was made."""

from __future__ import annotations

import gradio as gr


class Confirm:
    """Build inside the layout where the question should appear; `ask` and `hide` are handler outputs."""

    def __init__(self, name: str, yes_label: str):
        with gr.Group(visible=False, elem_id=f"confirm-{name}") as self.box:
            self.text = gr.Markdown(elem_id=f"confirm-{name}-text")
            with gr.Row():
                self.yes = gr.Button(yes_label, variant="stop", elem_id=f"confirm-{name}-yes", scale=0)
                self.no = gr.Button("Cancel", elem_id=f"confirm-{name}-no", scale=0)
        self.no.click(lambda: gr.update(visible=False), None, self.box, queue=False)

    @property
    def outputs(self) -> list:
        return [self.box, self.text]

    def ask(self, text: str) -> dict:
        return {self.box: gr.update(visible=True), self.text: text}

    def hide(self) -> dict:
        return {self.box: gr.update(visible=False)}
