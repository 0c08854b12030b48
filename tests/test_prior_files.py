"""Priors load from safetensors only, in both region-control modes: a pickled prior (which could run code
when unpickled) is refused with a message, and never unpickled."""

import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from render_helpers import three_scene_story

from dreamrunner.attention import LoRAFileError, LoRAWeights, read_lora_file
from dreamrunner.project import Project
from dreamrunner.story import Prior, PriorBinding

ROOT = Path(__file__).resolve().parents[1]


class _TouchOnLoad:
    """Unpickling this creates `marker`: the proof that a loader ran the pickle's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def pickled_prior(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": _TouchOnLoad(marker)}))
    return path


def test_the_pickle_would_run_code(tmp_path):
    """The fixture is what it claims: plain unpickling creates the marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickled_prior(tmp_path / "p.bin", marker).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("name, message", [
    ("evil.bin", r"evil.bin: priors are loaded from .safetensors files only; a pickled checkpoint \(.bin\)"),
    ("evil.pt", r"a pickled checkpoint \(.pt\) can run code when loaded and is refused"),
    ("evil.safetensors", "evil.safetensors: not a readable safetensors file"),
])
def test_a_pickled_prior_is_refused_in_sr3ai_mode(tmp_path, name, message):
    marker = tmp_path / "ran"
    path = pickled_prior(tmp_path / name, marker)
    with pytest.raises(LoRAFileError, match=message):
        LoRAWeights.load(path, kind="subject")  # the SR3AI path's loader
    with pytest.raises(LoRAFileError, match=message):
        read_lora_file(path, tensors=False)  # the stock path's check
    assert not marker.exists()


def test_a_pickled_prior_is_refused_in_stock_mode_by_the_cli(tmp_path):
    marker = tmp_path / "ran"
    story = three_scene_story()
    story.priors = [Prior(id="mia-subject", kind="subject", target="mia", path="media/priors/mia.bin")]
    story.scenes[0].prior_bindings = [PriorBinding(prior_id="mia-subject", scale=1.0)]
    project = Project.create(tmp_path / "story", story)
    pickled_prior(project.media / "priors" / "mia.bin", marker)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "render", str(project.folder), "--backend", "tiny",
                             "--region-control", "stock", "--scene", "1", "--device", "cpu"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "mia.bin: priors are loaded from .safetensors files only" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not Project.load(project.folder).story.scenes[0].renders
