"""What long jobs (training, rendering, retrieval) share with whoever drives them: progress and cancel."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from .errors import DreamRunnerError


class Cancelled(DreamRunnerError):
    """The user cancelled the job; whatever it finished before stays saved."""


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if the job was cancelled; call it between units of work."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    message: str = ""
    loss: float | None = None
    eta_seconds: float | None = None
    preview: object | None = None  # e.g. a uint8 HxWx3 array for live previews

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


class EtaClock:
    """Estimates the time left from the mean time per finished step."""

    def __init__(self, total: int, start_step: int = 0) -> None:
        self.total = total
        self.start_step = start_step
        self.started = time.monotonic()

    def eta(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * (self.total - step)
