"""The Gradio storyboard editor. It calls `dreamrunner` and shows its state; no tensor math here."""

from .editor import Editor, build_app
from .workspace import Workspace

__all__ = ["Editor", "Workspace", "build_app"]
