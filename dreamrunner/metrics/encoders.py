"""Encoders the story metrics score with: image, image-text and video-text embedders.

A metric only sees the small interfaces below, so tests inject deterministic encoders and users plug in
models transformers does not ship (ViCLIP) through a hook. The transformers-backed encoders load the
paper's models (CLIP ViT-L/14 at 336 px, DINOv2 ViT-B) or tiny random-weight ones built from configs,
through the same code path. Image preprocessing uses transformers' PIL image processors (no
torchvision), embeddings come back L2-normalized as float32 on the CPU.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..backends import default_device
from .frames import Images, as_image_list

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"
DEFAULT_DINO = "facebook/dinov2-base"
DEFAULT_BATCH_SIZE = 16


@runtime_checkable
class ImageEncoder(Protocol):
    """Maps N images to N L2-normalized embeddings [N, D]."""

    model_id: str
    random_weights: bool

    def encode_images(self, images: Images) -> torch.Tensor: ...


@runtime_checkable
class TextImageEncoder(ImageEncoder, Protocol):
    """An image encoder with a text tower in the same embedding space (CLIP)."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


@runtime_checkable
class VideoTextEncoder(Protocol):
    """Embeds whole clips ([F, H, W, 3] uint8 each) and texts in one space (ViCLIP)."""

    model_id: str
    random_weights: bool

    def encode_videos(self, videos: Sequence[np.ndarray]) -> torch.Tensor: ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def _normalized(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def _pooled(output) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projected embeddings; 4.x a tensor.
    return output if torch.is_tensor(output) else output.pooler_output


class _TransformersImageEncoder:
    """Batches images through a transformers image processor and model."""

    def __init__(self, model, image_processor, model_id: str, device: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, random_weights: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = device or default_device()
        self.model = model.to(self.device).eval()
        self.image_processor = image_processor
        self.model_id = model_id
        self.batch_size = batch_size
        self.random_weights = random_weights

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_images(self, images: Images) -> torch.Tensor:
        images = as_image_list(images)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = self.image_processor(images=images[start:start + self.batch_size], return_tensors="pt")
            pixel_values = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
            chunks.append(_normalized(self._embed(pixel_values)))
        return torch.cat(chunks) if chunks else torch.empty(0, 0)


class CLIPEncoder(_TransformersImageEncoder):
    """CLIP image and text towers (`transformers.CLIPModel`); the paper uses ViT-L/14 at 336 px."""

    def __init__(self, model, image_processor, tokenizer, model_id: str, **kwargs):
        super().__init__(model, image_processor, model_id, **kwargs)
        self.tokenizer = tokenizer
        # CLIP's text tower has a fixed context (77 tokens); longer scene texts are cut, as CLIPScore does.
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_text_tokens, return_tensors="pt").to(self.device)
            features = self.model.get_text_features(input_ids=batch["input_ids"],
                                                    attention_mask=batch["attention_mask"])
            chunks.append(_normalized(_pooled(features)))
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_CLIP, device: str | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE, local_files_only: bool = False) -> CLIPEncoder:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(model_id, local_files_only=local_files_only)
        processor = AutoImageProcessor.from_pretrained(model_id, backend="pil", local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=local_files_only)
        return cls(model, processor, tokenizer, model_id, device=device, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> CLIPEncoder:
        """Random weights from a small config: for plumbing tests and demos, never for results."""
        from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

        from ..backends.tiny import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(max_length=32)
        config = CLIPConfig(
            text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, bos_token_id=None),
            vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2),
            projection_dim=16,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return cls(model, processor, tokenizer, "tiny-random-clip", device=device, batch_size=batch_size,
                   random_weights=True)


class DINOv2Encoder(_TransformersImageEncoder):
    """DINOv2 image embeddings (the layer-normed CLS token, `Dinov2Model.pooler_output`)."""

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_DINO, device: str | None = None,
                        batch_size: int = DEFAULT_BATCH_SIZE, local_files_only: bool = False) -> DINOv2Encoder:
        from transformers import AutoImageProcessor, AutoModel

        # AutoModel also looks for a PEFT adapter; without adapter_kwargs that look-up goes online even when
        # local_files_only is set (transformers 5.23), retrying for about 20 s on a machine without network.
        model = AutoModel.from_pretrained(model_id, local_files_only=local_files_only,
                                          adapter_kwargs={"local_files_only": local_files_only})
        processor = AutoImageProcessor.from_pretrained(model_id, backend="pil", local_files_only=local_files_only)
        return cls(model, processor, model_id, device=device, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, device: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> DINOv2Encoder:
        """Random weights from a small config: for plumbing tests and demos, never for results."""
        from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

        config = Dinov2Config(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Dinov2Model(config)
        processor = BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
        return cls(model, processor, "tiny-random-dinov2", device=device, batch_size=batch_size,
                   random_weights=True)
