"""One Wan transformer step on 1 GPU vs split over N GPUs (diffusers' context parallelism), stock and SR3AI.

Launch one process per GPU; every rank first runs the step alone on its own GPU (the 1-GPU reference and
time), then the same step split over all ranks, and compares:

    torchrun --nproc-per-node 2 bench/bench_context_parallel.py --out bench/results/context_parallel_h200x2.json
    torchrun --nproc-per-node 2 bench/bench_context_parallel.py --mode ring      # ring attention (cuDNN SDPA)
    torchrun --nproc-per-node 2 bench/bench_context_parallel.py --tiny           # CPU, gloo: a smoke run

Full size: Wan 2.1 T2V 1.3B transformer with random weights (rank 0's, broadcast), bf16, 81 frames 480x832
(21 x 30 x 52 = 32760 video tokens), batch 1 per call as WanPipeline calls it, 512 UMT5 tokens per prompt.
Rows: stock (one prompt), SR3AI with 5 prompts (moving, overlapping boxes), SR3AI + 4 region-gated priors
(rank 32 on attn1 q/k/v/out and ffn in/out: 2 subject priors on odd blocks, 2 motion priors on even).
Per row: median ms per step on 1 GPU and on N, the speed-up, and the N-GPU output against the 1-GPU output
(max abs difference, max abs difference over max |reference|, norm-wise relative error). Rank 0 prints and
writes JSON. Random weights: costs and numerical agreement, not video quality.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform

import torch
import torch.distributed as dist
from bench_sr3ai import moving_boxes_masks, random_lora, rel_err, timed

from dreamrunner.attention import GatedLoRA, RegionLayout
from dreamrunner.attention.wan import WanSR3AIController
from dreamrunner.backends.parallel import MODES, enable_context_parallel
from dreamrunner.backends.wan import CHECKPOINTS, TINY_TEXT_TOKENS, VIDEO_DEFAULTS, tiny_transformer_config
from dreamrunner.priors.lora import WAN_TARGET_MODULES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CHECKPOINTS), default="wan2.1-1.3b")
    parser.add_argument("--mode", choices=MODES, default="ulysses")
    parser.add_argument("--prompts", type=int, default=5, help="SR3AI prompts, background included")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per row (after one warm-up)")
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU with gloo (smoke run, same code)")
    parser.add_argument("--out", default=None, help="rank 0 writes the results as JSON here")
    args = parser.parse_args()

    from diffusers import WanTransformer3DModel

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        dist.init_process_group("gloo")
        config, latent, L = tiny_transformer_config(), (3, 8, 12), TINY_TEXT_TOKENS
    else:
        device, dtype = torch.device("cuda", int(os.environ["LOCAL_RANK"])), torch.bfloat16
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
        video = VIDEO_DEFAULTS[args.model]
        config = CHECKPOINTS[args.model].transformer
        latent, L = ((video["num_frames"] - 1) // 4 + 1, video["height"] // 8, video["width"] // 8), 512
    iters = args.iters or (2 if args.tiny else 5)
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(**config).to(dtype).eval()
    for tensor in [*transformer.parameters(), *transformer.buffers()]:  # one model on every rank
        dist.broadcast(tensor.data, 0)
    cfg = transformer.config
    grid = (latent[0], latent[1] // 2, latent[2] // 2)
    generator = torch.Generator(device="cpu").manual_seed(2)
    latents = torch.randn(1, cfg.in_channels, *latent, generator=generator).to(device, dtype)
    timestep = torch.full((1,), 500, device=device, dtype=torch.long)
    texts = {count: torch.randn(1, count * L, cfg.text_dim, generator=generator).to(device, dtype)
             for count in (1, args.prompts)}
    layout = RegionLayout.from_masks(moving_boxes_masks(args.prompts, grid, seed=args.prompts), L, device)
    loras = [random_lora(transformer, kind, 32, seed, WAN_TARGET_MODULES, "blocks")
             for seed, kind in enumerate(["subject", "subject", "motion", "motion"])]
    gated = [GatedLoRA(w, prompts=(min(i + 1, args.prompts - 1),), scale=1.0) for i, w in enumerate(loras)]
    rows = {"stock": ([], texts[1]), f"sr3ai_P{args.prompts}": ([], texts[args.prompts]),
            f"sr3ai_P{args.prompts}_4_loras": (gated, texts[args.prompts])}

    @torch.no_grad()
    def step(text):
        return transformer(hidden_states=latents, encoder_hidden_states=text, timestep=timestep, return_dict=False)[0]

    def measure(name):
        priors, text = rows[name]
        if name == "stock":
            dist.barrier()
            return timed(lambda: step(text), device, 1, iters)[0], step(text)
        with WanSR3AIController(transformer, L) as controller:
            controller.set_regions(layout)
            controller.set_loras(priors)
            dist.barrier()
            return timed(lambda: step(text), device, 1, iters)[0], step(text)

    single = {name: measure(name) for name in rows}  # each rank alone on its GPU
    enable_context_parallel(transformer, world, args.mode)
    results = {
        "command": f"torchrun --nproc-per-node {world} bench/bench_context_parallel.py"
                   + (" --tiny" if args.tiny else f" --model {args.model}") + f" --mode {args.mode}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(dtype), "gpus": world, "mode": args.mode, "grid": grid,
        "video_tokens": math.prod(grid), "text_tokens_per_prompt": L, "weights": "random (noise)", "rows": {},
    }
    for name in rows:
        ms, out = measure(name)
        reference_ms, reference = single[name]
        difference = (out.float() - reference.float()).abs()
        row = {"ms_1_gpu": reference_ms, f"ms_{world}_gpus": ms, "speedup": reference_ms / ms,
               "max_abs_diff": float(difference.max()),
               "max_abs_diff_over_max_ref": float(difference.max() / reference.float().abs().max()),
               "rel_err": rel_err(out, reference)}
        results["rows"][name] = row
        if rank == 0:
            print(name, json.dumps(row), flush=True)
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
