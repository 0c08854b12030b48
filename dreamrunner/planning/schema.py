"""What a planner answers, as pydantic models: the story outline and the scene-plan answer.

These are the wire formats the LLM is asked for (their JSON schemas drive structured output) and the
form the offline planner produces too. They are deliberately flat and close to the paper's plans:
a story-level scene is {scene, motions, narration}; a scene plan is a background and 6 keyframes of
entities [name, motion, description] with a box. Converting an answer into a `Scene` goes through
`dreamrunner.validation` (repair + validation), see `parsing.py`.

The schemas are written to be accepted by OpenAI's strict structured output: every property required,
no additional properties, nullable as anyOf-null, arrays bounded with minItems/maxItems.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..story import NUM_KEYFRAMES


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SceneOutline(Wire):
    """One scene of the story-level plan."""

    scene: str = Field(description="what happens in the scene, one or two sentences")
    motions: list[str] = Field(description="the motions performed in the scene, short phrases like 'walking'")
    narration: str = Field(description="the narration read over the scene")


class StoryOutline(Wire):
    """The story-level plan."""

    title: str = Field(description="a short title for the story")
    scenes: list[SceneOutline]


class EntityAnswer(Wire):
    name: str = Field(description="the entity's name; a character's exact name for a character")
    motion: str | None = Field(description="the entity's motion, or null when it does not move")
    description: str = Field(description="the region's caption; contains the character's token for a character")
    box: list[float] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] normalized to [0, 1], origin top-left")


class KeyFrameAnswer(Wire):
    entities: list[EntityAnswer]


class ScenePlanAnswer(Wire):
    """The scene-level (frame-level) plan."""

    background: str = Field(description="the background prompt of the scene")
    keyframes: list[KeyFrameAnswer] = Field(min_length=NUM_KEYFRAMES, max_length=NUM_KEYFRAMES)


def _strip_titles(node: Any) -> Any:
    # Pydantic adds a "title" to every property; they only add tokens to the request.
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def json_schema(model: type[BaseModel]) -> dict:
    """The JSON schema of an answer model, as sent for structured output."""
    return _strip_titles(copy.deepcopy(model.model_json_schema()))


def response_format(model: type[BaseModel], kind: str) -> dict | None:
    """The chat-completions `response_format` for `kind`: "json_schema", "json_object_schema" (JSON mode with
    the schema beside it: llama-cpp-python's server enforces it with a grammar), "json_object" or "text"."""
    if kind == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": model.__name__, "schema": json_schema(model), "strict": True}}
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": json_schema(model)}
    if kind == "json_object":
        return {"type": "json_object"}
    return None
