"""DreamRunner Studio: story-to-video with dual-level planning, motion priors and SR3AI on CogVideoX.

The library never imports gradio; the editor in `ui/` calls into it.
"""

from .errors import DreamRunnerError
from .plan_format import format_plan, parse_plan
from .project import Project, ProjectError
from .regions import RegionPlan, build_region_plan, schedule_boxes
from .story import (
    Character,
    ClipRef,
    Entity,
    KeyFrame,
    Prior,
    PriorBinding,
    RenderResult,
    Scene,
    Story,
    StorySettings,
)
from .validation import StoryValidationError, repair_story_data, validate_story

__version__ = "0.1.0"
__all__ = [
    "Character", "ClipRef", "DreamRunnerError", "Entity", "KeyFrame", "Prior", "PriorBinding", "Project",
    "ProjectError", "RegionPlan", "RenderResult", "Scene", "Story", "StorySettings", "StoryValidationError",
    "build_region_plan", "format_plan", "parse_plan", "repair_story_data", "schedule_boxes", "validate_story",
]
