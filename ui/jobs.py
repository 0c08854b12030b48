"""Long jobs (render, train, retrieve, export) for the editor: a worker thread per job, its progress
streamed to the page, a cancel button per browser session, and one GPU job at a time.

Gradio's queue already runs the GPU events one at a time (they share the concurrency id `GPU`); the
lock here also covers a job whose page was closed while its thread finishes its current step.
"""

from __future__ import annotations

import html
import queue
import threading
from typing import Any, Callable, Iterator

import gradio as gr

from dreamrunner.jobs import Cancelled, CancelToken, Progress, ProgressCallback

GPU = "gpu"  # concurrency id of every event that runs a model
GPU_LOCK = threading.Lock()
_DONE = object()
CANCELLING = "cancelling after the current step…"


class Cancels:
    """The cancel token of each browser session's job: the one running, or the one waiting for its turn
    (`reserve` at the click, `start` when the job runs), so Cancel also stops a job still in the queue."""

    def __init__(self) -> None:
        self._tokens: dict[str, CancelToken] = {}
        self._waiting: set[str] = set()
        self._guard = threading.Lock()

    def new(self, session: str | None) -> CancelToken:
        token = CancelToken()
        with self._guard:
            self._tokens[session or ""] = token
            self._waiting.discard(session or "")
        return token

    def reserve(self, session: str | None) -> CancelToken:
        token = self.new(session)
        with self._guard:
            self._waiting.add(session or "")
        return token

    def start(self, session: str | None) -> CancelToken:
        """The token `reserve` made for this session's job, else a new one."""
        with self._guard:
            if (session or "") in self._waiting:
                self._waiting.discard(session or "")
                return self._tokens[session or ""]
        return self.new(session)

    def cancel(self, session: str | None) -> bool:
        with self._guard:
            token = self._tokens.get(session or "")
        if token is None or token.cancelled:
            return False
        token.cancel()
        return True


def cancel_handler(cancels: Cancels):
    """The Cancel button's handler: cancels this page's job and says so in a toast (the job's own progress
    area then says "cancelling", and at the end what was kept; see stream_job)."""
    def cancel(request: gr.Request):
        if cancels.cancel(request.session_hash if request else None):
            gr.Info(CANCELLING, title="Cancelling")
        else:
            gr.Warning("no job of this page is running", title="Nothing to cancel")
    return cancel


def run_streaming(work: Callable[[ProgressCallback, CancelToken], Any], cancel: CancelToken,
                  gpu: bool = False) -> Iterator[Progress]:
    """Run `work(progress, cancel)` in a thread; yield its progress; return (via StopIteration) its result.

    Use as `result = yield from run_streaming(...)`; an exception of the work is raised here.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            if gpu:
                with GPU_LOCK:
                    outcome["value"] = work(events.put, cancel)
            else:
                outcome["value"] = work(events.put, cancel)
        except BaseException as error:  # noqa: BLE001 - handed to the page's handler
            outcome["error"] = error
        finally:
            events.put(_DONE)

    threading.Thread(target=target, name="dreamrunner-job", daemon=True).start()
    finished = False
    try:
        while True:
            item = events.get()
            if item is _DONE:
                finished = True
                break
            # Keep only the newest of a burst of updates; the page needs the latest state, not every step.
            while True:
                try:
                    newer = events.get_nowait()
                except queue.Empty:
                    break
                if newer is _DONE:
                    events.put(_DONE)
                    break
                item = newer if newer.preview is not None or item.preview is None else _merge(item, newer)
            yield item
    finally:
        if not finished:
            # The page went away (or gradio cancelled the event): stop the work at its next step.
            cancel.cancel()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _merge(with_preview: Progress, newer: Progress) -> Progress:
    """The newer step's numbers with the last preview seen, so a preview is not dropped by a later step."""
    return Progress(newer.stage, newer.step, newer.total, newer.message, newer.loss, newer.eta_seconds,
                    with_preview.preview)


def stream_job(jobs: Iterator[Progress], show, cancel: CancelToken | None = None,
               kept: Callable[[], str] | None = None):
    """Drive `run_streaming`: yield `show(event)` per progress event, return the job's result; on an error,
    show it in the job's own progress area too (the toast alone is easy to miss) and raise it.

    Only the job writes its progress area (the Cancel button does not, so no late answer of it can cover
    the job's last word): once `cancel` is set, events show "cancelling after the current step". A cancelled
    job ends with "cancelled: " + `kept()`, which says what the job had finished and kept, or that nothing was."""
    try:
        while True:
            try:
                event = next(jobs)
            except StopIteration as stop:
                return stop.value
            yield show(None, CANCELLING) if cancel is not None and cancel.cancelled else show(event)
    except Cancelled:
        text = "cancelled by the user" + (f"; {kept()}" if kept is not None else "")
        yield show(None, text)
        raise Cancelled(text) from None
    except Exception as error:  # noqa: BLE001 - re-raised for the toast
        from .messages import describe

        yield show(None, f"failed: {describe(error)}")
        raise


def progress_html(event: Progress | None, done_text: str = "") -> str:
    """A progress bar with the step, message, loss and time left."""
    if event is None:
        return (f"<div class='job-progress' style='white-space:pre-wrap'>{html.escape(done_text)}</div>"
                if done_text else "")
    percent = round(100 * event.fraction)
    parts = [f"{event.stage}: step {event.step}/{event.total}"]
    if event.message:
        parts.append(event.message)
    if event.loss is not None:
        parts.append(f"loss {event.loss:.4f}")
    if event.eta_seconds is not None:
        parts.append(f"about {event.eta_seconds:.0f} s left")
    return (f"<div class='job-progress'><progress max='100' value='{percent}' style='width:100%'></progress>"
            f"<div>{html.escape(' · '.join(parts))}</div></div>")
