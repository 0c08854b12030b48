"""What every `dreamrunner` command shares: --version, exit codes, errors without tracebacks, one progress look
(tqdm bars), --quiet, --json, and no library progress bars leaking into the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dreamrunner import __version__
from dreamrunner.cli import main

ROOT = Path(__file__).resolve().parents[1]


def dreamrunner(*args, cwd=None, env=None):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("HF_HUB_DISABLE", "TRANSFORMERS_"))}
    environment.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "dreamrunner", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=300)


def test_version(capsys):
    result = dreamrunner("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"dreamrunner {__version__}"


def test_usage_errors_exit_2_and_failures_exit_1_without_traceback(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nowhere")]) == 1  # the command ran and failed
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["render", str(tmp_path), "--steps", "0"]) == 2  # the command line is wrong
    assert "--steps must be at least 1" in capsys.readouterr().err
    result = dreamrunner("render", tmp_path, "--no-such-option")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    # An OS error (here: a catalog folder that is a file) is one line naming the path, not a traceback.
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"id": "x", "caption": "a dog running", "source": "x.mp4"}) + "\n")
    (tmp_path / "taken").write_text("")
    result = dreamrunner("catalog", "import", table, "--into", tmp_path / "taken")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and str(tmp_path / "taken") in result.stderr


def test_json_quiet_and_bars_report_the_same_run(tmp_path):
    """retrieve in the three output modes: results the same, progress as bars, JSON lines, or nothing;
    the caption encoder's own "Loading weights" bar from transformers and torchao's import warnings never show."""
    args = ["retrieve", "--motion", "a person jumping", "--text-only", "--top", "2"]
    bars = dreamrunner(*args)
    assert bars.returncode == 0, bars.stderr
    assert "text: 100%" in bars.stderr and "Loading weights" not in bars.stderr
    # torchao (imported by transformers when the [quant] extra is installed) names its kernels that do not load here
    assert "Failed to load" not in bars.stderr and "register_constant" not in bars.stderr
    lines = bars.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("synthetic-jump-")

    quiet = dreamrunner("--quiet", *args)
    assert quiet.returncode == 0 and quiet.stdout == bars.stdout
    assert "%|" not in quiet.stderr and "Loading weights" not in quiet.stderr

    as_json = dreamrunner(*args, "--json")  # global options go before or after the command
    assert as_json.returncode == 0 and "Loading weights" not in as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]  # every line is one JSON object
    progress = [e for e in events if e["event"] == "progress"]
    assert "text" in {e["stage"] for e in progress} and all("step" in e and "total" in e for e in progress)
    results = [e for e in events if e["event"] == "result"]
    assert [r["id"] for r in results] == [line.split("\t")[0] for line in lines]

    failed = dreamrunner("--json", "validate", tmp_path / "nowhere")
    assert failed.returncode == 1
    assert json.loads(failed.stdout.strip().splitlines()[-1])["event"] == "error"


def test_json_events_from_several_threads_stay_one_per_line():
    """Scene plans asked in parallel report from their own threads; every --json line must still parse (found by
    bench/bench_planner.py against a GPU server: two events on one line)."""
    import io
    import threading
    import time

    from dreamrunner.cli.output import Reporter
    from dreamrunner.jobs import Progress

    class SlowStream(io.StringIO):
        def write(self, text):  # a thread switch between any two writes, as a pipe to a busy reader gives
            time.sleep(0.0002)
            return super().write(text)

    out = SlowStream()
    reporter = Reporter("json", out=out, err=io.StringIO())

    def report(scene):
        for step in range(20):
            reporter.progress(Progress(stage="plan", step=step, total=20, message=f"scene {scene}"))
            reporter.warn(f"scene {scene}: repaired {step}")

    threads = [threading.Thread(target=report, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 * 20 * 2
    assert all(json.loads(line)["event"] in ("progress", "warning") for line in lines)


def test_a_bar_shows_the_message_beside_the_loss():
    """A14B priors train one expert after the other in one job: the bar names the expert in training (the
    progress message) beside the loss, as --json does, instead of the loss only."""
    import io

    from dreamrunner.cli.output import Reporter
    from dreamrunner.jobs import Progress

    err = io.StringIO()
    reporter = Reporter("bars", out=io.StringIO(), err=err)
    reporter.progress(Progress(stage="motion prior", step=5, total=8, message="low-noise expert", loss=1.5))
    reporter.progress(Progress(stage="motion prior", step=6, total=8, message="", loss=1.25))
    reporter.close_bar()
    assert "low-noise expert, loss 1.5000" in err.getvalue()
    assert "loss 1.2500" in err.getvalue()
