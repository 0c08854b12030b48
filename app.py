"""Launch the DreamRunner Studio storyboard editor.

    python app.py [--host H] [--port P] [--share] [--project DIR]

With no --project it reopens the last project, or on a first run a copy of the demo story from
assets/demo. The app's own state (last project, autosave) lives in $DREAMRUNNER_HOME (~/.dreamrunner).
"""

from __future__ import annotations

import argparse
import os
import sys

from dreamrunner.errors import DreamRunnerError
from ui import Workspace, build_app
from ui.editor import CSS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DreamRunner Studio storyboard editor")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--project", help="project folder to open (created with an empty story if missing)")
    args = parser.parse_args(argv)

    workspace = Workspace()
    try:
        folder = workspace.startup_folder(args.project)
        workspace.open(folder)
    except DreamRunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    blocks, _ = build_app(workspace, folder)
    # One GPU job at a time is the "gpu" concurrency group (see ui.jobs); quick edits run side by side.
    blocks.queue(default_concurrency_limit=8)
    blocks.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS,
                  allowed_paths=[str(workspace.projects_dir), str(folder)], show_error=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
