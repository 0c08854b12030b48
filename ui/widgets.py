"""Choice widgets whose choices follow the open project (scenes, motions, characters, priors, variants).

Gradio checks a Radio's or Dropdown's value against its choices before a handler runs and answers a value
it does not offer with a raw error ("Value: 's1' (type: ...) is not in the list of choices"). After a switch
to another project (New, Open, Revert, Open the backup) an event can still carry the previous project's
selection: the box editor's change event fires while the page applies the new choices. These widgets hand
such a value to the handler as None (nothing chosen), and every handler treats None as "the first one".
"""

from __future__ import annotations

import gradio as gr


def _offered(component, payload):
    values = {value for _, value in component.choices}
    if isinstance(payload, list):
        return [v for v in payload if v in values]
    return payload if payload in values else None


class ProjectRadio(gr.Radio):
    is_template = True  # drawn by the frontend as a plain Radio (gradio's rule for subclasses)

    def preprocess(self, payload):
        return super().preprocess(_offered(self, payload))


class ProjectDropdown(gr.Dropdown):
    is_template = True

    def preprocess(self, payload):
        return super().preprocess(payload if self.allow_custom_value else _offered(self, payload))
