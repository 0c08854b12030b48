"""Dual-level planning (the paper's story-level and scene-level LLM plans) with any OpenAI-compatible
LLM or the built-in offline planner, and re-planning that keeps the user's edits. See docs/planning.md."""

from .base import MAX_SCENES, MIN_SCENES, Planner, PlanningError
from .llm import LLMPlanner
from .offline import MOTION_VOCABULARY, OfflinePlanner, motion_spec
from .parsing import bind_characters, parse_scene_answer, parse_story_answer
from .replan import REPLACEABLE, merge_scene, replan_scene, replan_story
from .schema import SceneOutline, ScenePlanAnswer, StoryOutline
from .settings import PlannerSettings, get_planner, settings_for_caller

__all__ = [
    "LLMPlanner", "MAX_SCENES", "MIN_SCENES", "MOTION_VOCABULARY", "OfflinePlanner", "Planner", "PlannerSettings",
    "PlanningError", "REPLACEABLE", "SceneOutline", "ScenePlanAnswer", "StoryOutline",
    "bind_characters", "get_planner", "merge_scene", "motion_spec",
    "parse_scene_answer", "parse_story_answer", "replan_scene", "replan_story",
    "settings_for_caller",
]
