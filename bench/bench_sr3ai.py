"""SR3AI cost against stock CogVideoX attention, per attention call and per transformer step.

Full size (GPU): CogVideoX-2B transformer with random weights, bf16, 480x720, 49 frames (13 x 30 x 45 video
tokens), CFG batch 2, 226 T5 tokens per prompt; 1, 3, 5 and 9 prompts (background included). Prints and
writes JSON:
- exactness at real size: fast (bf16) and dense (bf16) against the dense fp32 reference, one attention call;
  fast vs dense SR3AI transformer step (bf16);
- per attention call: stock (1 prompt, no mask, SDPA) vs dense mask vs fast SR3AI (default kernel order and
  each log-sum-exp kernel alone), with the peak extra memory of each call;
- per transformer step: stock vs SR3AI vs SR3AI + 4 region-gated LoRAs (rank 32 on attn q/k/v/out and
  ff in/out: 2 subject priors on odd blocks, 2 motion priors on even blocks), with peak memory.

`--model cogvideox1.5-5b`: the CogVideoX1.5-5B transformer instead (42 blocks, 48 heads, rotary positions,
two latent frames per token frame) at its default 81 frames, 768x1360: 21 latent frames padded to 22 as
diffusers pads them, 11 x 48 x 85 video tokens; `--step-only` skips the per-call sections.

    python bench/bench_sr3ai.py                 # GPU, full CogVideoX-2B size
    python bench/bench_sr3ai.py --tiny          # CPU, tiny config, same code path (a smoke run)
    python bench/bench_sr3ai.py --model cogvideox1.5-5b --step-only --prompts 4
    python bench/bench_sr3ai.py --family wan --model wan2.1-1.3b --model wan2.1-14b   # Wan 2.1 (see wan_main)
    python bench/bench_sr3ai.py --family wan --model wan2.2-ti2v-5b --prompts 5        # Wan 2.2 TI2V-5B

Random weights: the numbers are costs and numerical agreement, not video quality.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from dreamrunner.attention import GatedLoRA, LoRAWeights, RegionLayout, SR3AIController
from dreamrunner.attention.lora import prior_blocks
from dreamrunner.attention import sr3ai_attention_dense, sr3ai_attention_fast
from dreamrunner.attention.controller import transformer_blocks
from dreamrunner.attention.functional import CUDA_LSE_BACKENDS

LORA_MODULES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")


def moving_boxes_masks(prompts: int, grid: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Entities as boxes drifting over the frames, neighbours overlapping; background = the rest."""
    frames, rows, cols = grid
    rng = np.random.default_rng(seed)
    masks = np.zeros((prompts, *grid), dtype=bool)
    for p in range(1, prompts):
        x0, y0 = rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.5)
        dx, dy = rng.uniform(-0.2, 0.3), rng.uniform(-0.1, 0.1)
        w, h = rng.uniform(0.25, 0.45), rng.uniform(0.3, 0.5)
        for t in range(frames):
            f = t / max(frames - 1, 1)
            bx, by = min(max(x0 + f * dx, 0), 1 - w), min(max(y0 + f * dy, 0), 1 - h)
            masks[p, t, round(by * rows):max(round((by + h) * rows), 1), round(bx * cols):max(round((bx + w) * cols), 1)] = True
    masks[0] = ~masks[1:].any(0)
    return masks


def timed(fn, device, warmup: int, iters: int) -> tuple[float, float]:
    """Median milliseconds per call and the peak memory (GiB) allocated above what was live before."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else float("nan")
    return float(np.median(times)), peak


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def random_lora(transformer, kind: str, rank: int, seed: int, modules=LORA_MODULES,
                prefix: str = "transformer_blocks") -> LoRAWeights:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in prior_blocks(kind, len(transformer_blocks(transformer))):
        for module in modules:
            linear = transformer.get_submodule(f"{prefix}.{i}.{module}")
            key = f"transformer.{prefix}.{i}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) / linear.in_features ** 0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * 0.01
    return LoRAWeights.from_state_dict(tensors, kind, {"r": rank, "lora_alpha": rank}, name=f"{kind}{seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (smoke run of the same code)")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 3, 5, 9])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--attn-iters", type=int, default=None)
    parser.add_argument("--step-iters", type=int, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="skip the per-kernel comparisons and profiles (the main table and exactness only)")
    parser.add_argument("--family", choices=("cogvideox", "wan"), default="cogvideox")
    parser.add_argument("--model", action="append",
                        choices=("cogvideox-2b", "cogvideox1.5-5b", "wan2.1-1.3b", "wan2.1-14b", "wan2.2-a14b",
                                 "wan2.2-ti2v-5b"),
                        help="transformer config (full size; with --tiny the tiny flavour of that kind); "
                             "--family wan: the checkpoint shapes to time, one after the other (default 1.3B)")
    parser.add_argument("--step-only", action="store_true",
                        help="only the transformer steps (skip the per-attention-call exactness and timings)")
    args = parser.parse_args()
    if args.family == "wan":
        return wan_main(args)
    if len(args.model or []) > 1 or any(m.startswith("wan") for m in args.model or []):
        parser.error("--family cogvideox times one model: --model cogvideox-2b or cogvideox1.5-5b")
    args.model = (args.model or ["cogvideox-2b"])[0]

    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    from dreamrunner.backends.cogvideox import CHECKPOINTS

    if args.tiny:
        from dreamrunner.backends.tiny import TINY_VIDEO, TINY_VIDEO_15, tiny_transformer_config

        device, dtype = torch.device("cpu"), torch.float32
        is_15 = args.model == "cogvideox1.5-5b"
        config = tiny_transformer_config("1.5" if is_15 else "2b")
        video = TINY_VIDEO_15 if is_15 else TINY_VIDEO
        attn_iters, step_iters, warmup = args.attn_iters or 3, args.step_iters or 2, 1
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        config, video = CHECKPOINTS[args.model].transformer, CHECKPOINTS[args.model].video
        attn_iters, step_iters, warmup = args.attn_iters or 20, args.step_iters or 5, 2
        if args.quick:
            attn_iters, step_iters, warmup = args.attn_iters or 10, args.step_iters or 3, 1
    frames, height, width = video["num_frames"], video["height"] // 8, video["width"] // 8  # latent height/width
    torch.manual_seed(0)
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**config).to(dtype).eval()
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    cfg = transformer.config
    heads, head_dim, L = cfg.num_attention_heads, cfg.attention_head_dim, cfg.max_text_seq_length
    latent_frames = (frames - 1) // cfg.temporal_compression_ratio + 1
    patch_t = cfg.patch_size_t or 1
    latent_frames += -latent_frames % patch_t  # CogVideoXPipeline pads to whole temporal patches (1.5)
    grid = (latent_frames // patch_t, height // cfg.patch_size, width // cfg.patch_size)
    N = math.prod(grid)
    batch = 2
    # Rotary positions (5B-style models) exactly as the stock pipeline makes them for this size.
    rotary = None
    if cfg.use_rotary_positional_embeddings:
        rotary = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=None) \
            ._prepare_rotary_positional_embeddings(height * 8, width * 8, latent_frames, device)
    results = {
        "command": "python bench/bench_sr3ai.py" + (" --tiny" if args.tiny else "") + (" --quick" if args.quick else "")
                   + (f" --model {args.model}" if args.model != "cogvideox-2b" else "")
                   + (" --step-only" if args.step_only else "")
                   + (f" --prompts {' '.join(map(str, args.prompts))}" if args.prompts != [1, 3, 5, 9] else ""),
        "model": args.model + (" (tiny config)" if args.tiny else " (full size, random weights)"),
        "video": f"{frames} frames {video['height']}x{video['width']}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(dtype), "batch": batch, "grid": grid, "video_tokens": N,
        "weights_gib": weights_gib,  # step peaks ("peak_gib") are above this (the model's weights stay live)
        "text_tokens_per_prompt": L, "heads": heads, "head_dim": head_dim, "layers": cfg.num_layers,
        "attention": {}, "step": {}, "exactness": {},
    }
    print(json.dumps({k: results[k] for k in ("machine", "torch", "dtype", "grid", "video_tokens")}))

    def save() -> None:  # after every measurement, so a run cut short still leaves what it measured
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)

    def qkv(prompts, dtype=dtype, b=batch, seed=0):
        generator = torch.Generator(device=device).manual_seed(seed)
        shape = (b, prompts * L + N, heads, head_dim)  # projections come out [B, S, H, d], as in the processor
        return [torch.randn(shape, device=device, dtype=dtype, generator=generator).transpose(1, 2) for _ in range(3)]

    layouts = {p: RegionLayout.from_masks(moving_boxes_masks(p, grid, seed=p), L, device) for p in args.prompts}
    for p, layout in layouts.items():
        covered = [int(i.numel()) for i in layout.video_index]
        print(f"P={p}: tokens per prompt {covered}, cover classes {len(layout.cover_classes().spans)}")

    p_check = 5 if 5 in layouts else args.prompts[-1]
    if not args.step_only:  # the per-call sections (at 1.5 size the dense fp32 reference is 45k x 45k)
        # --- exactness at real size (one call, batch 1): bf16 fast / dense vs the fp32 dense reference
        layout = layouts[p_check]
        q32, k32, v32 = qkv(p_check, torch.float32, b=1, seed=1)
        reference = sr3ai_attention_dense(q32, k32, v32, layout)
        q, k, v = (t.to(dtype) for t in (q32, k32, v32))
        results["exactness"] = {
            "prompts": p_check,
            "fast_fp32_vs_dense_fp32": rel_err(sr3ai_attention_fast(q32, k32, v32, layout), reference),
            "fast_vs_dense_fp32": rel_err(sr3ai_attention_fast(q, k, v, layout), reference),
            "dense_vs_dense_fp32": rel_err(sr3ai_attention_dense(q, k, v, layout), reference),
            "stock_sdpa_bf16_vs_fp32_unmasked": rel_err(
                F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q32, k32, v32)),
        }
        del q32, k32, v32, reference, q, k, v
        print("exactness", json.dumps(results["exactness"]))

        # --- per attention call
        q, k, v = qkv(1)
        stock_ms, stock_mem = timed(lambda: F.scaled_dot_product_attention(q, k, v), device, warmup, attn_iters)
        results["attention"]["stock"] = {"ms": stock_ms, "peak_extra_gib": stock_mem}
        print(f"attention stock (1 prompt, SDPA): {stock_ms:.2f} ms, peak extra {stock_mem:.2f} GiB")
        if device.type == "cuda" and not args.quick:  # the main part alone: video x video, with the log-sum-exp
            from dreamrunner.attention import attention_with_lse

            qv, kv, vv = (t[:, :, L:] for t in (q, k, v))
            for name in CUDA_LSE_BACKENDS:
                try:
                    ms, _ = timed(lambda: attention_with_lse(qv, kv, vv, (name,)), device, warmup, attn_iters)
                    results["attention"][f"video_part_lse_{name}"] = {"ms": ms}
                    print(f"  video x video with lse, {name}: {ms:.2f} ms")
                except Exception as error:  # a kernel this GPU / build lacks: record and move on
                    results["attention"][f"video_part_lse_{name}"] = {"error": str(error)[:200]}
        del q, k, v
        for p, layout in layouts.items():
            q, k, v = qkv(p)
            row = {}
            # "fast" as the transformer runs it: video tokens in cover-class order (SR3AIController);
            # "fast_natural_order": tokens in (t, row, col) order, gathered into class order and scattered back.
            ordered = layout.reordered(layout.cover_classes().order)
            for name, fn in [("dense", lambda: sr3ai_attention_dense(q, k, v, layout)),
                             ("fast", lambda: sr3ai_attention_fast(q, k, v, ordered)),
                             ("fast_natural_order", lambda: sr3ai_attention_fast(q, k, v, layout))]:
                ms, mem = timed(fn, device, warmup, attn_iters)
                row[name] = {"ms": ms, "peak_extra_gib": mem, "x_stock": ms / stock_ms}
            if device.type == "cuda" and p == p_check and not args.quick:
                for name in CUDA_LSE_BACKENDS:
                    try:
                        ms, _ = timed(lambda: sr3ai_attention_fast(q, k, v, ordered, (name,)), device, warmup, attn_iters)
                        row[f"fast_{name}"] = {"ms": ms, "x_stock": ms / stock_ms}
                    except Exception as error:
                        row[f"fast_{name}"] = {"error": str(error)[:200]}
            if device.type == "cuda" and p == p_check and not args.quick:  # where the time goes
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        sr3ai_attention_fast(q, k, v, ordered)
                    torch.cuda.synchronize()
                table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15)
                results["attention"]["profile_fast"] = table
                print(table)
            results["attention"][f"P{p}"] = row
            print(f"attention P={p}: " + ", ".join(f"{n} {r['ms']:.2f} ms ({r['x_stock']:.3f}x)" for n, r in row.items() if "ms" in r)
                  + f"; peak extra dense {row['dense']['peak_extra_gib']:.2f} GiB, fast {row['fast']['peak_extra_gib']:.2f} GiB")
            del q, k, v

    # --- per transformer step
    generator = torch.Generator(device=device).manual_seed(2)
    latents = torch.randn(batch, latent_frames, cfg.in_channels, height, width, device=device, dtype=dtype, generator=generator)
    timestep = torch.full((batch,), 500, device=device, dtype=torch.long)

    def text(prompts):
        return torch.randn(batch, prompts * L, cfg.text_embed_dim, device=device, dtype=dtype, generator=generator)

    @torch.no_grad()
    def step(encoder_hidden_states):
        return transformer(hidden_states=latents, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                           image_rotary_emb=rotary, return_dict=False)[0]

    stock_text = text(1)
    step_ms, step_mem = timed(lambda: step(stock_text), device, warmup, step_iters)
    results["step"]["stock"] = {"ms": step_ms, "peak_gib": step_mem}
    save()
    print(f"step stock: {step_ms:.1f} ms, peak {step_mem:.2f} GiB")
    loras = [random_lora(transformer, kind, 32, seed) for seed, kind in enumerate(["subject", "subject", "motion", "motion"])]
    with SR3AIController(transformer) as controller:
        for p, layout in layouts.items():
            controller.set_regions(layout)
            encoder_hidden_states = text(p)
            row = {}
            ms, mem = timed(lambda: step(encoder_hidden_states), device, warmup, step_iters)
            row["sr3ai"] = {"ms": ms, "peak_gib": mem, "x_stock": ms / step_ms}
            # bind the priors to different prompts (all to the background when there is only one)
            controller.set_loras([GatedLoRA(w, prompts=(min(i + 1, p - 1),), scale=1.0) for i, w in enumerate(loras)])
            ms, mem = timed(lambda: step(encoder_hidden_states), device, warmup, step_iters)
            row["sr3ai_4_loras"] = {"ms": ms, "peak_gib": mem, "x_stock": ms / step_ms}
            if device.type == "cuda" and p == p_check and not args.quick:  # where a gated-LoRA step's time goes
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    step(encoder_hidden_states)
                    torch.cuda.synchronize()
                table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20)
                results["step"]["profile_sr3ai_4_loras"] = table
                print(table)
            controller.set_loras([])
            results["step"][f"P{p}"] = row
            save()
            if p == p_check:  # the whole step, fast vs the dense reference
                fast = step(encoder_hidden_states)
                for processor in transformer.attn_processors.values():
                    processor.implementation = "dense"
                dense = step(encoder_hidden_states)
                for processor in transformer.attn_processors.values():
                    processor.implementation = "fast"
                results["exactness"]["step_fast_vs_dense"] = rel_err(fast, dense)
                del fast, dense
                save()
            print(f"step P={p}: " + ", ".join(f"{n} {r['ms']:.1f} ms ({r['x_stock']:.3f}x, peak {r['peak_gib']:.2f} GiB)" for n, r in row.items()))
    print("exactness", json.dumps(results["exactness"]))
    save()


def wan_main(args) -> None:
    """Wan 2.1 T2V transformer, random weights, bf16, 81 frames (21 x h/16 x w/16 video tokens), batch 1 per
    call (WanPipeline runs the conditional and unconditional passes as separate calls), 512 UMT5 tokens per
    prompt: 1.3B at 480x832 (21 x 30 x 52), 14B at 720x1280 (21 x 45 x 80). Per model:
    - exactness of one cross-attention call at full size: fast (bf16) and dense (bf16) against the dense fp32
      reference (at most 12 heads, to keep the fp32 reference's scores in memory); whole-step fast vs dense (1.3B);
    - per transformer step: stock (one prompt) vs SR3AI (P prompts) vs SR3AI + 4 region-gated LoRAs (rank 32
      on attn1 q/k/v/out and ffn in/out: 2 subject priors on odd blocks, 2 motion priors on even), peak memory.
    Wan 2.2: TI2V-5B at 121 frames, 704x1280 on its 16x VAE (31 x 22 x 40 tokens), one timestep per token as
    WanPipeline's expand_timesteps feeds it; A14B times one expert (a step runs one, of 14B's shape) at 720p.
    With --tiny, the tiny model of each named kind (tiny-wan, tiny-wan2.2, tiny-wan2.2-5b).
    """
    from diffusers import WanTransformer3DModel

    from dreamrunner.attention.wan import WanSR3AIController, wan_cross_attention_dense, wan_cross_attention_fast
    from dreamrunner.backends import vae_spatial
    from dreamrunner.backends.wan import (CHECKPOINTS, TINY_OPTIONS, TINY_TEXT_TOKENS, TINY_VAE, VIDEO_DEFAULTS,
                                          tiny_transformer_config)
    from dreamrunner.priors.lora import WAN_TARGET_MODULES

    tiny_of = {"wan2.2-a14b": "tiny-wan2.2", "wan2.2-ti2v-5b": "tiny-wan2.2-5b"}
    models = args.model or ["wan2.1-1.3b"]
    if args.tiny:
        models = list(dict.fromkeys(tiny_of.get(m, "tiny-wan") for m in models))
    prompts = args.prompts if args.prompts != [1, 3, 5, 9] else [3, 5]
    device, dtype = (torch.device("cpu"), torch.float32) if args.tiny else (torch.device("cuda"), torch.bfloat16)
    step_iters, warmup = args.step_iters or (2 if args.tiny else 3), 1
    results = {
        "command": "python bench/bench_sr3ai.py --family wan" + "".join(f" --model {m}" for m in args.model or [])
                   + (" --tiny" if args.tiny else "")
                   + (f" --prompts {' '.join(map(str, args.prompts))}" if args.prompts != [1, 3, 5, 9] else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(dtype), "batch": 1, "weights": "random (noise)", "models": {},
    }
    for name in models:
        torch.manual_seed(0)
        per_token = (TINY_OPTIONS.get(name) or {}).get("expand_timesteps") or name == "wan2.2-ti2v-5b"
        if args.tiny:
            config, latent, L = tiny_transformer_config(channels=TINY_VAE[name]["z_dim"]), (21, 8, 12), TINY_TEXT_TOKENS
        else:
            video, spatial = VIDEO_DEFAULTS[name], vae_spatial(name)
            config = CHECKPOINTS[name].transformer
            latent, L = ((video["num_frames"] - 1) // 4 + 1, video["height"] // spatial, video["width"] // spatial), 512
        with torch.device(device):
            transformer = WanTransformer3DModel(**config).to(dtype).eval()
        cfg = transformer.config
        grid = (latent[0], latent[1] // 2, latent[2] // 2)
        N, heads, head_dim = math.prod(grid), cfg.num_attention_heads, cfg.attention_head_dim
        row = {"grid": grid, "video_tokens": N, "per_token_timesteps": bool(per_token), "text_tokens_per_prompt": L, "layers": cfg.num_layers,
               "heads": heads, "exactness": {}, "step": {}}
        print(json.dumps({"model": name, **{k: row[k] for k in ("grid", "video_tokens", "layers")}}), flush=True)
        layouts = {p: RegionLayout.from_masks(moving_boxes_masks(p, grid, seed=p), L, device) for p in prompts}
        p_check = prompts[-1]
        layout = layouts[p_check]
        # --- exactness of one cross-attention call
        generator = torch.Generator(device=device).manual_seed(1)
        h = min(heads, 12)
        q32 = torch.randn(1, N, h, head_dim, device=device, generator=generator)
        k32, v32 = (torch.randn(1, p_check * L, h, head_dim, device=device, generator=generator) for _ in range(2))
        reference = wan_cross_attention_dense(q32, k32, v32, layout)
        q, k, v = (t.to(dtype) for t in (q32, k32, v32))
        row["exactness"] = {
            "prompts": p_check, "heads_checked": h,
            "fast_fp32_vs_dense_fp32": rel_err(wan_cross_attention_fast(q32, k32, v32, layout), reference),
            "fast_vs_dense_fp32": rel_err(wan_cross_attention_fast(q, k, v, layout), reference),
            "dense_vs_dense_fp32": rel_err(wan_cross_attention_dense(q, k, v, layout), reference),
        }
        del q32, k32, v32, reference, q, k, v
        print("exactness", json.dumps(row["exactness"]), flush=True)
        # --- per transformer step
        generator = torch.Generator(device=device).manual_seed(2)
        latents = torch.randn(1, cfg.in_channels, *latent, device=device, dtype=dtype, generator=generator)
        # TI2V: one timestep per video token ([1, N]), as WanPipeline's expand_timesteps feeds it.
        timestep = torch.full((1, N) if per_token else (1,), 500, device=device, dtype=torch.long)

        def text(count):
            return torch.randn(1, count * L, cfg.text_dim, device=device, dtype=dtype, generator=generator)

        @torch.no_grad()
        def step(encoder_hidden_states):
            return transformer(hidden_states=latents, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                               return_dict=False)[0]

        stock_text = text(1)
        stock_ms, stock_mem = timed(lambda: step(stock_text), device, warmup, step_iters)
        row["step"]["stock"] = {"ms": stock_ms, "peak_gib": stock_mem}
        stock_out = step(stock_text)
        print(f"{name} step stock: {stock_ms:.1f} ms, peak {stock_mem:.2f} GiB", flush=True)
        loras = [random_lora(transformer, kind, 32, seed, WAN_TARGET_MODULES, "blocks")
                 for seed, kind in enumerate(["subject", "subject", "motion", "motion"])]
        with WanSR3AIController(transformer, L) as controller:
            one = RegionLayout.from_masks(np.ones((1, *grid), dtype=bool), L, device)
            controller.set_regions(one)
            row["exactness"]["step_one_prompt_vs_stock"] = rel_err(step(stock_text), stock_out)
            for p, layout in layouts.items():
                controller.set_regions(layout)
                encoder_hidden_states = text(p)
                cells = {}
                ms, mem = timed(lambda: step(encoder_hidden_states), device, warmup, step_iters)
                cells["sr3ai"] = {"ms": ms, "peak_gib": mem, "x_stock": ms / stock_ms}
                controller.set_loras([GatedLoRA(w, prompts=(min(i + 1, p - 1),), scale=1.0) for i, w in enumerate(loras)])
                ms, mem = timed(lambda: step(encoder_hidden_states), device, warmup, step_iters)
                cells["sr3ai_4_loras"] = {"ms": ms, "peak_gib": mem, "x_stock": ms / stock_ms}
                controller.set_loras([])
                if p == p_check and (args.tiny or name in ("wan2.1-1.3b", "wan2.2-ti2v-5b")):  # the whole step, fast vs the dense reference
                    fast = step(encoder_hidden_states)
                    for processor in transformer.attn_processors.values():
                        if hasattr(processor, "implementation"):
                            processor.implementation = "dense"
                    dense = step(encoder_hidden_states)
                    for processor in transformer.attn_processors.values():
                        if hasattr(processor, "implementation"):
                            processor.implementation = "fast"
                    row["exactness"]["step_fast_vs_dense"] = rel_err(fast, dense)
                    del fast, dense
                row["step"][f"P{p}"] = cells
                print(f"{name} step P={p}: " + ", ".join(
                    f"{n} {c['ms']:.1f} ms ({c['x_stock']:.3f}x, peak {c['peak_gib']:.2f} GiB)" for n, c in cells.items()),
                    flush=True)
        results["models"][name] = row
        del transformer, loras, latents
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
    print(json.dumps({m: r["exactness"] for m, r in results["models"].items()}))


if __name__ == "__main__":
    main()
