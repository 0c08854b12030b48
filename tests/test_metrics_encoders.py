"""Encoder plumbing on tiny random-weight CLIP / DINOv2 built from configs, through the real loading code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreamrunner.metrics import (
    CLIPEncoder,
    DINOv2Encoder,
    EncoderSpec,
    LaionAestheticScorer,
    MetricsError,
    TextImageEncoder,
    character_consistency,
    load_encoders,
    tiny_encoders,
)
from dreamrunner.metrics.loading import load_hook


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoders(seed=0, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    """The tiny models written as Hugging Face model folders, plus an aesthetic head file."""
    root = tmp_path_factory.mktemp("models")
    clip, dino = root / "clip", root / "dino"
    for part in (tiny.clip.model, tiny.clip.image_processor, tiny.clip.tokenizer):
        part.save_pretrained(clip)
    for part in (tiny.dino.model, tiny.dino.image_processor):
        part.save_pretrained(dino)
    head = root / "head.pth"
    torch.save({"layers.0.weight": tiny.aesthetic.head.weight.detach().clone(),
                "layers.0.bias": tiny.aesthetic.head.bias.detach().clone()}, head)
    return {"clip": clip, "dino": dino, "head": head}


def frames(count: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 40, 56, 3), dtype=np.uint8)


def test_tiny_encoders_embed_to_unit_vectors_of_the_model_width(tiny):
    images = frames(7)
    clip = tiny.clip.encode_images(images)
    dino = tiny.dino.encode_images(images)
    texts = tiny.clip.encode_texts(["a witch walking", "a red dog"])
    assert clip.shape == (7, 16) and texts.shape == (2, 16) and dino.shape == (7, 32)
    for embeddings in (clip, dino, texts):
        assert embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
        assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(embeddings)), atol=1e-5)
    assert isinstance(tiny.clip, TextImageEncoder)
    assert tiny.random_weights == ["clip", "dino", "aesthetic"]


def test_batching_does_not_change_embeddings(tiny):
    images = frames(7)
    for encoder_type in (CLIPEncoder, DINOv2Encoder):
        one_by_one = encoder_type.tiny(device="cpu", batch_size=1).encode_images(images)
        all_at_once = encoder_type.tiny(device="cpu", batch_size=16).encode_images(images)
        assert torch.allclose(one_by_one, all_at_once, atol=1e-5)
    texts = ["a cat", "a girl dancing in the park", "the dragon", "a bird flying over the city at night"]
    small = CLIPEncoder.tiny(device="cpu", batch_size=1).encode_texts(texts)
    assert torch.allclose(small, tiny.clip.encode_texts(texts), atol=1e-5)


def test_pil_images_and_arrays_embed_alike_and_frames_differ(tiny):
    images = frames(3)
    as_pil = [Image.fromarray(f) for f in images]
    assert torch.allclose(tiny.dino.encode_images(as_pil), tiny.dino.encode_images(images))
    embeddings = tiny.dino.encode_images(images)
    assert not torch.allclose(embeddings[0], embeddings[1])


def test_long_texts_are_cut_to_the_text_context(tiny):
    long = " ".join(["the witch walking in the forest"] * 30)
    assert tiny.clip.encode_texts([long]).shape == (1, 16)


def test_identical_frames_give_maximal_consistency_with_real_encoders(tiny):
    reference = frames(1, seed=3)[0]
    same = np.stack([reference] * 4)
    for encoder in (tiny.clip, tiny.dino):
        # Never above the maximum; the same frame embedded in batches of different size may differ in its last bits.
        assert 100.0 - 1e-9 <= character_consistency(same, [reference], encoder) <= 100.0
        assert character_consistency(frames(4, seed=4), [reference], encoder) < 100.0 - 1e-3


def test_models_load_through_from_pretrained_and_match_the_built_ones(saved, tiny):
    spec = EncoderSpec(clip_model=str(saved["clip"]), dino_model=str(saved["dino"]),
                       aesthetic_clip_model=str(saved["clip"]), aesthetic_head=str(saved["head"]), device="cpu",
                       batch_size=3, local_files_only=True)
    loaded = load_encoders(spec)
    images = frames(5)
    assert torch.allclose(loaded.clip.encode_images(images), tiny.clip.encode_images(images), atol=1e-5)
    assert torch.allclose(loaded.clip.encode_texts(["a cat"]), tiny.clip.encode_texts(["a cat"]), atol=1e-5)
    assert torch.allclose(loaded.dino.encode_images(images), tiny.dino.encode_images(images), atol=1e-5)
    assert np.allclose(loaded.aesthetic.score_images(images), tiny.aesthetic.score_images(images), atol=1e-5)
    assert set(loaded.unavailable) == {"viclip", "imaging_quality", "interpolator"}
    assert loaded.describe()["clip"] == {"model": str(saved["clip"]), "random_weights": False}


def test_missing_models_are_reported_by_name_not_raised(tmp_path):
    absent = tmp_path / "no-such-model"
    encoders = load_encoders(EncoderSpec(clip_model=str(absent), dino_model="facebook/dinov2-base", device="cpu",
                                         local_files_only=True))
    assert encoders.clip is None and encoders.dino is None and encoders.aesthetic is None
    assert str(absent) in encoders.unavailable["clip"]
    assert "facebook/dinov2-base" in encoders.unavailable["dino"]
    assert "aesthetic" in encoders.unavailable and "ViCLIP" in encoders.unavailable["viclip"]
    assert "MUSIQ" in encoders.unavailable["imaging_quality"] and "AMT" in encoders.unavailable["interpolator"]


def test_aesthetic_head_files_are_checked(saved, tmp_path):
    wrong_width = tmp_path / "wide.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, wrong_width)
    with pytest.raises(MetricsError, match="768-d"):
        LaionAestheticScorer.from_files(wrong_width, str(saved["clip"]), local_files_only=True)
    not_a_head = tmp_path / "mlp.pth"
    torch.save({"a.weight": torch.zeros(4, 16), "b.weight": torch.zeros(1, 4)}, not_a_head)
    with pytest.raises(MetricsError, match="not a single linear"):
        LaionAestheticScorer.from_files(not_a_head, str(saved["clip"]), local_files_only=True)
    with pytest.raises(MetricsError, match="does not exist"):
        LaionAestheticScorer.from_files(tmp_path / "absent.pth", str(saved["clip"]))
    from safetensors.torch import save_file

    as_safetensors = tmp_path / "head.safetensors"
    state = torch.load(saved["head"], weights_only=True)
    save_file({k.split(".", 2)[-1]: v for k, v in state.items()}, as_safetensors)
    scorer = LaionAestheticScorer.from_files(as_safetensors, str(saved["clip"]), local_files_only=True)
    assert scorer.score_images(frames(2)).shape == (2,)


class NotAnEncoder:
    pass


def make_not_an_encoder(device):
    return NotAnEncoder()


def test_hooks_are_named_module_function_and_checked():
    assert load_hook("json:dumps", "viclip") is __import__("json").dumps
    for spec, message in (("json", "module:function"), ("no_such_module_x:f", "cannot import"),
                          ("json:nothing_here", "no function")):
        with pytest.raises(MetricsError, match=message):
            load_hook(spec, "viclip")
    with pytest.raises(MetricsError, match="VideoTextEncoder"):
        load_encoders(EncoderSpec(clip_model="/nonexistent/clip", dino_model="/nonexistent/dino", device="cpu",
                                  local_files_only=True, viclip=f"{__name__}:make_not_an_encoder"))
