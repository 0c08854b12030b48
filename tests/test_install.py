"""`pip install .` into a fresh virtual environment outside the repository gives working `dreamrunner story`
and editor commands: the dependencies are declared, the demo assets travel as package data.

No download: the new environment sees the already installed dependencies through a path file (the packages
of the environment running the tests), and pip builds the package without build isolation.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "dreamrunner", "ui")


@pytest.mark.slow
def test_installed_package_runs_the_story_from_another_folder(tmp_path):
    source = tmp_path / "source"  # a copy: pip builds in the source tree, which must not be the repository
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # The running environment's packages, after the new environment's own (where dreamrunner is installed).
    # Their .pth files are not processed, so an editable dreamrunner of the repository stays out of sight.
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (purelib / "dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OPENAI_API_KEY="", OPENAI_BASE_URL="")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "--quiet", str(source)], capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(work / "mira.png")
    where = subprocess.run([str(python), "-c", "import dreamrunner, ui; print(dreamrunner.__file__); print(ui.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    def installed(command: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(venv / "bin" / command), *args], capture_output=True, text=True, env=env,
                                cwd=work, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    assert installed("dreamrunner", "--version").stdout.startswith("dreamrunner ")
    assert "--project-root" in installed("dreamrunner-studio", "--help").stdout
    assert "--project-root" in installed("dreamrunner", "app", "--help").stdout
    story = ["--offline", "--json", "story", "--topic", "a witch walks through the forest", "--character",
             "Mira:a young witch=mira.png", "--out", "proj", "--scenes", "5", "--backend", "tiny",
             "--train-steps", "1", "--render-steps", "1", "--clip-model", "none", "--clips-per-motion", "1"]
    installed("dreamrunner", *story, "--until", "plan")
    installed("dreamrunner", "set", "proj", "video.num_frames=9", "video.height=64", "video.width=96")
    events = [json.loads(line) for line in installed("dreamrunner", *story).stdout.splitlines()]
    clips = next(e for e in events if e["event"] == "stage" and e["stage"] == "clips" and e["status"] != "started")
    assert clips["approved"], clips  # the demo catalog came with the package
    assert events[-1]["event"] == "result" and (work / "proj" / "story.mp4").is_file()
    assert json.loads((work / "proj" / "story.json").read_text())["video"]["num_frames"] == 5 * 9
