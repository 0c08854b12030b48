"""Seconds per training step and peak GPU memory of the subject and motion prior loops.

Full size (default): a CogVideoX-2B transformer with random weights in bf16, 49 frames at 480x720
(latents [13, 16, 60, 90]), T5 embeddings [226, 4096], rank 32, latents and text embeddings cached (fed
directly, as `dreamrunner.priors` does after its encoding cache). It runs the library's own trainers
(`SubjectTrainer`, `MotionTrainer`) and compares, in one run, memory/speed configurations against the
baseline of a plain PEFT step (diffusers' full gradient checkpointing, default attention kernel):

    python bench/bench_priors.py --out results.json          # one GPU
    python bench/bench_priors.py --tiny                      # tiny model on CPU: checks the script runs

Random weights: the numbers are speeds and memory, not quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamrunner.priors import Example, MotionTrainer, SubjectTrainer  # noqa: E402
from dreamrunner.story import PriorSettings  # noqa: E402

TARGET_SECONDS, TARGET_GB = 1.0, 24.0
MOTION_CLIPS = 4  # one appearance LoRA each, as with a small set of retrieved clips


def build(tiny: bool, device: torch.device, dtype: torch.dtype):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    if tiny:
        from dreamrunner.backends.tiny import build_tiny

        components = build_tiny("2b")
        return components.transformer, components.scheduler
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel()  # the library's defaults are CogVideoX-2B's config
    transformer.to(dtype).eval()
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True,
        clip_sample=False, set_alpha_to_one=True, snr_shift_scale=3.0,
    )
    return transformer, scheduler


def examples(transformer, count: int, height: int, width: int, frames: int) -> list[Example]:
    config = transformer.config
    shape = (frames, config.in_channels, height // 8, width // 8)
    text = (config.max_text_seq_length, config.text_embed_dim)
    generator = torch.Generator().manual_seed(0)
    return [Example(torch.randn(shape, generator=generator), torch.full(shape, 0.05),
                    torch.randn(text, generator=generator)) for _ in range(count)]


def measure(trainer_class, transformer, scheduler, data, settings, device, dtype, cudnn: bool,
            warmup: int, steps: int, workdir: Path) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = trainer_class(transformer, scheduler, data, settings, workdir, device=device, dtype=dtype,
                            prefer_cudnn_attention=cudnn)
    try:
        transformer.train()
        first_loss = trainer.step()  # same seed in every configuration: the same loss, up to bf16 rounding
        for _ in range(warmup - 1):
            trainer.step()
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            trainer.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    finally:
        transformer.eval()
        trainer.close()
    times.sort()
    return {"seconds_per_step": sum(times) / len(times), "median": times[len(times) // 2], "peak_gb": peak,
            "first_loss": first_loss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model on CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--reduced", default="240x352", help="reduced motion resolution HxW (multiples of 16)")
    parser.add_argument("--uncheckpointed", default="4,8", help="counts of un-checkpointed blocks to try")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    steps = args.steps or (2 if args.tiny else 5)
    transformer, scheduler = build(args.tiny, device, dtype)
    frames = (transformer.config.sample_frames - 1) // 4 + 1
    full = (transformer.config.sample_height * 8, transformer.config.sample_width * 8)
    reduced = tuple(int(v) for v in args.reduced.lower().split("x"))
    if args.tiny:
        reduced = (full[0] // 2 // 16 * 16 or 16, full[1] // 2 // 16 * 16 or 16)
    workdir = Path("/tmp/bench_priors")
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "model": "tiny-2b" if args.tiny else "CogVideoX-2B shape, random weights, bf16",
               "frames": frames * 4 - 3, "rank": args.rank, "timed_steps": steps, "runs": []}

    def run(name, loop, size, mode, cudnn, uncheckpointed=0):
        trainer_class = SubjectTrainer if loop == "subject" else MotionTrainer
        data = examples(transformer, 1 if loop == "subject" else MOTION_CLIPS, size[0], size[1], frames)
        settings = PriorSettings(rank=args.rank, gradient_checkpointing=mode, uncheckpointed_blocks=uncheckpointed)
        try:
            result = measure(trainer_class, transformer, scheduler, data, settings, device, dtype, cudnn,
                             args.warmup, steps, workdir)
        except torch.cuda.OutOfMemoryError:
            result = {"error": "out of memory"}
        except Exception as error:  # one failing configuration must not lose the others' numbers
            result = {"error": f"{type(error).__name__}: {error}"[:300]}
        row = {"name": name, "loop": loop, "height": size[0], "width": size[1], "checkpointing": mode,
               "uncheckpointed_blocks": uncheckpointed, "attention": "cudnn" if cudnn else "default", **result}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        return row

    baseline = run("baseline: full checkpointing, default attention", "motion", full, "full", False)
    run("no checkpointing, default attention", "motion", full, "off", False)
    run("full checkpointing, cuDNN attention", "motion", full, "full", True)
    candidates = [run("selective checkpointing, cuDNN attention", "motion", full, "selective", True)]
    for count in (int(c) for c in args.uncheckpointed.split(",") if c):
        candidates.append(run(f"selective, {count} blocks un-checkpointed, cuDNN", "motion", full, "selective", True, count))
    run("no checkpointing, cuDNN attention", "motion", full, "off", True)

    fitting = [r for r in candidates if "error" not in r and (r["peak_gb"] is None or r["peak_gb"] <= TARGET_GB)]
    if not fitting:
        print("no candidate configuration ran within the memory target", flush=True)
        fitting = [baseline]
    chosen = min(fitting, key=lambda r: r["seconds_per_step"])
    mode, count = chosen["checkpointing"], chosen["uncheckpointed_blocks"]
    cudnn = chosen["attention"] == "cudnn"
    subject = run("chosen configuration", "subject", full, mode, cudnn, count)
    small = run("chosen configuration, reduced resolution", "motion", reduced, mode, cudnn, count)
    small_baseline = run("baseline, reduced resolution", "motion", reduced, "full", False)

    def summary(row):
        return {"seconds_per_step": round(row["seconds_per_step"], 3), "projected_300_steps_s": round(300 * row["seconds_per_step"], 1),
                "peak_gb": None if row["peak_gb"] is None else round(row["peak_gb"], 2),
                "speedup_vs_baseline": round(baseline["seconds_per_step"] / row["seconds_per_step"], 2)}

    results["summary"] = {
        "chosen": {"checkpointing": mode, "uncheckpointed_blocks": count, "attention": chosen["attention"]},
        "motion": summary(chosen), "subject": summary(subject), "motion_reduced": summary(small),
        "reduced_resolution": f"{reduced[0]}x{reduced[1]}",
        "reduced_speedup_vs_full_same_config": round(chosen["seconds_per_step"] / small["seconds_per_step"], 2),
        "reduced_baseline_seconds_per_step": round(small_baseline["seconds_per_step"], 3),
        "targets": {"seconds_per_step": TARGET_SECONDS, "peak_gb": TARGET_GB},
    }
    print(json.dumps(results["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
