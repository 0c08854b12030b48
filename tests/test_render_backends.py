"""Backends: real CogVideoX loading goes through diffusers from_pretrained; missing weights say how to get them."""

import os
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline

from dreamrunner.backends import MemoryOptions, load_backend
from dreamrunner.backends.cogvideox import WeightsMissingError
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.cli import main
from dreamrunner.errors import DreamRunnerError
from dreamrunner.rendering.pipeline import DreamRunnerPipeline


def test_missing_local_folder_says_how_to_get_the_weights(tmp_path):
    with pytest.raises(WeightsMissingError) as caught:
        load_backend("cogvideox-2b", tmp_path / "CogVideoX-2b")
    message = str(caught.value)
    assert "hf download THUDM/CogVideoX-2b" in message and "DREAMRUNNER_COGVIDEOX_2B" in message
    assert "no such folder" in message and "'tiny' backend" in message


def test_hub_id_without_a_cached_copy_is_a_clear_message(tmp_path):
    with pytest.raises(WeightsMissingError, match="hf download THUDM/CogVideoX-5b"):
        load_backend("cogvideox-5b", local_files_only=True, cache_dir=tmp_path)


def test_incomplete_folder_names_what_is_missing(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    with pytest.raises(WeightsMissingError, match="lacks transformer, text_encoder, tokenizer, scheduler"):
        load_backend("cogvideox-2b", tmp_path)


def test_truncated_weights_are_a_clear_message(tmp_path):
    CogVideoXPipeline(**build_tiny("2b").pipeline_kwargs()).save_pretrained(tmp_path)
    for weights in (tmp_path / "transformer").glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(WeightsMissingError, match="cogvideox-2b weights are not available"):
        load_backend("cogvideox-2b", tmp_path)


def test_cli_prints_the_message_without_a_traceback(tmp_path, capsys):
    from render_helpers import three_scene_story

    from dreamrunner.project import Project
    from dreamrunner.story import VideoSettings

    Project.create(tmp_path / "story", three_scene_story(VideoSettings()))  # at the size CogVideoX-2B makes
    code = main(["render", str(tmp_path / "story"), "--backend", "cogvideox-2b", "--model-path", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: cogvideox-2b weights are not available") and "hf download THUDM/CogVideoX-2b" in err
    assert "huggingface-cli" not in err  # the hub client no longer ships it


def test_a_diffusers_folder_loads_through_the_real_loader(tmp_path):
    """The CogVideoX loader reads the layout `save_pretrained` writes (here tiny random weights)."""
    CogVideoXPipeline(**build_tiny("5b").pipeline_kwargs()).save_pretrained(tmp_path)
    memory = MemoryOptions(device="cpu", preset="vae-tiling")
    components = load_backend("cogvideox-5b", tmp_path, dtype=torch.float32, memory=memory)
    DreamRunnerPipeline.from_components(components)
    assert components.name == "cogvideox-5b" and components.video_defaults["num_frames"] == 49
    assert components.transformer.config.use_rotary_positional_embeddings
    assert components.transformer.dtype == torch.float32
    assert components.vae.use_slicing and components.vae.use_tiling
    assert components.tokenizer("a cat").input_ids[-1] == components.tokenizer.eos_token_id


def test_memory_options(tmp_path):
    components = load_backend("tiny", memory=MemoryOptions(device="cpu", preset="model"))
    with pytest.raises(DreamRunnerError, match="needs a GPU"):
        DreamRunnerPipeline.from_components(components)
    with pytest.raises(DreamRunnerError, match="unknown backend 'cogvideox-9b'"):
        load_backend("cogvideox-9b")


def test_offline_without_cached_weights_fails_at_once_with_the_download_command(tmp_path):
    """`--offline` (HF_HUB_OFFLINE): no retries against the hub; the message says how to get the weights."""
    import subprocess
    import sys
    import time

    from render_helpers import three_scene_story

    from dreamrunner.project import Project
    from dreamrunner.story import VideoSettings

    Project.create(tmp_path / "story", three_scene_story(VideoSettings()))  # at the size CogVideoX-2B makes
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "DREAMRUNNER_COGVIDEOX"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "empty-cache"), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "--offline", "render", str(tmp_path / "story"),
                             "--backend", "cogvideox-2b"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not in the Hugging Face cache, and offline" in result.stderr and "hf download THUDM/CogVideoX-2b" in result.stderr
    print(f"offline failure after {time.monotonic() - started:.1f} s")  # seconds, not the hub's retries
