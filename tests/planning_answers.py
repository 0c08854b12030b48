"""Recorded LLM answers shared by the planning tests."""

from __future__ import annotations

import json

from dreamrunner.planning.prompts import STORY_EXAMPLE_ANSWER
from dreamrunner.story import NUM_KEYFRAMES

STORY_ANSWER = json.dumps(STORY_EXAMPLE_ANSWER)


def scene_answer(shift: float = 0.0) -> dict:
    """A good scene-level answer: Mira walks right, Pip sits, a tree stands."""
    keyframes = []
    for k in range(NUM_KEYFRAMES):
        x = 0.1 + 0.08 * k + shift
        keyframes.append({"entities": [
            {"name": "Mira", "motion": "walking", "description": "A young witch walking", "box": [x, 0.3, x + 0.2, 0.9]},
            {"name": "Pip", "motion": None, "description": "A [v2] small black cat sitting", "box": [0.75, 0.7, 0.88, 0.9]},
            {"name": "tree", "motion": "none", "description": "an old oak tree", "box": [0.0, 0.0, 0.12, 0.9]},
        ]})
    return {"background": "a village lane at dawn", "keyframes": keyframes}


GOOD_SCENE = json.dumps(scene_answer())
