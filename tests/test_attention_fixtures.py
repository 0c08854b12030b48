"""Every published DreamRunner plan builds valid SR3AI regions on CogVideoX-2B's 13 x 30 x 45 token grid."""

import json
from pathlib import Path

import torch

from dreamrunner.attention import RegionLayout
from dreamrunner.plan_format import parse_plan
from dreamrunner.regions import build_region_plan

FIXTURES = Path(__file__).parent / "fixtures" / "dreamrunner_plans"


def test_all_published_plans_build_valid_region_layouts():
    count = 0
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for line_number, line in enumerate(path.read_text().splitlines(), 1):
            name, plan_string = json.loads(line)
            scene, _ = parse_plan(plan_string, scene_id=f"{path.stem}:{line_number}")
            plan = build_region_plan(scene, (13, 30, 45))
            layout = RegionLayout.from_plan(plan, text_tokens=226)  # raises on an uncovered token or empty prompt
            where = f"{path.name}:{line_number} ({name})"
            assert layout.num_video_tokens == 13 * 30 * 45 and layout.num_prompts == len(plan.prompts) >= 1, where
            assert all(prompt.strip() for prompt in plan.prompts), where
            assert plan.flat_masks().any(0).all(), where  # no token without a prompt
            assert sum(len(i) for i in layout.video_index) == plan.masks.sum(), where
            classes = layout.cover_classes()
            assert torch.equal(classes.order.sort().values, torch.arange(layout.num_video_tokens)), where
            count += 1
    assert count == 300
