"""Errors and notices shown in the page: readable text, never a traceback or a frozen page.

A handler that fails shows its message as a toast and leaves every output as it was (`gr.skip()`),
rather than gradio's error state, which blanks the outputs it was meant to update.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging

import gradio as gr
from pydantic import ValidationError

from dreamrunner.errors import DreamRunnerError
from dreamrunner.jobs import Cancelled
from dreamrunner.validation import problems_from

log = logging.getLogger("dreamrunner.ui")
EXPECTED = (DreamRunnerError, ValidationError, ValueError, OSError)


def describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(str(p) for p in problems_from(error, None)) or str(error)
    if isinstance(error, gr.Error):
        return error.message
    if isinstance(error, EXPECTED):
        return str(error)
    return f"unexpected error ({type(error).__name__}): {error}. The project was not changed."


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
