"""The Wan 2.1 family (T2V 1.3B and 14B) through diffusers: real checkpoints, and `tiny-wan` for tests.

A checkpoint is a diffusers folder (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`,
`scheduler/`), a local path or a hub id (Wan-AI/Wan2.1-T2V-1.3B-Diffusers / -14B-Diffusers) resolved through
the hub cache, exactly as for CogVideoX (`dreamrunner.backends.cogvideox`: the same resolution, offline rule and
`WeightsMissingError`). Geometry: 81 frames at 16 fps (5 s), 480x832 (1.3B) or 720x1280 (14B); the VAE packs the
first frame alone and then 4 frames per latent frame, 8x in space, patch (1, 2, 2): 21 x 30 x 52 tokens at 480p.

Wan 2.2 (A14B: two expert transformers switched at a timestep boundary; TI2V-5B: its own VAE, per-token
timesteps) loads in the pinned diffusers 0.42.1 (`WanPipeline(transformer_2=, boundary_ratio=,
expand_timesteps=)`) but is not a backend here yet (docs/sr3ai.md, "Wan").

`tiny-wan`: random weights (a 4-block WanTransformer3DModel, a small AutoencoderKLWan, a 2-layer UMT5 encoder,
the word-level tokenizer of `tiny` and the checkpoints' UniPC flow-matching scheduler), built in about a second.
Its output is noise and is labelled so.
"""

from __future__ import annotations

import os

import torch

from ..errors import DreamRunnerError
from . import MemoryOptions, ModelComponents
from .cogvideox import CheckpointSpec, WeightsMissingError, checkpoint_source, how_to_get

# Full-size transformer configs (the checkpoints' own), used to build random-weight models for benchmarks.
CHECKPOINTS = {
    "wan2.1-1.3b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", env_var="DREAMRUNNER_WAN21_1_3B", size_gb=29,
        transformer=dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
                         text_dim=4096, freq_dim=256, in_channels=16, out_channels=16),
        vae=dict(),
    ),
    "wan2.1-14b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers", env_var="DREAMRUNNER_WAN21_14B", size_gb=77,
        transformer=dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                         text_dim=4096, freq_dim=256, in_channels=16, out_channels=16),
        vae=dict(),
    ),
}

VIDEO_DEFAULTS = {
    "wan2.1-1.3b": {"num_frames": 81, "fps": 16, "height": 480, "width": 832},
    "wan2.1-14b": {"num_frames": 81, "fps": 16, "height": 720, "width": 1280},
}
# UMT5 tokens per prompt: what WanPipeline encodes to (its `max_sequence_length`); shorter prompts are padded
# with zero embeddings, and the transformer attends to all of them.
TEXT_TOKENS = 512
TINY_TEXT_TOKENS = 16
TINY_VIDEO = {"num_frames": 9, "fps": 16, "height": 64, "width": 96}


def load_wan(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    memory: MemoryOptions | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ModelComponents:
    """Load a Wan 2.1 T2V checkpoint's components with diffusers/transformers `from_pretrained`.

    `dtype` default bfloat16 (the model cards'); the VAE stays float32 as WanPipeline's examples keep it.
    Raises WeightsMissingError (with how to get the weights) when the folder or hub cache lacks them."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from diffusers.schedulers import UniPCMultistepScheduler
    from transformers import AutoTokenizer, UMT5EncoderModel

    if name not in CHECKPOINTS:
        raise DreamRunnerError(f"unknown Wan checkpoint {name!r}; choose one of {sorted(CHECKPOINTS)}")
    dtype = dtype or torch.bfloat16
    source, local_files_only = checkpoint_source(name, CHECKPOINTS[name], source, local_files_only, cache_dir)
    common = {"local_files_only": local_files_only, "cache_dir": cache_dir}
    try:
        transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype, **common)
        vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32, **common)
        text_encoder = UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **common)
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
        scheduler = UniPCMultistepScheduler.from_pretrained(source, subfolder="scheduler", **common)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsMissingError(how_to_get(name, CHECKPOINTS[name], str(source), reason[:300])) from None
    for module in (transformer, vae, text_encoder):
        module.eval()
    components = ModelComponents(
        name=name, transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, is_noise=False, video_defaults=dict(VIDEO_DEFAULTS[name]),
        memory=memory or MemoryOptions(), text_tokens=TEXT_TOKENS,
    )
    return components


def tiny_transformer_config(num_layers: int = 4) -> dict:
    return dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=32, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )


def build_tiny_wan(num_layers: int = 4, seed: int = 0) -> ModelComponents:
    """Random-weight Wan components: transformer, VAE, UMT5 encoder, tokenizer and flow-matching scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from .tiny import build_tiny_tokenizer

    config = tiny_transformer_config(num_layers)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        transformer = WanTransformer3DModel(**config)
        z = config["in_channels"]
        vae = AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=[0.0] * z,
                               latents_std=[1.0] * z)
        tokenizer = build_tiny_tokenizer(TINY_TEXT_TOKENS)
        text_encoder = UMT5EncoderModel(
            UMT5Config(vocab_size=len(tokenizer), d_model=config["text_dim"], d_kv=8, d_ff=32, num_layers=2,
                       num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       decoder_start_token_id=tokenizer.pad_token_id)
        )
    finally:
        torch.random.set_rng_state(generator_state)
    # The checkpoints' own sampler: UniPC on flow-matching sigmas, shift 3 (Wan's 480p setting).
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    for module in (transformer, vae, text_encoder):
        module.eval()
    return ModelComponents(
        name="tiny-wan", transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, is_noise=True, video_defaults=dict(TINY_VIDEO), text_tokens=TINY_TEXT_TOKENS,
    )


def build_random_full_size(name: str, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
    """The transformer of a Wan checkpoint at full size with random weights (benchmarks only: noise).

    The UMT5-XXL encoder and the VAE are not built: benchmarks feed random prompt embeddings and latents."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        return WanTransformer3DModel(**CHECKPOINTS[name].transformer).to(dtype).eval()
