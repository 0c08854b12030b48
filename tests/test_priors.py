"""Priors: objectives, data preparation, encoding cache, and the LoRA file format (tiny models, CPU)."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dreamrunner.backends.tiny import TINY_VIDEO, build_tiny
from dreamrunner.priors import (
    EncodingCache,
    PriorDataError,
    TrainingClip,
    debiased_temporal_loss,
    diffusion_targets,
    frame_loss,
    load_static_clip,
    load_video_clip,
    prior_blocks,
    subject_caption,
)
from dreamrunner.story import Character, PriorSettings

F, H, W = TINY_VIDEO["num_frames"], TINY_VIDEO["height"], TINY_VIDEO["width"]


def write_image(path, seed=0, size=(80, 120)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


# Objectives -------------------------------------------------------------------------------------------

def test_debiased_temporal_loss_matches_hand_computed_example():
    # Two latent frames of one value each: pred = [2, 4], target = [1, 1], anchor 0, beta 1, alpha = sqrt(2).
    pred = torch.tensor([2.0, 4.0]).reshape(1, 2, 1, 1, 1)
    target = torch.tensor([1.0, 1.0]).reshape(1, 2, 1, 1, 1)
    # full MSE = (1^2 + 3^2) / 2 = 5
    # debiased: sqrt2*pred - pred[0] = [2sqrt2 - 2, 4sqrt2 - 2]; sqrt2*target - target[0] = [sqrt2 - 1, sqrt2 - 1]
    # differences [sqrt2 - 1, 3sqrt2 - 1]; squares 3 - 2sqrt2 and 19 - 6sqrt2; mean 11 - 4sqrt2
    expected = 5 + 11 - 4 * math.sqrt(2)
    assert debiased_temporal_loss(pred, target, anchor=0).item() == pytest.approx(expected, rel=1e-6)
    # Anchor on frame 1: sqrt2*pred - 4 minus (sqrt2*target - 1) -> differences [sqrt2 - 3, 3sqrt2 - 3];
    # squares 11 - 6sqrt2 and 27 - 18sqrt2; mean 19 - 12sqrt2
    expected_1 = 5 + 19 - 12 * math.sqrt(2)
    assert debiased_temporal_loss(pred, target, anchor=1).item() == pytest.approx(expected_1, rel=1e-6)
    # beta = 0 leaves alpha = 1: the debiased term is the plain MSE again.
    assert debiased_temporal_loss(pred, target, anchor=0, beta=0.0).item() == pytest.approx(10.0)


def test_debiased_loss_ignores_appearance_shared_by_all_frames():
    torch.manual_seed(0)
    target = torch.randn(1, 4, 2, 3, 3)
    offset = torch.randn(1, 1, 2, 3, 3)  # the same error on every frame: appearance, not motion
    pred = target + offset
    total = debiased_temporal_loss(pred, target, anchor=2)
    full = torch.mean(offset.expand_as(pred) ** 2)
    # alpha*(t+o) - (t_a+o) - (alpha*t - t_a) = (alpha - 1) o: the shared error shrinks by (sqrt2 - 1)^2
    assert total.item() == pytest.approx(full.item() * (1 + (math.sqrt(2) - 1) ** 2), rel=1e-5)


def test_frame_loss_reads_only_its_frame():
    pred, target = torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2)
    pred[:, 1] = 2.0
    assert frame_loss(pred, target, 0).item() == 0.0
    assert frame_loss(pred, target, 1).item() == pytest.approx(4.0)


def test_diffusion_targets_are_the_schedulers_v_prediction():
    scheduler = build_tiny().scheduler
    latents, noise = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    timesteps = torch.tensor([10, 900])
    noisy, target = diffusion_targets(scheduler, latents, noise, timesteps)
    alpha = scheduler.alphas_cumprod[timesteps].reshape(2, 1, 1, 1, 1).float()
    assert torch.allclose(noisy, alpha.sqrt() * latents + (1 - alpha).sqrt() * noise, atol=1e-5)
    assert torch.allclose(target, alpha.sqrt() * noise - (1 - alpha).sqrt() * latents, atol=1e-5)


# Data -------------------------------------------------------------------------------------------------

def test_static_clip_repeats_the_image_in_range(tmp_path):
    clip = load_static_clip(write_image(tmp_path / "ref.png"), F, H, W)
    assert clip.shape == (F, 3, H, W)
    assert clip.min() >= -1.0 and clip.max() <= 1.0 and clip.min() < -0.9 and clip.max() > 0.9
    assert torch.equal(clip[0], clip[-1])


def write_counting_clip(path, frames: int, fps: int):
    """A clip whose frame i is one flat colour that encodes i (red: i % 16, green: i // 16, steps of 16)."""
    import imageio.v3 as iio

    video = np.zeros((frames, 32, 48, 3), np.uint8)
    for i in range(frames):
        video[i, ..., 0], video[i, ..., 1] = (i % 16) * 16 + 8, (i // 16) * 16 + 8
    iio.imwrite(path, video, plugin="pyav", codec="libx264", fps=fps)
    return path


def frame_numbers(clip: torch.Tensor) -> list[int]:
    rgb = (clip.mean(dim=(2, 3)) + 1) * 127.5  # [F, 3]
    return [int(round((float(r) - 8) / 16)) + 16 * int(round((float(g) - 8) / 16)) for r, g, _ in rgb]


def released_frame_numbers(total: int, native_fps: float, n_sample_frames: int = 48, duration: float = 6) -> list[int]:
    """The released code's rule, from the issue: the first 6 s, 48 frames evenly over them; a clip with fewer
    frames than that gives all of them, padded by repeating the last."""
    if total / native_fps > duration:
        total = min(total, int(duration * native_fps))
    if total < n_sample_frames:
        return list(range(total)) + [total - 1] * (n_sample_frames - total)
    return np.linspace(0, total - 1, n_sample_frames, dtype=int).tolist()


@pytest.mark.parametrize("frames", [20, 48, 160])
def test_motion_clips_are_sampled_at_the_model_frame_rate_as_the_released_code(tmp_path, frames):
    """8 fps clips of 2.5 s, 6 s and 20 s: the first 49 frames at 8 fps, the last one held past a short clip's
    end. The released code's 48 frames are our first 48; its 49th would be 6 s in, which we take too."""
    path = write_counting_clip(tmp_path / "count.mp4", frames, fps=8)
    ours = frame_numbers(load_video_clip(path, 49, 32, 48, fps=8))
    assert ours[:48] == released_frame_numbers(frames, 8)
    assert ours == [min(k, frames - 1) for k in range(49)]  # one source frame per model frame: never stretched


def test_a_faster_source_is_resampled_in_time_not_stretched(tmp_path):
    """A 24 fps clip of 10 s: the frame shown at k / 8 s is source frame 3k. The released code spreads 48 frames
    over frames 0-143 (np.linspace, rounded down): the same times to within 2 source frames (1/12 s)."""
    path = write_counting_clip(tmp_path / "fast.mp4", 240, fps=24)
    ours = frame_numbers(load_video_clip(path, 49, 32, 48, fps=8))
    assert ours == [3 * k for k in range(49)]
    assert max(abs(a - b) for a, b in zip(ours, released_frame_numbers(240, 24))) <= 2
    # A 3 s clip at 24 fps: the released code would spread 48 frames over 3 s (half speed); we hold instead.
    short = frame_numbers(load_video_clip(write_counting_clip(tmp_path / "short.mp4", 72, fps=24), 49, 32, 48, fps=8))
    assert short == [min(3 * k, 71) for k in range(49)]


def test_subject_caption_uses_the_rare_token():
    character = Character(id="w", name="witch", token="[v1]", description="in a purple hat")
    assert subject_caption(character) == "[v1] witch, in a purple hat"


@pytest.mark.parametrize("loader, name", [(load_static_clip, "broken.png"),
                                          (functools.partial(load_video_clip, fps=8), "broken.mp4")])
def test_corrupt_media_gives_an_error_naming_the_file(tmp_path, loader, name):
    path = tmp_path / name
    path.write_bytes(b"this is not media at all" * 10)
    with pytest.raises(PriorDataError, match=name):
        loader(path, F, H, W)
    with pytest.raises(PriorDataError, match="missing.png"):
        loader(tmp_path / "missing.png", F, H, W)


# Encoding cache ---------------------------------------------------------------------------------------

def test_encoding_cache_encodes_each_content_once(tmp_path):
    components = build_tiny()
    image = write_image(tmp_path / "ref.png")
    clip = TrainingClip(image, "[v1] witch", static=True)
    first = EncodingCache(tmp_path / "cache", components)
    mean, std = first.latents(clip, F, H, W, 8)
    text = first.text("[v1] witch")
    assert mean.shape == (3, 4, H // 8, W // 8) and std.shape == mean.shape and (std > 0).all()
    assert text.shape == (components.max_text_tokens, components.transformer.config.text_embed_dim)
    assert first.encoded == {"latents": 1, "text": 1}

    again = EncodingCache(tmp_path / "cache", components)  # a new job over the same folder
    mean2, _ = again.latents(clip, F, H, W, 8)
    assert torch.equal(mean, mean2) and torch.equal(text, again.text("[v1] witch"))
    assert again.encoded == {"latents": 0, "text": 0}

    write_image(image, seed=1)  # new content under the same name is encoded anew
    again.latents(clip, F, H, W, 8)
    assert again.encoded["latents"] == 1

    other_model = EncodingCache(tmp_path / "cache", build_tiny(seed=1))
    assert other_model.fingerprint != first.fingerprint


# Layout and settings ----------------------------------------------------------------------------------

def released_blocks(condition: str, num_layers: int) -> list[int]:
    """The released code's rule, from the issue: it counts blocks from 1 and keeps the odd ones for its
    temporal (motion) LoRAs ("only_odd_blocks"), the even ones for its spatial (subject) LoRAs."""
    kept = []
    for count, index in enumerate(range(num_layers), start=1):
        if (count % 2 == 1) == (condition == "only_odd_blocks"):
            kept.append(index)
    return kept


@pytest.mark.parametrize("num_layers", [4, 30, 42])  # tiny, CogVideoX-2B, CogVideoX-5B
def test_prior_blocks_are_the_released_codes(num_layers):
    assert prior_blocks("motion", num_layers) == released_blocks("only_odd_blocks", num_layers)
    assert prior_blocks("subject", num_layers) == released_blocks("only_even_blocks", num_layers)
    assert prior_blocks("motion", num_layers)[0] == 0 and prior_blocks("subject", num_layers)[0] == 1


def test_step_counts_default_per_kind_and_old_defaults_move_to_them():
    assert PriorSettings().steps_for("motion") == 300 and PriorSettings().steps_for("subject") == 160
    assert PriorSettings(max_steps=40).steps_for("motion") == 40
    saved = {"rank": 32, "learning_rate": 5e-4, "weight_decay": 1e-4, "batch_size": 1, "max_steps": 500,
             "checkpoint_every": 100, "seed": 0}  # a project saved before issue 16, defaults untouched
    assert PriorSettings.model_validate(saved).max_steps is None
    assert PriorSettings.model_validate({**saved, "max_steps": 200}).max_steps == 200


def test_motion_resolution_must_fit_the_patch_grid():
    assert PriorSettings(motion_resolution=(240, 352)).motion_resolution == (240, 352)
    with pytest.raises(ValueError, match="multiples of 16"):
        PriorSettings(motion_resolution=(240, 360))


FINGERPRINT_AND_PRIOR_FILE = """
import json, sys
from pathlib import Path
import torch
from safetensors import safe_open
from dreamrunner.backends.tiny import build_tiny
from dreamrunner.files import file_sha256
from dreamrunner.priors import lora, model_fingerprint

components = build_tiny("2b")
torch.manual_seed(0)  # as training seeds the adapter's initialisation (priors.training)
lora.add_prior_adapter(components.transformer, "p", "subject", 4)
path = lora.save_prior(components.transformer, "p", "subject", Path(sys.argv[1]), "prior", {"kind": "subject"})
with safe_open(str(path), framework="pt") as handle:
    print(json.dumps([model_fingerprint(build_tiny("2b")), json.loads(handle.metadata()["lora_adapter_metadata"]),
                      file_sha256(path)]))  # the file's bytes: what render cache keys hash
"""


def test_the_fingerprint_and_a_prior_file_are_the_same_in_every_process(tmp_path):
    """Sets (diffusers' `_use_default_values`, PEFT's `target_modules`) are listed in hash order, which differs
    between processes: the same model and the same adapter must still give one fingerprint and one file
    content, or a Ray worker (or the next command) would not find what another process trained."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    seen = []
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", FINGERPRINT_AND_PRIOR_FILE, str(tmp_path / seed)],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)})
        assert result.returncode == 0, result.stderr[-2000:]
        seen.append(json.loads(result.stdout.splitlines()[-1]))
    assert seen[0] == seen[1]
