"""The Render tab's "This machine" settings: stored in the app home's machine.json, read back into the tab, and
used (with the model folder) when the tab loads a backend."""

import json

import gradio as gr
import pytest

from dreamrunner.backends.memory import MemoryOptions
from ui import render_tab
from ui.editor import build_app
from ui.workspace import DEMO_PROJECT, Workspace


def test_machine_settings_round_trip_and_reach_the_loaded_backend(tmp_path):
    _, editor = build_app(Workspace(home=tmp_path), DEMO_PROJECT)
    editor.set_machine_setting("memory", "model")
    editor.set_machine_setting("compile", "off")
    editor.set_machine_setting("model_paths", f"  {tmp_path / 'CogVideoX-2b'} ", "cogvideox-2b")
    stored = json.loads((tmp_path / "machine.json").read_text())
    assert stored["memory"] == "model" and stored["model_paths"] == {"cogvideox-2b": str(tmp_path / "CogVideoX-2b")}
    view = editor.machine_view()
    assert view[editor.machine_memory] == "model" and view[editor.machine_paths["cogvideox-2b"]] == str(
        tmp_path / "CogVideoX-2b")
    with pytest.raises(gr.Error, match="memory"):
        editor.set_machine_setting("memory", "lots")
    editor.set_machine_setting("model_paths", "", "cogvideox-2b")  # empty: back to the default
    assert json.loads((tmp_path / "machine.json").read_text())["model_paths"] == {}

    render_tab._components.clear()
    components = render_tab.components_for("tiny", editor.machine_file)
    assert components.memory == MemoryOptions(preset="model", compile="off")
    assert render_tab.components_for("tiny", editor.machine_file) is components  # loaded once
    training = render_tab.components_for("tiny", editor.machine_file, training=True)
    assert training is not components and training.memory.quantize == "none"
    editor.set_machine_setting("memory", "vae-tiling")
    assert render_tab.components_for("tiny", editor.machine_file).memory.preset == "vae-tiling"
    render_tab._components.clear()
