"""The editor's job runner: progress streamed from a worker thread, cancel, errors, one GPU job at a time."""

from __future__ import annotations

import threading
import time

import pytest

from dreamrunner.errors import DreamRunnerError
from dreamrunner.jobs import CancelToken, Cancelled, Progress
from ui.jobs import GPU_LOCK, Cancels, progress_html, run_streaming, stream_job


def counting(steps: int, seconds_per_step: float = 0.0):
    def work(progress, cancel):
        for step in range(1, steps + 1):
            time.sleep(seconds_per_step)
            cancel.check()
            progress(Progress("count", step, steps, f"step {step}", preview=None))
        return "finished"
    return work


def drain(jobs):
    events = []
    while True:
        try:
            events.append(next(jobs))
        except StopIteration as stop:
            return events, stop.value


def test_progress_arrives_and_the_result_is_returned():
    events, result = drain(run_streaming(counting(5), CancelToken()))
    assert result == "finished"
    assert events and events[-1].step == 5 and events[-1].total == 5
    assert [e.step for e in events] == sorted(e.step for e in events)


def test_cancel_stops_the_work_between_steps():
    token = CancelToken()
    jobs = run_streaming(counting(500, 0.01), token)
    first = next(jobs)
    assert first.step >= 1
    token.cancel()
    with pytest.raises(Cancelled):
        drain(jobs)


def test_closing_the_page_cancels_the_job():
    token = CancelToken()
    jobs = run_streaming(counting(500, 0.01), token)
    next(jobs)
    jobs.close()  # what gradio does when the client goes away
    assert token.cancelled


def test_an_error_reaches_the_page_as_text_and_is_raised():
    def broken(progress, cancel):
        progress(Progress("load", 0, 1, "loading"))
        raise DreamRunnerError("weights are missing: see the README")

    shown = []
    with pytest.raises(DreamRunnerError):
        for update in stream_job(run_streaming(broken, CancelToken()), lambda e, text="": progress_html(e, text)):
            shown.append(update)
    assert "failed: weights are missing: see the README" in shown[-1]


def test_gpu_jobs_run_one_at_a_time():
    inside, overlaps = [], []

    def job(progress, cancel):
        inside.append(1)
        overlaps.append(len(inside))
        time.sleep(0.05)
        inside.pop()
        return len(overlaps)

    threads = [threading.Thread(target=lambda: drain(run_streaming(job, CancelToken(), gpu=True))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert overlaps == [1, 1, 1, 1]
    assert not GPU_LOCK.locked()


def test_cancels_are_per_session():
    cancels = Cancels()
    mine, theirs = cancels.new("me"), cancels.new("them")
    assert cancels.cancel("me")
    assert mine.cancelled and not theirs.cancelled
    assert not cancels.cancel("me")  # already cancelled: nothing to do
