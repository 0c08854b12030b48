"""Prompt templates for the two planning levels, each with one worked in-context example.

Written for this project after the paper's description of its GPT-4o prompts: the story level asks
for 5-8 scenes of {scene, motions, narration}; the scene level asks for a background and 6 keyframes
of [entity, motion, description] with a box, where overlapping boxes share one unified caption.
The examples are real answers in the exact JSON the parser reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..story import NUM_KEYFRAMES, Character, Scene, Story

STORY_SYSTEM = """You are the story planner of DreamRunner Studio, a tool that turns a story into a multi-scene video.
Write a story plan for a short video. Each scene is about 6 seconds of video, so keep every scene to one
clear, visible action. Answer with one JSON object and nothing else:
{"title": str, "scenes": [{"scene": str, "motions": [str, ...], "narration": str}, ...]}
- "scene": what the camera sees, in one or two sentences; name the characters by their names.
- "motions": the distinct motions performed in the scene, each a short verb phrase (e.g. "walking",
  "waving", "riding a bicycle"); 1 to 3 per scene.
- "narration": one or two sentences read aloud over the scene.
Every character must appear in at least one scene. Keep the characters' looks consistent."""

STORY_EXAMPLE_REQUEST = {
    "topic": "a witch's first day delivering potions",
    "characters": [{"name": "Mira", "description": "a young witch with a pointed hat"},
                   {"name": "Pip", "description": "a small black cat"}],
    "scenes": 6,
}

STORY_EXAMPLE_ANSWER = {
    "title": "Mira's First Delivery",
    "scenes": [
        {"scene": "Mira stirs a bubbling cauldron in her cottage while Pip watches from a shelf.",
         "motions": ["stirring a pot", "sitting"],
         "narration": "On the morning of her first delivery, Mira brewed the potion with great care."},
        {"scene": "Mira and Pip walk out of the cottage door into the village lane.",
         "motions": ["walking"],
         "narration": "With the bottle packed, the two friends set off."},
        {"scene": "Mira flies on her broom above the rooftops with Pip riding behind her.",
         "motions": ["flying"],
         "narration": "They rose above the rooftops, the wind tugging at Mira's hat."},
        {"scene": "A gust of wind blows Mira's hat away and Pip jumps to catch it.",
         "motions": ["jumping", "flying"],
         "narration": "A sudden gust stole her hat, but Pip was quicker."},
        {"scene": "Mira lands in front of the baker's shop and knocks on the door.",
         "motions": ["landing", "knocking on a door"],
         "narration": "At last they reached the baker's shop."},
        {"scene": "Mira and Pip wave goodbye to the baker and walk home at sunset.",
         "motions": ["waving", "walking"],
         "narration": "Her first delivery done, Mira headed home, proud and tired."},
    ],
}

SCENE_SYSTEM = f"""You are the scene planner of DreamRunner Studio. For one scene of a story, plan the layout of a
6-second video as {NUM_KEYFRAMES} keyframes evenly spaced in time. Answer with one JSON object and nothing else:
{{"background": str, "keyframes": [{{"entities": [{{"name": str, "motion": str or null, "description": str,
"box": [x0, y0, x1, y1]}}, ...]}}, ... exactly {NUM_KEYFRAMES} keyframes]}}
- "background": a caption of the setting alone, without the characters.
- Each entity is a region of the frame: "name" (for a character, exactly the character's name),
  "motion" (one of the scene's motions, or null when it does not move), "description" (a caption of the
  region as a text-to-video prompt; for a character, write its token right before what it is, e.g.
  "A [v1] young witch flying on a broom").
- "box": the region, normalized to [0, 1], (left, top, right, bottom), origin top-left, x0 < x1, y0 < y1.
  Size entities realistically, keep them on the ground unless they fly, and move the boxes of moving
  entities smoothly from keyframe to keyframe in the direction of their motion.
- When two entities' boxes overlap, give both the same unified description covering both of them
  (e.g. "A [v1] girl hugging a [v2] dog").
- List every entity in every keyframe where it is visible, with the same name in each."""

SCENE_EXAMPLE_REQUEST = {
    "scene": "Mira flies on her broom above the rooftops with Pip riding behind her.",
    "motions": ["flying"],
    "narration": "They rose above the rooftops, the wind tugging at Mira's hat.",
    "characters": [{"name": "Mira", "token": "[v1]", "description": "a young witch with a pointed hat"},
                   {"name": "Pip", "token": "[v2]", "description": "a small black cat"}],
}


def _box(*values: float) -> list[float]:
    return [round(v, 2) for v in values]


def _example_scene_answer() -> dict:
    keyframes = []
    for k in range(NUM_KEYFRAMES):
        x = round(0.05 + 0.09 * k, 2)
        y = round(0.40 - 0.05 * k, 2)
        unified = "A [v1] young witch with a pointed hat flying on a broom with a [v2] small black cat riding behind her"
        keyframes.append({"entities": [
            {"name": "Mira", "motion": "flying", "description": unified, "box": _box(x + 0.1, y, x + 0.4, y + 0.35)},
            {"name": "Pip", "motion": "flying", "description": unified, "box": _box(x, y + 0.12, x + 0.14, y + 0.3)},
            {"name": "chimney", "motion": None, "description": "a brick chimney on a tiled roof",
             "box": [0.78, 0.62, 0.9, 1.0]},
        ]})
    return {"background": "tiled village rooftops and chimneys under a clear morning sky", "keyframes": keyframes}


SCENE_EXAMPLE_ANSWER = _example_scene_answer()


def _characters(characters: Sequence[Character], with_tokens: bool) -> list[dict]:
    rows = []
    for character in characters:
        row = {"name": character.name}
        if with_tokens:
            row["token"] = character.token
        row["description"] = character.description or character.name
        rows.append(row)
    return rows


def story_messages(topic: str, characters: Sequence[Character], num_scenes: int | None) -> list[dict]:
    request = {"topic": topic, "characters": _characters(characters, with_tokens=False),
               "scenes": num_scenes if num_scenes is not None else "5 to 8"}
    return [
        {"role": "system", "content": STORY_SYSTEM},
        {"role": "user", "content": json.dumps(STORY_EXAMPLE_REQUEST, ensure_ascii=False)},
        {"role": "assistant", "content": json.dumps(STORY_EXAMPLE_ANSWER, ensure_ascii=False)},
        {"role": "user", "content": json.dumps(request, ensure_ascii=False)},
    ]


def story_summary(story: Story, scene: Scene, limit: int = 90) -> list[str]:
    """The story plan in one short line per scene, the planned scene marked: what a scene plan needs of the
    rest of the story (never the other scenes' keyframes, which would grow the prompt scene by scene)."""
    lines = []
    for number, other in enumerate(story.scenes, 1):
        text = " ".join((other.description or other.narration).split())
        text = text if len(text) <= limit else text[:limit - 1] + "…"
        lines.append(f"{number}. {'(THIS SCENE) ' if other.id == scene.id else ''}{text}")
    return lines


def scene_messages(scene: Scene, characters: Sequence[Character], topic: str = "",
                   story: Story | None = None) -> list[dict]:
    request = {"scene": scene.description or scene.narration, "motions": scene.motions, "narration": scene.narration,
               "characters": _characters(characters, with_tokens=True)}
    if story is not None and len(story.scenes) > 1:
        request = {"story": story_summary(story, scene), **request}
    if topic:
        request = {"story topic": topic, **request}
    return [
        {"role": "system", "content": SCENE_SYSTEM},
        {"role": "user", "content": json.dumps(SCENE_EXAMPLE_REQUEST, ensure_ascii=False)},
        {"role": "assistant", "content": json.dumps(SCENE_EXAMPLE_ANSWER, ensure_ascii=False)},
        {"role": "user", "content": json.dumps(request, ensure_ascii=False)},
    ]


def feedback_message(problems: Sequence[str], cut_off: bool = False) -> dict:
    """What the LLM is told after an unusable answer, so its next attempt can fix it."""
    lines = "\n".join(f"- {p}" for p in problems)
    extra = " Your answer was cut off: keep descriptions shorter so the whole JSON fits." if cut_off else ""
    return {"role": "user", "content": f"Your answer could not be used:\n{lines}\n{extra}Answer again with the complete, "
                                       "corrected JSON object only."}
