"""Render benchmark: one scene through `DreamRunnerPipeline`, stock CogVideoX vs SR3AI with two gated LoRAs.

GPU (default): CogVideoX-2B at full size (30 blocks, 30 heads x 64, 49 frames at 480x720, T5-XXL text
encoder) with random bf16 weights, built from the checkpoint's config: no weights are downloaded. The
output is noise; only timings and memory mean anything. Random bf16 VAEs can decode to NaN; that does not
change the time.

    python bench/bench_render.py --steps 10 --out results.json      # GPU, projects 50-step scene times
    python bench/bench_render.py --tiny                             # CPU, tiny random models, same code path

Each run is one real `DreamRunnerPipeline.__call__` (prompt encoding, live-preview fit, denoising with
a preview every 5 steps, VAE decode). A progress callback synchronises the GPU and stamps every step:
step time = mean of steps 2..N (step 1 carries prompt encoding and setup), VAE decode = from the
last step to the frames. "50-step scene" = setup + 50 x step + decode, projected from N steps (said so
in the output when N < 50). Peak memory is `torch.cuda.max_memory_allocated` over the whole call.
On the GPU, untimed 1-step runs of both paths and one tiled decode come first, so every timed run is warm.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamrunner.attention import bound_prompts  # noqa: E402
from dreamrunner.attention.lora import prior_blocks  # noqa: E402
from dreamrunner.backends import MemoryOptions, ModelComponents  # noqa: E402
from dreamrunner.regions import build_region_plan  # noqa: E402
from dreamrunner.rendering.pipeline import (  # noqa: E402
    DreamRunnerPipeline,
    LoraBinding,
    SceneInput,
    SR3AIRegionControl,
    StockRegionControl,
)
from dreamrunner.story import Entity, KeyFrame, Scene, VideoSettings  # noqa: E402

LORA_MODULES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")


def bench_scene() -> Scene:
    """Two entities: a character walking across (subject + motion prior) and a still one."""
    keyframes = []
    for k in range(6):
        x = 0.05 + 0.1 * k
        keyframes.append(KeyFrame(index=k, entities=[
            Entity(name="cat", character_id="mia", motion="walking", description="[v1] black cat walking",
                   box=(x, 0.35, x + 0.4, 0.9)),
            Entity(name="owl", description="a brown owl sitting on a branch", box=(0.65, 0.05, 0.95, 0.35)),
        ]))
    return Scene(id="bench", narration="A black cat walks under an owl.", motions=["walking"],
                 background="a green forest at day", keyframes=keyframes)


def build_full(name: str, device: str) -> ModelComponents:
    """A CogVideoX checkpoint's components at full size with random bf16 weights (T5-XXL config, word-level
    tokenizer): noise, for timing and memory only."""
    from diffusers import CogVideoXDDIMScheduler
    from transformers import T5Config, T5EncoderModel

    from dreamrunner.backends.cogvideox import VIDEO_DEFAULTS, build_random_full_size
    from dreamrunner.backends.tiny import build_tiny_tokenizer

    transformer, vae = build_random_full_size(name, torch.bfloat16, device)
    config = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            text_encoder = T5EncoderModel(config).eval()
    finally:
        torch.set_default_dtype(default)
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True,
        clip_sample=False, set_alpha_to_one=True, snr_shift_scale=3.0,
    )
    return ModelComponents(name=f"{name}-random", transformer=transformer, vae=vae, text_encoder=text_encoder,
                           tokenizer=build_tiny_tokenizer(226), scheduler=scheduler, is_noise=True,
                           video_defaults=dict(VIDEO_DEFAULTS))


def write_lora(path: Path, transformer, kind: str, rank: int, seed: int) -> Path:
    """A random prior in the diffusers CogVideoX LoRA layout: subject on even blocks, motion on odd ones."""
    from diffusers import CogVideoXPipeline

    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for block in prior_blocks(kind, len(transformer.transformer_blocks)):
        for module in LORA_MODULES:
            linear = transformer.get_submodule(f"transformer_blocks.{block}.{module}")
            prefix = f"transformer_blocks.{block}.{module}"
            layers[f"{prefix}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) * 0.01
            layers[f"{prefix}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * 0.01
    CogVideoXPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=layers, weight_name=path.name)
    return path


def run_once(pipeline: DreamRunnerPipeline, scene: SceneInput, video: VideoSettings, steps: int, cuda: bool) -> dict:
    stamps: list[float] = []

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def on_progress(update):
        sync()
        stamps.append(time.perf_counter())

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    output = pipeline(scene, seed=0, num_inference_steps=steps, guidance_scale=6.0, num_frames=video.num_frames,
                      height=video.height, width=video.width, progress=on_progress, preview_every=5)
    sync()
    end = time.perf_counter()
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    step = sum(step_times) / len(step_times) if step_times else stamps[0] - start
    setup = stamps[0] - start - step  # prompt encoding, preview fit, latents, warm-up beyond one step
    decode = end - stamps[-1]
    return {
        "steps_run": steps,
        "first_step_with_setup_s": round(stamps[0] - start, 3),
        "step_s": round(step, 4),
        "vae_decode_s": round(decode, 3),
        "total_s": round(end - start, 3),
        "projected_50_step_scene_s": round(setup + 50 * step + decode, 2),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "decoded_nonfinite": output.nonfinite,
        "frames_shape": list(output.frames.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models on CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per run (default 10 GPU, 3 tiny)")
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank of the two priors")
    parser.add_argument("--offload-runs", choices=("both", "sr3ai", "none"), default="both",
                        help="which paths to run again with model CPU offload + VAE tiling (GPU only)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    steps = args.steps or (10 if cuda else 3)
    built = time.perf_counter()
    if args.tiny or not cuda:
        from dreamrunner.backends.tiny import TINY_VIDEO, build_tiny

        components = build_tiny("2b")
        video = VideoSettings(**TINY_VIDEO)
    else:
        components = build_full("cogvideox-2b", device)
        video = VideoSettings()  # 49 frames, 480x720, 8 fps
    built = time.perf_counter() - built

    scene = bench_scene()
    plan = build_region_plan(scene, video.token_grid)
    folder = Path(tempfile.mkdtemp(prefix="bench_render_"))
    loras = (
        LoraBinding("mia", write_lora(folder / "mia.safetensors", components.transformer, "subject", args.rank, 1),
                    "subject", 1.0, bound_prompts(plan, "subject", "mia")),
        LoraBinding("walking", write_lora(folder / "walking.safetensors", components.transformer, "motion", args.rank, 2),
                    "motion", 1.0, bound_prompts(plan, "motion", "walking")),
    )
    stock_input = SceneInput(prompt=scene.narration + " " + scene.background, region_plan=plan)
    sr3ai_input = SceneInput(prompt=stock_input.prompt, region_plan=plan, loras=loras)

    runs = [("stock CogVideoX, 1 prompt, no LoRA", StockRegionControl(), stock_input, MemoryOptions(device, "none")),
            ("SR3AI + 2 gated LoRAs", SR3AIRegionControl(), sr3ai_input, MemoryOptions(device, "none"))]
    low = MemoryOptions(device=device, preset="model")  # model CPU offload + VAE tiling and slicing
    if cuda and args.offload_runs == "both":
        runs.append(("stock, model CPU offload + VAE tiling", StockRegionControl(), stock_input, low))
    if cuda and args.offload_runs != "none":
        runs.append(("SR3AI + 2 gated LoRAs, model CPU offload + VAE tiling", SR3AIRegionControl(), sr3ai_input, low))
    # Kernel selection for these shapes (both attention paths, untiled and tiled VAE decode) happens here,
    # untimed, so every timed run below is warm. (It runs on CPU too, so --tiny checks this code.)
    components.memory = MemoryOptions(device, "none")
    warm = DreamRunnerPipeline.from_components(components, StockRegionControl())
    run_once(warm, stock_input, video, 1, cuda)
    warm.region_control = SR3AIRegionControl()
    run_once(warm, sr3ai_input, video, 1, cuda)
    components.vae.enable_tiling()
    with torch.no_grad():
        warm.decode_latents(torch.zeros(1, video.latent_frames, components.transformer.config.in_channels,
                                        video.height // 8, video.width // 8, device=device, dtype=components.vae.dtype))
    components.vae.disable_tiling()
    del warm
    results = []
    for label, control, scene_input, memory in runs:
        components.memory = memory
        pipeline = DreamRunnerPipeline.from_components(components, control)
        result = {"run": label, "prompts": plan.num_prompts if isinstance(control, SR3AIRegionControl) else 1}
        try:
            result.update(run_once(pipeline, scene_input, video, steps, cuda))
        except Exception as error:  # one failing configuration still leaves the others' numbers
            import traceback

            traceback.print_exc()
            result["error"] = f"{type(error).__name__}: {error}"
        results.append(result)
        print(json.dumps(result), flush=True)
        if cuda:
            pipeline.remove_all_hooks()
            for module in (components.transformer, components.vae, components.text_encoder):
                module.to(device)

    stock, sr3ai = results[0], results[1]

    def ratio(key):
        return round(sr3ai[key] / stock[key], 3) if key in sr3ai and key in stock else None

    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "model": components.name + (" (tiny, CPU)" if not cuda else " (full size, random bf16 weights)"),
        "video": f"{video.num_frames} frames {video.height}x{video.width}, token grid {video.token_grid}",
        "build_s": round(built, 1),
        "steps_timed": steps,
        "projected_from_steps": steps if steps != 50 else None,
        "runs": results,
        "sr3ai_vs_stock_step": ratio("step_s"),
        "sr3ai_vs_stock_50_step_scene": ratio("projected_50_step_scene_s"),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
