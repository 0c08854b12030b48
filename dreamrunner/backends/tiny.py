"""The `tiny` backend: CogVideoX-shaped models with random weights, built from small configs in seconds.

It exists for tests and for the offline demo. Its output is noise and is labelled so everywhere
(`ModelComponents.is_noise`). Three flavours mirror the real checkpoints' text/position handling:
`2b` (sinusoidal positions), `5b` (rotary positions) and `1.5` (CogVideoX 1.5: rotary positions sliced from
a larger base, two latent frames per token frame, a linear patch projection without bias).
"""

from __future__ import annotations

import torch

from . import ModelComponents

# Words the tiny tokenizer knows; anything else maps to <unk>, which is fine for random weights.
_VOCABULARY_TEXT = """
a an the and of in on with is are at to from over under behind near its his her their
background sky forest street room field river beach city park garden castle kitchen stage night day
witch wizard cat dog girl boy man woman knight dragon robot bird fox owl horse bear rabbit car kite
walking running jumping dancing flying swimming sitting standing waving reading cooking climbing
driving fishing singing falling turning smiling talking playing sleeping eating riding rolling
red blue green black white yellow brown purple pink golden big small old young happy
[v1] [v2] [v3] [v4] [v5] [v6] [v7] [v8]
"""

TINY_VIDEO = {"num_frames": 9, "fps": 8, "height": 64, "width": 96}
# CogVideoX 1.5 makes 16N+1 frames at 16 fps: 17 frames -> 5 latent frames, padded to 6 -> 3 token frames.
TINY_VIDEO_15 = {"num_frames": 17, "fps": 16, "height": 64, "width": 96}
VARIANTS = ("2b", "5b", "1.5")


def build_tiny_tokenizer(max_length: int):
    """A word-level tokenizer trained on a few lines, wrapped as a transformers fast tokenizer.

    It pads and truncates like CogVideoX's T5 tokenizer (`padding="max_length"`, EOS appended).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"], min_frequency=1)
    tokenizer.train_from_iterator(_VOCABULARY_TEXT.split("\n"), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=max_length,
    )


def tiny_transformer_config(variant: str = "2b", num_layers: int = 4) -> dict:
    rotary = variant in ("5b", "1.5")
    config = dict(
        num_attention_heads=2,
        attention_head_dim=16,  # rotary splits it 4/6/6 over (t, h, w): needs 16
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=num_layers,
        sample_width=TINY_VIDEO["width"] // 8,
        sample_height=TINY_VIDEO["height"] // 8,
        sample_frames=TINY_VIDEO["num_frames"],
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=False,
    )
    if variant == "1.5":
        # As CogVideoX1.5-5B's config: the rotary table is sliced from a base larger than any frame used
        # (there 300 x 300 latents, here 32 x 32), so sample_height / width are that base, not a frame size.
        config.update(patch_size_t=2, patch_bias=False, sample_frames=TINY_VIDEO_15["num_frames"],
                      sample_height=32, sample_width=32)
    return config


def build_tiny(variant: str = "2b", num_layers: int = 4, seed: int = 0) -> ModelComponents:
    """Random-weight CogVideoX components: transformer, VAE, T5 encoder, tokenizer and scheduler."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    if variant not in VARIANTS:
        raise ValueError(f"tiny variant must be one of {VARIANTS}, got {variant!r}")
    config = tiny_transformer_config(variant, num_layers)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        transformer = CogVideoXTransformer3DModel(**config)
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
            sample_height=TINY_VIDEO["height"],
            sample_width=TINY_VIDEO["width"],
        )
        tokenizer = build_tiny_tokenizer(config["max_text_seq_length"])
        text_encoder = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer), d_model=config["text_embed_dim"], d_kv=8, d_ff=32,
                     num_layers=2, num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                     decoder_start_token_id=tokenizer.pad_token_id)
        )
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True,
        clip_sample=False, set_alpha_to_one=True, snr_shift_scale=3.0,
    )
    for module in (transformer, vae, text_encoder):
        module.eval()
    return ModelComponents(
        name=f"tiny-{variant}", transformer=transformer, vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, scheduler=scheduler, is_noise=True,
        video_defaults=dict(TINY_VIDEO_15 if variant == "1.5" else TINY_VIDEO),
    )
