"""How the editor's web server is launched safely: which files it serves and how large an upload may be.

Gradio serves files at `/gradio_api/file=<absolute path>` (and the older `/gradio_api/file/<path>`) from
the launch's `allowed_paths`, its upload folder and its cache. A handler's returned file (a reference
image, a clip, a render) is copied into that cache first, and the page fetches the copy, so the editor
never needs the route to read a project folder directly. `allowed_paths` is therefore fixed at launch
to the workspace's roots (needed only for that copy step), and `FileRouteGuard` answers 403 for every
file request outside gradio's own upload and cache folders: project media reach a page only as copies a
handler made for that page's open project, and no request names a server file, whatever folders a
client tried to open.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gradio import utils as gradio_utils
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from dreamrunner.errors import DreamRunnerError

from .workspace import Workspace

MAX_UPLOAD_ENV = "DREAMRUNNER_MAX_UPLOAD"
DEFAULT_MAX_UPLOAD = "200mb"  # a few reference images and motion clips; far above any one of them
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


class ServerSettingError(DreamRunnerError):
    pass


def parse_size(text: str) -> int:
    """'200mb' -> bytes (units b, kb, mb, gb, tb; 1 kb = 1024 b). ServerSettingError when malformed or zero."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?b)?\s*", str(text).lower())
    if match is None or int(match.group(1)) == 0:
        raise ServerSettingError(f"upload limit {text!r} is not a size such as 500kb, 200mb or 2gb")
    return int(match.group(1)) * _UNITS[match.group(2) or "b"]


def served_folders() -> list[Path]:
    """The folders gradio itself writes to and may serve from: its upload folder and its examples cache."""
    return [Path(gradio_utils.get_upload_folder()).resolve(), Path(gradio_utils.get_cache_folder()).resolve()]


def file_route_allows(requested: str) -> bool:
    """Whether a file route may serve `requested` (the text after `file=`), resolved the way gradio does."""
    if "://" in requested:  # gradio would fetch a URL for the caller; the editor never needs that
        return False
    target = Path(os.path.abspath(requested)).resolve()
    return any(target == folder or folder in target.parents for folder in served_folders())


class FileRouteGuard:
    """ASGI middleware: 403 for any gradio file request outside gradio's upload and cache folders."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            for prefix in FILE_ROUTES:
                if path.startswith(prefix) and not file_route_allows(path[len(prefix):]):
                    await PlainTextResponse("File not allowed.", status_code=403)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def launch_options(workspace: Workspace, max_upload: int) -> dict:
    """Keyword arguments for `Blocks.launch`: allowed_paths fixed to the roots, the guard, the upload limit
    (bytes)."""
    return {"allowed_paths": [str(root) for root in workspace.roots], "max_file_size": max_upload,
            "app_kwargs": {"middleware": [Middleware(FileRouteGuard)]}}
