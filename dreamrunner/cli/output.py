"""What every command prints, in one place: progress bars (tqdm), notes, warnings and results.

Three modes, chosen by the global options:
    default   tqdm progress bars and notes on stderr, results on stdout as lines of text
    --quiet   results and warnings only
    --json    one JSON object per line on stdout: {"event": "progress" | "stage" | "note" | "warning" |
              "result" | "error", ...}; nothing else is printed on stdout (errors also go to stderr)

Commands get a `Reporter` as `args.reporter` and hand its `progress` method to long jobs as their
`ProgressCallback` (dreamrunner.jobs), so a render, a training run and a retrieval look the same.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from typing import Any, Callable, TextIO

from ..jobs import Progress

MODES = ("bars", "quiet", "json")


def _serialized(method: Callable) -> Callable:
    """One report at a time: jobs report from several threads (scene plans asked in parallel), and `print` writes
    the text and its newline separately, so two JSON events could share a line."""

    @functools.wraps(method)
    def locked(self: "Reporter", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Reporter:
    def __init__(self, mode: str = "bars", out: TextIO | None = None, err: TextIO | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._bar = None
        self._bar_key: tuple[str, int] | None = None
        self._last_step = 0
        self._lock = threading.RLock()

    @property
    def json(self) -> bool:
        return self.mode == "json"

    def _emit(self, event: str, **data: Any) -> None:
        print(json.dumps({"event": event, **data}, ensure_ascii=False, default=str), file=self.out, flush=True)

    @_serialized
    def progress(self, update: Progress) -> None:
        """A long job's progress (a `ProgressCallback`)."""
        if self.mode == "json":
            data = {"stage": update.stage, "step": update.step, "total": update.total, "message": update.message}
            if update.loss is not None:
                data["loss"] = round(float(update.loss), 6)
            if update.eta_seconds is not None:
                data["eta_seconds"] = round(update.eta_seconds, 1)
            self._emit("progress", **data)
            return
        if self.mode == "quiet":
            return
        from tqdm import tqdm

        key = (update.stage, update.total)
        # A new stage, a new total or a step going back (the next scene, clip or prior) starts a new bar.
        if self._bar is None or key != self._bar_key or update.step < self._last_step:
            self.close_bar()
            self._bar = tqdm(total=update.total or None, desc=update.stage, unit="step", file=self.err,
                             dynamic_ncols=True, leave=False)
            self._bar_key = key
        self._bar.update(update.step - self._bar.n)
        self._last_step = update.step
        # The message too where there is a loss (an A14B prior's bar names the expert in training).
        loss = f"loss {update.loss:.4f}" if update.loss is not None else ""
        postfix = ", ".join(part for part in (update.message, loss) if part)
        if postfix:
            self._bar.set_postfix_str(postfix[:80], refresh=False)
        self._bar.refresh()
        if update.total and update.step >= update.total:
            self.close_bar()  # finished: the notes that follow start on a clean line

    @_serialized
    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_key, self._last_step = None, None, 0

    @_serialized
    def note(self, message: str, **data: Any) -> None:
        """What is going on (stderr; left out with --quiet)."""
        if self.mode == "json":
            self._emit("note", message=message, **data)
        elif self.mode == "bars":
            self._write_err(message)

    @_serialized
    def warn(self, message: str) -> None:
        if self.mode == "json":
            self._emit("warning", message=message)
        else:
            self._write_err(f"warning: {message}")

    @_serialized
    def stage(self, stage: str, status: str, message: str = "", **data: Any) -> None:
        """A pipeline stage started, finished, or was skipped because its result is already there."""
        if self.mode == "json":
            self._emit("stage", stage=stage, status=status, message=message, **data)
        elif self.mode == "bars" and (message or status != "started"):
            self._write_err(f"[{stage}] {message or status}")

    @_serialized
    def result(self, message: str, **data: Any) -> None:
        """What a command produced (stdout: a line of text, or a JSON object with `data`)."""
        self.close_bar()
        if self.mode == "json":
            self._emit("result", message=message, **data)
        else:
            print(message, file=self.out, flush=True)

    @_serialized
    def error(self, message: str, **data: Any) -> None:
        self.close_bar()
        if self.mode == "json":
            self._emit("error", message=message, **data)
        print(f"error: {message}", file=self.err, flush=True)

    def _write_err(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.err)
        else:
            print(message, file=self.err, flush=True)
