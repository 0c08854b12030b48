"""Errors and notices shown in the page: readable text, never a traceback or a frozen page."""

from __future__ import annotations

import functools
import html
import inspect
import logging

import gradio as gr
from pydantic import ValidationError

from dreamrunner.errors import DreamRunnerError
from dreamrunner.validation import problems_from

log = logging.getLogger("dreamrunner.ui")


def describe(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(str(p) for p in problems_from(error, None)) or str(error)
    if isinstance(error, (DreamRunnerError, ValueError, OSError)):
        return str(error)
    return f"unexpected error ({type(error).__name__}): {error}. The project was not changed."


def as_error(error: BaseException) -> gr.Error:
    """A gr.Error with the error's message (escaped: gradio renders messages as HTML)."""
    if not isinstance(error, (DreamRunnerError, ValidationError, ValueError, OSError)):
        log.exception("unexpected error in a UI handler", exc_info=error)
    return gr.Error(html.escape(describe(error)).replace("\n", "<br>"), duration=None, print_exception=False)


def warn(error: BaseException) -> None:
    """Show an error as a toast and carry on (the handler then shows the story as it is)."""
    if not isinstance(error, (DreamRunnerError, ValidationError, ValueError, OSError)):
        log.exception("unexpected error in a UI handler", exc_info=error)
    gr.Warning(html.escape(describe(error)).replace("\n", "<br>"), duration=12)


def guarded(handler):
    """Turn any exception of a handler (plain or generator) into a readable gr.Error."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:  # noqa: BLE001 - shown to the user instead of a stuck spinner
                raise as_error(error) from error
        return generator

    @functools.wraps(handler)
    def plain(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise as_error(error) from error
    return plain
