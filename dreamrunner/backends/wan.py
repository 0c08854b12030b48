"""The Wan family through diffusers: Wan 2.1 (T2V 1.3B, 14B) and Wan 2.2 (T2V A14B, TI2V 5B) checkpoints, and
random-weight tiny models of each kind for tests.

A checkpoint is a diffusers folder (`model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`,
`scheduler/`; A14B also `transformer_2/`), a local path or a hub id (Wan-AI/Wan2.1-T2V-1.3B-Diffusers /
-14B-Diffusers, Wan-AI/Wan2.2-T2V-A14B-Diffusers, Wan-AI/Wan2.2-TI2V-5B-Diffusers) resolved through the hub
cache, exactly as for CogVideoX (`dreamrunner.backends.cogvideox`: the same resolution, offline rule and
`WeightsMissingError`).

- Wan 2.1: 81 frames at 16 fps (5 s), 480x832 (1.3B) or 720x1280 (14B); the VAE packs the first frame alone
  and then 4 frames per latent frame, 8x in space, patch (1, 2, 2): 21 x 30 x 52 tokens at 480p.
- Wan 2.2 T2V A14B: two 14B expert transformers of Wan 2.1 14B's shape, `transformer` for high noise and
  `transformer_2` for low noise; WanPipeline switches at timestep boundary_ratio * 1000 (0.875, from the
  folder's model_index.json). Wan 2.1's VAE; 81 frames at 16 fps, 480p or 720p (Wan2.2's t2v-A14B config and
  generate.py sizes). One step runs one expert, so a step costs what a Wan 2.1 14B step costs.
- Wan 2.2 TI2V 5B: one transformer (24 heads x 128, 30 blocks) on its own VAE (48 latent channels, 16x in space,
  4x in time), WanPipeline's `expand_timesteps` (one timestep per video token); 121 frames at 24 fps, 704x1280
  (Wan2.2's ti2v-5B config): 31 x 22 x 40 tokens.

Tiny models (random weights; their output is noise and is labelled so), each built in about a second:
`tiny-wan` (a 4-block WanTransformer3DModel, a small AutoencoderKLWan, a 2-layer UMT5 encoder, the word-level
tokenizer of `tiny` and the checkpoints' UniPC flow-matching scheduler), `tiny-wan2.2` (two such experts and a
boundary) and `tiny-wan2.2-5b` (one transformer on a 48-channel, 16x VAE, per-token timesteps).
"""

from __future__ import annotations

import os

import torch

from ..errors import DreamRunnerError
from . import MemoryOptions, ModelComponents
from .cogvideox import CheckpointSpec, WeightsMissingError, checkpoint_source, how_to_get

# Wan 2.1 14B's transformer; each Wan 2.2 A14B expert has its shape (Wan2.2's t2v_A14B config: dim 5120, 40 heads,
# 40 layers).
WAN_14B_TRANSFORMER = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                           text_dim=4096, freq_dim=256, in_channels=16, out_channels=16)

# Full-size transformer configs (the checkpoints' own), used to build random-weight models for benchmarks.
CHECKPOINTS = {
    "wan2.1-1.3b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", env_var="DREAMRUNNER_WAN21_1_3B", size_gb=29,
        transformer=dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
                         text_dim=4096, freq_dim=256, in_channels=16, out_channels=16),
        vae=dict(), tiny="tiny-wan",
    ),
    "wan2.1-14b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers", env_var="DREAMRUNNER_WAN21_14B", size_gb=77,
        transformer=WAN_14B_TRANSFORMER, vae=dict(), tiny="tiny-wan",
    ),
    # Download sizes of the 2.2 folders are estimates from parameter counts, stored as the 2.1 14B folder stores them.
    "wan2.2-a14b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers", env_var="DREAMRUNNER_WAN22_A14B", size_gb=126,
        transformer=WAN_14B_TRANSFORMER, vae=dict(), tiny="tiny-wan2.2",
    ),
    # Wan2.2's ti2v_5B config: dim 3072 (24 heads x 128), ffn 14336, 30 layers, 48 latent channels, VAE stride
    # (4, 16, 16); the diffusers VAE patchifies 2x2 before three 2x downsamplings.
    "wan2.2-ti2v-5b": CheckpointSpec(
        hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", env_var="DREAMRUNNER_WAN22_TI2V_5B", size_gb=34,
        transformer=dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30,
                         text_dim=4096, freq_dim=256, in_channels=48, out_channels=48),
        vae=dict(z_dim=48, is_residual=True, patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16),
        tiny="tiny-wan2.2-5b",
    ),
}
# Expert transformers per checkpoint (A14B: high noise, low noise).
EXPERTS = {"wan2.2-a14b": 2, "tiny-wan2.2": 2}

TINY_VIDEO = {"num_frames": 9, "fps": 16, "height": 64, "width": 96}
VIDEO_DEFAULTS = {
    "wan2.1-1.3b": {"num_frames": 81, "fps": 16, "height": 480, "width": 832},
    "wan2.1-14b": {"num_frames": 81, "fps": 16, "height": 720, "width": 1280},
    "wan2.2-a14b": {"num_frames": 81, "fps": 16, "height": 720, "width": 1280},
    "wan2.2-ti2v-5b": {"num_frames": 121, "fps": 24, "height": 704, "width": 1280},
    "tiny-wan": TINY_VIDEO,
    "tiny-wan2.2": TINY_VIDEO,
    # 64x96 is 2 x 3 tokens on the 16x VAE; 13 frames at 24 fps: TI2V's rate, 4 latent frames.
    "tiny-wan2.2-5b": {"num_frames": 13, "fps": 24, "height": 64, "width": 96},
}
# UMT5 tokens per prompt: what WanPipeline encodes to (its `max_sequence_length`); shorter prompts are padded
# with zero embeddings, and the transformer attends to all of them.
TEXT_TOKENS = 512
TINY_TEXT_TOKENS = 16


def load_wan(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | None = None,
    memory: MemoryOptions | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ModelComponents:
    """Load a Wan 2.1 / 2.2 checkpoint's components with diffusers/transformers `from_pretrained`: A14B's two
    experts (`transformer`, `transformer_2`) and the folder's WanPipeline options (`boundary_ratio`,
    `expand_timesteps`, from its model_index.json) too.

    `dtype` default bfloat16 (the model cards'); the VAE stays float32 as WanPipeline's examples keep it.
    Raises WeightsMissingError (with how to get the weights) when the folder or hub cache lacks them."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from diffusers.schedulers import UniPCMultistepScheduler
    from transformers import AutoTokenizer, UMT5EncoderModel

    if name not in CHECKPOINTS:
        raise DreamRunnerError(f"unknown Wan checkpoint {name!r}; choose one of {sorted(CHECKPOINTS)}")
    dtype = dtype or torch.bfloat16
    source, local_files_only = checkpoint_source(name, CHECKPOINTS[name], source, local_files_only, cache_dir)
    common = {"local_files_only": local_files_only, "cache_dir": cache_dir}
    try:
        index = WanPipeline.load_config(source, **common)
        transformers = [WanTransformer3DModel.from_pretrained(source, subfolder=part, torch_dtype=dtype, **common)
                        for part in ("transformer", "transformer_2")[:EXPERTS.get(name, 1)]]
        vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32, **common)
        text_encoder = UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **common)
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **common)
        scheduler = UniPCMultistepScheduler.from_pretrained(source, subfolder="scheduler", **common)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsMissingError(how_to_get(name, CHECKPOINTS[name], str(source), reason[:300])) from None
    for module in (*transformers, vae, text_encoder):
        module.eval()
    return ModelComponents(
        name=name, transformer=transformers[0], vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, is_noise=False, video_defaults=dict(VIDEO_DEFAULTS[name]),
        memory=memory or MemoryOptions(), text_tokens=TEXT_TOKENS, **_experts(name, transformers, index),
    )


def _experts(name: str, transformers: list, index: dict) -> dict:
    """ModelComponents' `transformer_2` and `pipeline_options` from the loaded experts and the WanPipeline
    config (model_index.json, or the tiny model's own). Raises DreamRunnerError for a two-expert model whose
    config has no boundary (not a Wan 2.2 A14B folder)."""
    options = {key: index[key] for key in ("boundary_ratio", "expand_timesteps") if index.get(key)}
    if len(transformers) == 2 and "boundary_ratio" not in options:
        raise DreamRunnerError(f"{name} has two expert transformers, but its model_index.json sets no "
                               f"boundary_ratio: is this a Wan 2.2 A14B folder?")
    return {"transformer_2": transformers[1] if len(transformers) == 2 else None, "pipeline_options": options}


def tiny_transformer_config(num_layers: int = 4, channels: int = 4) -> dict:
    return dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=channels,
        out_channels=channels, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    )


# The tiny models' WanPipeline options: A14B's boundary (timesteps >= 875 of 1000 on the high-noise expert) and
# TI2V's per-token timesteps.
TINY_OPTIONS = {"tiny-wan": {}, "tiny-wan2.2": {"boundary_ratio": 0.875}, "tiny-wan2.2-5b": {"expand_timesteps": True}}
# TI2V's VAE: 48 latent channels; 2x2 patchify, then 2x three times: 16x in space, 4x in time.
TINY_VAE = {
    "tiny-wan": dict(z_dim=4),
    "tiny-wan2.2": dict(z_dim=4),
    "tiny-wan2.2-5b": dict(z_dim=48, is_residual=True, patch_size=2, in_channels=12, out_channels=12,
                           scale_factor_spatial=16),
}


def build_tiny_wan(name: str = "tiny-wan", num_layers: int = 4, seed: int = 0) -> ModelComponents:
    """Random-weight Wan components of the kind `name` says ("tiny-wan": Wan 2.1; "tiny-wan2.2": two experts and
    A14B's boundary; "tiny-wan2.2-5b": TI2V's 48-channel 16x VAE and per-token timesteps): transformer(s), VAE,
    UMT5 encoder, tokenizer and flow-matching scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from .tiny import build_tiny_tokenizer

    if name not in TINY_OPTIONS:
        raise DreamRunnerError(f"unknown tiny Wan model {name!r}; choose one of {sorted(TINY_OPTIONS)}")
    vae_config = TINY_VAE[name]
    z = vae_config["z_dim"]
    config = tiny_transformer_config(num_layers, channels=z)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        transformers = [WanTransformer3DModel(**config) for _ in range(EXPERTS.get(name, 1))]
        vae = AutoencoderKLWan(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=[0.0] * z,
                               latents_std=[1.0] * z, **vae_config)
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
    for module in (*transformers, vae, text_encoder):
        module.eval()
    return ModelComponents(
        name=name, transformer=transformers[0], vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, is_noise=True, video_defaults=dict(VIDEO_DEFAULTS[name]), text_tokens=TINY_TEXT_TOKENS,
        **_experts(name, transformers, TINY_OPTIONS[name]),
    )


def build_random_full_size(name: str, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
    """The transformer of a Wan checkpoint at full size with random weights (benchmarks only: noise). For A14B,
    one expert: a denoising step runs one of the two, both of this shape.

    The UMT5-XXL encoder and the VAE are not built: benchmarks feed random prompt embeddings and latents."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        return WanTransformer3DModel(**CHECKPOINTS[name].transformer).to(dtype).eval()
