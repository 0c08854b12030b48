"""Region schedule speed on CPU: the published plan with the most prompts, on CogVideoX-2B's 13 x 30 x 45 grid.

Baseline, in the same run: expanding the same plan into the dense (text + video)^2 boolean attention mask the
paper's code builds, which our attention avoids.

    python bench/bench_regions.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from dreamrunner.plan_format import parse_plan
from dreamrunner.regions import build_region_plan

PLANS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "dreamrunner_plans"
TEXT_TOKENS = 226


def densest_plan():
    best = None
    for path in sorted(PLANS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            name, plan = json.loads(line)
            scene, _ = parse_plan(plan, f"{path.stem}/{Path(name).stem}")
            count = build_region_plan(scene, (13, 30, 45)).num_prompts
            if best is None or count > best[0]:
                best = (count, scene)
    return best


def dense_mask(plan) -> np.ndarray:
    """The paper's L x L mask: text_i <-> text_i, text_i <-> region_i, video <-> video."""
    prompts = plan.num_prompts
    video = plan.flat_masks()
    text = prompts * TEXT_TOKENS
    total = text + video.shape[1]
    mask = np.zeros((total, total), dtype=bool)
    mask[text:, text:] = True
    for p in range(prompts):
        rows = slice(p * TEXT_TOKENS, (p + 1) * TEXT_TOKENS)
        mask[rows, rows] = True
        mask[rows, text:] = video[p]
        mask[text:, rows] = video[p][:, None]
    return mask


def timed(function, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    prompts, scene = densest_plan()
    ours = timed(lambda: build_region_plan(scene, (13, 30, 45)), args.repeats)
    dense = timed(lambda: dense_mask(build_region_plan(scene, (13, 30, 45))), max(3, args.repeats // 5))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"scene {scene.id}: {prompts} prompts (background included), grid 13 x 30 x 45")
    print(f"region plan (ours, O(P x tokens)):   {ours:8.2f} ms median of {args.repeats}")
    print(f"dense L x L mask (paper's baseline): {dense:8.2f} ms  -> ours is {dense / ours:.0f}x faster")


if __name__ == "__main__":
    main()
