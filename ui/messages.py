"""Errors and notices shown in the page: readable text, never a traceback or a frozen page.

A handler that fails shows its message as a toast and leaves every output as it was (`gr.skip()`),
rather than gradio's error state, which blanks the outputs it was meant to update.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
from pydantic import ValidationError

from dreamrunner.errors import DreamRunnerError
from dreamrunner.jobs import Cancelled
from dreamrunner.validation import problems_from

log = logging.getLogger("dreamrunner.ui")
EXPECTED = (DreamRunnerError, ValidationError, ValueError, OSError)


def upload_folder() -> Path:
    """Where gradio keeps uploaded files (GRADIO_TEMP_DIR, else <temp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def without_upload_paths(text: str) -> str:
    """A message names an uploaded file by the name the user chose, not by gradio's temporary copy
    (/tmp/gradio/<hash>/scan.png -> scan.png)."""
    root = re.escape(str(upload_folder()))
    return re.sub(root + r"(?:/[^/\s'\"]+)*/", "", text)


def describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        text = "; ".join(str(p) for p in problems_from(error, None)) or str(error)
    elif isinstance(error, gr.Error):
        text = error.message
    elif isinstance(error, EXPECTED):
        text = str(error)
    else:
        text = f"unexpected error ({type(error).__name__}): {error}. The project was not changed."
    return without_upload_paths(text)


def warn(error: BaseException) -> None:
    """Show an error as a toast (gradio renders toasts as HTML, so the text is escaped)."""
    if isinstance(error, Cancelled):
        gr.Info(html.escape(str(error)), title="Cancelled")  # says what was kept (ui.jobs.stream_job)
        return
    if not isinstance(error, (*EXPECTED, gr.Error)):
        log.error("unexpected error in a UI handler", exc_info=error)
    gr.Warning(html.escape(describe(error)).replace("\n", "<br>"), duration=15, title="Error")


def guarded(handler):
    """Any exception of a handler (plain or generator) becomes a toast; the page stays as it was."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - shown to the user instead of a stuck spinner
                warn(error)
                yield gr.skip()
        return generator

    @functools.wraps(handler)
    def plain(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            warn(error)
            return gr.skip()
    return plain


def drop_repeats(handler, window: float = 0.5):
    """gradio's tables report one cell edit twice at the same moment (two `input` events with the same
    table): the repeat, the same inputs again within `window` seconds, is dropped (`gr.skip()`) so the edit
    is applied and any warning shown once."""
    last: dict = {"key": None, "at": 0.0}
    lock = threading.Lock()

    @functools.wraps(handler)
    def once(*args):
        key = repr(args)
        with lock:
            now = time.monotonic()
            if key == last["key"] and now - last["at"] < window:
                return gr.skip()
            last.update(key=key, at=now)
        return handler(*args)
    return once
