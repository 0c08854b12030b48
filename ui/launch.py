"""Launch the DreamRunner Studio storyboard editor: `dreamrunner-studio`, `dreamrunner app` or `python app.py`.

    dreamrunner-studio [--host H] [--port P] [--share] [--project DIR] [--project-root DIR ...] [--max-upload SIZE]

With no --project it reopens the last project, or on a first run a copy of the demo story from
dreamrunner/assets/demo. The app's own state (last project, autosave) lives in $DREAMRUNNER_HOME (~/.dreamrunner).
The page may open, create or copy projects only under $DREAMRUNNER_HOME/projects, the --project-root
folders and the project opened at start (docs/editor.md, "Security").
"""

from __future__ import annotations

import argparse
import os
import sys

from dreamrunner.errors import DreamRunnerError
from . import Workspace, build_app
from .editor import CSS
from .history import KEYS_SCRIPT
from .server import DEFAULT_MAX_UPLOAD, MAX_UPLOAD_ENV, launch_options, parse_size


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="DreamRunner Studio storyboard editor")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--project", help="project folder to open (created with an empty story if missing)")
    parser.add_argument("--project-root", action="append", default=[], metavar="DIR",
                        help="a folder under which the page may open, create and copy projects, besides "
                             "$DREAMRUNNER_HOME/projects (repeatable)")
    parser.add_argument("--max-upload", default=os.environ.get(MAX_UPLOAD_ENV) or DEFAULT_MAX_UPLOAD,
                        metavar="SIZE", help=f"largest file a page may upload, e.g. 500kb, 200mb, 2gb "
                                             f"(default {DEFAULT_MAX_UPLOAD}, or ${MAX_UPLOAD_ENV})")
    args = parser.parse_args(argv)

    try:
        max_upload = parse_size(args.max_upload)
    except DreamRunnerError as error:
        parser.error(str(error))  # a bad option value: a usage error (exit 2)
    try:
        workspace = Workspace(roots=args.project_root)
        folder, problem = workspace.start(args.project)
        options = launch_options(workspace, max_upload)
    except DreamRunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if problem is not None:
        print(f"warning: {problem.error}; the demo story is open instead (the page offers the backup)",
              file=sys.stderr)
    blocks, _ = build_app(workspace, folder, problem)
    # One GPU job at a time is the "gpu" concurrency group (see ui.jobs); quick edits run side by side.
    blocks.queue(default_concurrency_limit=8)
    blocks.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, head=KEYS_SCRIPT,
                  show_error=True,
                  **options)
    return 0
