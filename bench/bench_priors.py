"""Seconds per training step and peak GPU memory of the subject and motion prior loops.

Full size (default): a CogVideoX-2B transformer with random weights in bf16, 49 frames at 480x720
(latents [13, 16, 60, 90]), T5 embeddings [226, 4096], rank 32, latents and text embeddings cached (fed
directly, as `dreamrunner.priors` does after its encoding cache). It runs the library's own trainers
(`SubjectTrainer`, `MotionTrainer`) and compares, in one run, speed/memory configurations (checkpointing,
LoRA compute dtype, compiled blocks) against the baseline of a plain PEFT step (diffusers' full gradient
checkpointing, fp32 LoRA compute, default attention kernel), then profiles the fastest one within 24 GB:

    python bench/bench_priors.py --out results.json          # one GPU
    python bench/bench_priors.py --tiny                      # tiny model on CPU: checks the script runs
    python bench/bench_priors.py --defaults [--variant uncheckpointed_blocks=9]   # what a user gets, per prior
    python bench/bench_priors.py --family wan --defaults     # Wan 2.1 1.3B shape: 81 frames at 480x832

`--defaults` times each loop at the library's default settings (`PriorSettings()`) and projects the minutes per
prior from the default step counts. It uses only what every revision of the trainers has (`PriorSettings()`,
`step()`), so the same script times an earlier revision's library in the same run (PYTHONPATH / a copy of the
tree), for a like-for-like comparison.

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
from dreamrunner.priors.memory import default_uncheckpointed_blocks  # noqa: E402
from dreamrunner.story import PriorSettings  # noqa: E402

TARGET_SECONDS, TARGET_GB = 1.0, 24.0
MOTION_CLIPS = 4  # one appearance LoRA each, as with a small set of retrieved clips


def build_wan(tiny: bool, device: torch.device, dtype: torch.dtype):
    """Wan 2.1 T2V 1.3B's transformer (random weights) and the checkpoint's scheduler, or tiny-wan's."""
    from diffusers import WanTransformer3DModel

    from dreamrunner.backends.wan import CHECKPOINTS, build_tiny_wan

    components = build_tiny_wan()
    if tiny:
        return components.transformer, components.scheduler
    with torch.device(device):
        transformer = WanTransformer3DModel(**CHECKPOINTS["wan2.1-1.3b"].transformer)
    return transformer.to(dtype).eval(), components.scheduler


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
    if "text_dim" in config:  # Wan: UMT5 embeddings, 512 tokens per prompt (tiny-wan: its own count)
        from dreamrunner.backends.wan import TEXT_TOKENS, TINY_TEXT_TOKENS, tiny_transformer_config

        tiny = config.text_dim == tiny_transformer_config()["text_dim"]
        text = (TINY_TEXT_TOKENS if tiny else TEXT_TOKENS, config.text_dim)
    else:
        text = (config.max_text_seq_length, config.text_embed_dim)
    generator = torch.Generator().manual_seed(0)
    return [Example(torch.randn(shape, generator=generator), torch.full(shape, 0.05),
                    torch.randn(text, generator=generator)) for _ in range(count)]


def measure(trainer_class, transformer, scheduler, data, settings, device, dtype, cudnn: bool,
            warmup: int, steps: int, workdir: Path, profile: bool = False) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = trainer_class(transformer, scheduler, data, settings, workdir, device=device, dtype=dtype,
                            prefer_cudnn_attention=cudnn)
    try:
        transformer.train()
        times, losses, spatial = [], [], []
        for _ in range(warmup + steps):  # the first steps compile, where compilation is on
            before = getattr(trainer, "spatial_updates", None)
            started = time.perf_counter()
            losses.append(trainer.step())  # same seed in every configuration: the same losses, up to bf16 rounding
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            if before is not None:  # motion loop with the dual-path schedule: did this step update appearance?
                spatial.append(trainer.spatial_updates - before)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        kernels = profile_step(trainer) if profile and cuda else None
    finally:
        transformer.eval()
        trainer.close()
    timed = sorted(times[warmup:])
    median = timed[len(timed) // 2]
    result = {"seconds_per_step": sum(timed) / len(timed), "median": median, "peak_gb": peak,
              "first_loss": losses[0], "losses": [round(v, 5) for v in losses], "compiled": trainer.compiled,
              "step_seconds": [round(t, 3) for t in times], "spatial_updates": spatial or None,
              # time over the steady state spent in the first steps: compilation, allocator warm-up
              "warmup_extra_seconds": sum(times[:warmup]) - warmup * median}
    if kernels is not None:
        result["kernels"] = kernels
    return result


KERNEL_GROUPS = (("attention", ("flash", "fmha", "attention", "cudnn")),
                 ("matmul", ("gemm", "nvjet", "cutlass", "sm90")),
                 ("compiled (triton)", ("triton",)))


def profile_step(trainer) -> dict:
    """GPU time of one step by kernel group, and the ten costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            trainer.step()
            torch.cuda.synchronize()
        events = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()]
    except Exception as error:  # the profile is extra: never lose the row's timings to it
        return {"error": f"{type(error).__name__}: {error}"[:300]}
    events = [e for e in events if e[1] > 0]
    total = sum(e[1] for e in events)
    groups = dict.fromkeys([name for name, _ in KERNEL_GROUPS] + ["other"], 0.0)
    for name, microseconds, _ in events:
        group = next((g for g, keys in KERNEL_GROUPS if any(k in name.lower() for k in keys)), "other")
        groups[group] += microseconds
    top = sorted(events, key=lambda e: e[1], reverse=True)[:12]
    return {"gpu_seconds": total / 1e6, "groups_seconds": {k: round(v / 1e6, 4) for k, v in groups.items()},
            "top": [{"kernel": name[:120], "seconds": round(us / 1e6, 4), "calls": count} for name, us, count in top]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model on CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation happens here)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--reduced", default="240x352", help="reduced motion resolution HxW (multiples of 16)")
    parser.add_argument("--compile", default="gpu", choices=("gpu", "always"),
                        help="compile_blocks of the compiled rows ('gpu': not on CPU; 'always' checks it there)")
    parser.add_argument("--budget", type=float, default=330.0,
                        help="seconds after which the optional rows (reduced resolution) are skipped")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here (after every row)")
    parser.add_argument("--selective-compiled", action="store_true",
                        help="only compare selective checkpointing on compiled blocks with the defaults and the baseline")
    parser.add_argument("--defaults", action="store_true",
                        help="time each loop at the library's default settings; minutes per prior at the default steps")
    parser.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE",
                        help="with --defaults: also time the defaults with this setting changed (repeatable)")
    parser.add_argument("--family", choices=("cogvideox", "wan"), default="cogvideox",
                        help="wan: Wan 2.1 1.3B's shape, 81 frames at 480x832 (with --defaults only)")
    args = parser.parse_args()
    if args.family == "wan" and not args.defaults:
        parser.error("--family wan times the default settings only: add --defaults")

    began = time.perf_counter()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    steps = args.steps or (2 if args.tiny else 4)
    warmup = 1 if args.tiny else args.warmup
    if args.family == "wan":
        from dreamrunner.backends.wan import TINY_VIDEO, VIDEO_DEFAULTS

        transformer, scheduler = build_wan(args.tiny, device, dtype)
        video = TINY_VIDEO if args.tiny else VIDEO_DEFAULTS["wan2.1-1.3b"]
        frames, full = (video["num_frames"] - 1) // 4 + 1, (video["height"], video["width"])
    else:
        transformer, scheduler = build(args.tiny, device, dtype)
        frames = (transformer.config.sample_frames - 1) // 4 + 1
        full = (transformer.config.sample_height * 8, transformer.config.sample_width * 8)
    reduced = tuple(int(v) for v in args.reduced.lower().split("x"))
    if args.tiny:
        reduced = (full[0] // 2 // 16 * 16 or 16, full[1] // 2 // 16 * 16 or 16)
    num_blocks = transformer.config.num_layers
    workdir = Path("/tmp/bench_priors")
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "model": ({"cogvideox": "tiny-2b", "wan": "tiny-wan"}[args.family] if args.tiny else
                         {"cogvideox": "CogVideoX-2B", "wan": "Wan 2.1 T2V 1.3B"}[args.family]
                         + " shape, random weights, bf16"),
               "command": " ".join(["python", "bench/bench_priors.py", *sys.argv[1:]]),
               "frames": frames * 4 - 3, "rank": args.rank, "warmup_steps": warmup, "timed_steps": steps, "runs": []}

    def run(name, loop, size, mode, uncheckpointed=0, lora_compute="backbone", compile_blocks="off", cudnn=True,
            profile=False):
        trainer_class = SubjectTrainer if loop == "subject" else MotionTrainer
        data = examples(transformer, 1 if loop == "subject" else MOTION_CLIPS, size[0], size[1], frames)
        settings = PriorSettings(rank=args.rank, gradient_checkpointing=mode, uncheckpointed_blocks=uncheckpointed,
                                 lora_compute=lora_compute, compile_blocks=compile_blocks)
        try:
            result = measure(trainer_class, transformer, scheduler, data, settings, device, dtype, cudnn,
                             warmup, steps, workdir, profile)
        except torch.cuda.OutOfMemoryError:
            result = {"error": "out of memory"}
        except Exception as error:  # one failing configuration must not lose the others' numbers
            result = {"error": f"{type(error).__name__}: {error}"[:300]}
        row = {"name": name, "loop": loop, "height": size[0], "width": size[1], "checkpointing": mode,
               "uncheckpointed_blocks": uncheckpointed, "lora_compute": lora_compute,
               "compile_blocks": compile_blocks, "attention": "cudnn" if cudnn else "default",
               "elapsed_s": round(time.perf_counter() - began, 1), **result}
        results["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "kernels"}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return row

    def ok(row):
        return "error" not in row

    def fits(row):
        return ok(row) and (row["peak_gb"] is None or row["peak_gb"] <= TARGET_GB)

    compiled = args.compile
    if args.defaults:
        return time_defaults(transformer, scheduler, frames, full, device, dtype, warmup, args, results, began)
    if args.selective_compiled:
        return compare_selective_compiled(run, transformer, full, compiled, results, args.out)
    baseline = run("baseline: full checkpointing, fp32 LoRA compute, default attention", "motion", full, "full",
                   lora_compute="float32", cudnn=False)
    run("earlier defaults: selective, 4 un-checkpointed, fp32 LoRA compute", "motion", full, "selective", 4,
        lora_compute="float32")
    candidates = [
        run("selective, 4 un-checkpointed, bf16 LoRA compute", "motion", full, "selective", 4),
        run("no checkpointing, bf16 LoRA compute", "motion", full, "off"),
    ]
    full_compiled = run("full checkpointing, bf16 LoRA, compiled blocks", "motion", full, "full",
                        compile_blocks=compiled)
    off_compiled = run("no checkpointing, bf16 LoRA, compiled blocks", "motion", full, "off", compile_blocks=compiled)
    candidates += [full_compiled, off_compiled]
    if ok(full_compiled) and ok(off_compiled) and not fits(off_compiled) and full_compiled["peak_gb"] is not None:
        # Spend the memory left under the target on un-checkpointed blocks, at the measured cost per block.
        per_block = (off_compiled["peak_gb"] - full_compiled["peak_gb"]) / num_blocks
        count = max(0, min(num_blocks, int((TARGET_GB - 1.0 - full_compiled["peak_gb"]) / per_block)))
        candidates.append(run(f"full checkpointing, {count} un-checkpointed, bf16 LoRA, compiled blocks", "motion",
                              full, "full", count, compile_blocks=compiled))

    fitting = [r for r in candidates if fits(r)] or [baseline]
    chosen = min(fitting, key=lambda r: r["median"])
    config = {k: chosen[k] for k in ("checkpointing", "uncheckpointed_blocks", "lora_compute", "compile_blocks")}
    mode, count, lora_compute, compile_blocks = config.values()
    cudnn = chosen["attention"] == "cudnn"
    profiled = run("chosen configuration (profiled after timing)", "motion", full, mode, count, lora_compute,
                   compile_blocks, cudnn, profile=device.type == "cuda")
    subject_baseline = run("baseline", "subject", full, "full", lora_compute="float32", cudnn=False)
    subject = run("chosen configuration", "subject", full, mode, count, lora_compute, compile_blocks, cudnn)
    small = small_baseline = None
    if time.perf_counter() - began < args.budget:
        small_baseline = run("baseline, reduced resolution", "motion", reduced, "full", lora_compute="float32",
                             cudnn=False)
        small = run("chosen configuration, reduced resolution", "motion", reduced, mode, count, lora_compute,
                    compile_blocks, cudnn)

    def summary(row, against):
        if row is None or not ok(row) or not ok(against):
            return None
        return {"seconds_per_step": round(row["seconds_per_step"], 3), "median": round(row["median"], 3),
                "projected_300_steps_s": round(300 * row["median"] + row["warmup_extra_seconds"], 1),
                "peak_gb": None if row["peak_gb"] is None else round(row["peak_gb"], 2),
                "speedup_vs_baseline": round(against["median"] / row["median"], 2)}

    results["summary"] = {
        "chosen": config, "motion": summary(chosen, baseline), "motion_repeat": summary(profiled, baseline),
        "subject": summary(subject, subject_baseline), "motion_reduced": summary(small, small_baseline),
        "reduced_resolution": f"{reduced[0]}x{reduced[1]}",
        "targets": {"seconds_per_step": TARGET_SECONDS, "peak_gb": TARGET_GB},
        # compilation happens once per process and new variant (first compiled row, new loop, new resolution):
        # add it to a 300-step projection
        "compile_seconds": {f"{r['loop']} {r['height']}x{r['width']}: {r['name']}": round(r["warmup_extra_seconds"], 1)
                            for r in results["runs"] if ok(r) and r["compiled"] and r["warmup_extra_seconds"] > 1},
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(results["summary"], indent=2))
    if "kernels" in profiled:
        print(json.dumps(profiled["kernels"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def compare_selective_compiled(run, transformer, full, compiled, results, out) -> int:
    """Selective checkpointing (attention outputs kept, so not recomputed) on compiled blocks, per loop, against
    the defaults (full checkpointing of the checkpointed blocks) and the plain-PEFT baseline of the same run."""
    uncheckpointed = default_uncheckpointed_blocks(transformer)
    summary = {}
    for loop in ("motion", "subject"):
        baseline = run("baseline: full checkpointing, fp32 LoRA compute, default attention", loop, full, "full",
                       lora_compute="float32", cudnn=False)
        rows = [run(f"defaults: full checkpointing, {uncheckpointed} un-checkpointed, bf16 LoRA, "
                    "compiled blocks", loop, full, "full", uncheckpointed, compile_blocks=compiled)]
        for count in (uncheckpointed, uncheckpointed - 4):
            rows.append(run(f"selective, {count} un-checkpointed, bf16 LoRA, compiled blocks", loop, full,
                            "selective", count, compile_blocks=compiled))
        summary[loop] = [{"name": r["name"], "median": r.get("median"), "peak_gb": r.get("peak_gb"),
                          "speedup_vs_baseline": round(baseline["median"] / r["median"], 2)
                          if "median" in r and "median" in baseline else None, "error": r.get("error")}
                         for r in rows]
    results["summary"] = summary
    print(json.dumps(summary, indent=2))
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def time_defaults(transformer, scheduler, frames, full, device, dtype, warmup, args, results, began) -> int:
    """Each loop at `PriorSettings()` (plus each --variant), and the minutes per prior at its default steps."""
    steps = args.steps or (2 if args.tiny else 12)
    results["timed_steps"] = steps
    summary = []
    variants = [{}] + [dict([item.split("=", 1)]) for item in args.variant]
    for loop in ("motion", "subject"):
        trainer_class = SubjectTrainer if loop == "subject" else MotionTrainer
        data = examples(transformer, 1 if loop == "subject" else MOTION_CLIPS, full[0], full[1], frames)
        for change in variants:
            name = "defaults" + "".join(f", {k}={v}" for k, v in change.items())
            prior_steps = None
            try:
                settings = PriorSettings.model_validate({"rank": args.rank, **change})
                # Earlier revisions had one step count for both kinds (max_steps).
                prior_steps = settings.steps_for(loop) if hasattr(settings, "steps_for") else settings.max_steps
                result = measure(trainer_class, transformer, scheduler, data, settings, device, dtype, True,
                                 warmup, steps, Path("/tmp/bench_priors"))
            except torch.cuda.OutOfMemoryError:
                result = {"error": "out of memory"}
            except Exception as error:  # a variant this revision lacks must not lose the other rows
                result = {"error": f"{type(error).__name__}: {error}"[:300]}
            row = {"name": name, "loop": loop, "height": full[0], "width": full[1], "settings": change,
                   "prior_steps": prior_steps, "elapsed_s": round(time.perf_counter() - began, 1), **result}
            if "error" not in row:
                timed = row["spatial_updates"][warmup:] if row["spatial_updates"] else None
                row["spatial_fraction"] = None if timed is None else sum(timed) / len(timed)
                row["minutes_per_prior"] = round(prior_steps * row["seconds_per_step"] / 60, 2)
                row["minutes_per_prior_with_first_steps"] = round(
                    (prior_steps * row["seconds_per_step"] + row["warmup_extra_seconds"]) / 60, 2)
            results["runs"].append(row)
            summary.append({k: row.get(k) for k in ("name", "loop", "prior_steps", "seconds_per_step", "median",
                                                     "peak_gb", "spatial_fraction", "minutes_per_prior",
                                                     "minutes_per_prior_with_first_steps", "warmup_extra_seconds",
                                                     "error")})
            print(json.dumps(summary[-1]), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2) + "\n")
    results["summary"] = summary
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
