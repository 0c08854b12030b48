"""The planner interface shared by the LLM planner and the offline planner, and the planning error.

A planner works at the paper's two levels:
- story level: a topic and the characters -> a story outline, 5-8 scenes of {scene, motions, narration};
- scene level: one scene's story-level fields -> background + 6 keyframes of [entity, motion, description]
  with boxes (the frame-level plan).
`plan_story` composes the two; `plan_prompt` is the paper's single-prompt (compositional text-to-video) use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from ..errors import DreamRunnerError
from ..jobs import CancelToken, ProgressCallback
from ..story import NUM_KEYFRAMES, Character, KeyFrame, Scene, Story
from ..validation import StoryValidationError, validate_story
from .schema import SceneOutline, StoryOutline

MIN_SCENES, MAX_SCENES = 5, 8  # the default story length range (the paper asks for 6-8)
SCENE_LIMIT = 12  # the most scenes one request may ask for


class PlanningError(DreamRunnerError):
    """Planning failed; nothing in the current story was changed.

    `raw` is the LLM's last raw answer (None when no answer came, e.g. a timeout), `attempts` every raw
    answer in order, `problems` what was wrong with the last one, for the UI to show.
    """

    def __init__(self, message: str, raw: str | None = None, attempts: Sequence[str] = (),
                 problems: Sequence[str] = ()):
        super().__init__(message)
        self.raw = raw
        self.attempts = list(attempts)
        self.problems = list(problems)


def scene_id_for(position: int) -> str:
    return f"s{position + 1}"


def check_num_scenes(num_scenes: int | None) -> None:
    if num_scenes is not None and not 1 <= num_scenes <= SCENE_LIMIT:
        raise PlanningError(f"num_scenes must be between 1 and {SCENE_LIMIT}, got {num_scenes}")


def scene_to_plan(story: Story, scene_id: str) -> Scene:
    """The scene a scene-level plan is asked for, refusing one with nothing to plan from."""
    try:
        scene = story.scene(scene_id)
    except KeyError:
        raise PlanningError(f"the story has no scene {scene_id!r}") from None
    if not (scene.description.strip() or scene.narration.strip() or scene.motions):
        raise PlanningError(f"scene {scene_id!r} has no description, narration or motions to plan its layout from; "
                            "write what happens in it first")
    return scene


def short_title(text: str, limit: int = 80) -> str:
    """A title from a topic or prompt: whole when it fits in `limit` characters, else cut at the last word
    boundary before it, with an ellipsis (never mid-word)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:.-") + "…"


def story_from_outline(outline: StoryOutline, topic: str, characters: Sequence[Character]) -> Story:
    """A story whose scenes hold the story-level fields and empty keyframes, ready for scene-level planning."""
    scenes = [
        Scene(
            id=scene_id_for(i),
            description=item.scene,
            narration=item.narration,
            motions=list(item.motions),
            background=item.scene,  # placeholder until the scene-level plan sets the background
            keyframes=[KeyFrame(index=k) for k in range(NUM_KEYFRAMES)],
        )
        for i, item in enumerate(outline.scenes)
    ]
    return Story(title=outline.title, topic=topic, characters=list(characters), scenes=scenes)


class Planner(ABC):
    """Plans stories and scenes. Results are new, validated objects; inputs are never modified."""

    #: Short name shown to users ("offline", "llm").
    name: str = "planner"

    @abstractmethod
    def plan_outline(self, topic: str, characters: Sequence[Character], num_scenes: int | None = None) -> StoryOutline:
        """Story level: a title and 5-8 scenes (exactly `num_scenes` when given) of {scene, motions, narration}."""

    @abstractmethod
    def plan_scene(self, story: Story, scene_id: str) -> Scene:
        """Scene level: the frame-level plan (background + 6 keyframes) of one scene of `story`, from its
        story-level fields (description, narration, motions). The scene keeps its id and story-level fields;
        character entities carry their character id and rare token."""

    #: Set by the caller: progress of a long plan, and the token that cancels it (between scenes; the LLM
    #: planner also mid-answer).
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None

    def plan_story(self, topic: str, characters: list[Character], num_scenes: int | None = None, *,
                   on_outline: Callable[[Story], None] | None = None,
                   on_scene: Callable[[Scene], None] | None = None, resume: Story | None = None) -> Story:
        """The story plan and every scene plan, validated. Each result goes to its callback as it arrives
        (`on_outline`: the story with unplanned scenes; `on_scene`: one planned scene) so the caller can
        commit it; `resume` (such a story, saved earlier) skips the story plan and the scenes planned already."""
        if resume is None:
            check_num_scenes(num_scenes)
            outline = self.plan_outline(topic, characters, num_scenes)
            story = story_from_outline(outline, topic, characters)
            if on_outline is not None:
                on_outline(story)
        else:
            story = resume
        todo = [scene.id for scene in story.scenes if not is_planned(scene)]
        planned = {scene.id: scene for scene in self.plan_scenes(story, todo, on_scene)}
        return with_scenes(story, [planned.get(scene.id, scene) for scene in story.scenes])

    def plan_scenes(self, story: Story, scene_ids: Sequence[str],
                    on_scene: Callable[[Scene], None] | None = None) -> list[Scene]:
        """The scene plans of `scene_ids`, one after another, each handed to `on_scene` when done."""
        scenes = []
        for scene_id in scene_ids:
            if self.cancel is not None:
                self.cancel.check()
            scene = self.plan_scene(story, scene_id)
            if on_scene is not None:
                on_scene(scene)
            scenes.append(scene)
        return scenes

    def plan_prompt(self, prompt: str, characters: Sequence[Character] = ()) -> Story:
        """Single-prompt mode: one prompt -> a one-scene story whose scene plan lays the prompt out."""
        prompt = prompt.strip()
        if not prompt:
            raise PlanningError("the prompt is empty")
        outline = StoryOutline(title=short_title(prompt), scenes=[SceneOutline(scene=prompt, motions=[], narration=prompt)])
        story = story_from_outline(outline, prompt, characters)
        scene = self.plan_scene(story, story.scenes[0].id)
        if not scene.motions:
            motions = list(dict.fromkeys(e.motion for k in scene.keyframes for e in k.entities if e.motion))
            scene = scene.model_copy(update={"motions": motions})
        return with_scenes(story, [scene])


def is_planned(scene: Scene) -> bool:
    """Whether a scene has its scene-level plan (an entity in a keyframe), e.g. one saved before a failure."""
    return any(keyframe.entities for keyframe in scene.keyframes)


def with_scenes(story: Story, scenes: list[Scene]) -> Story:
    """A new story with `scenes`, validated as a whole (character references included)."""
    data = story.model_dump()
    data["scenes"] = [scene.model_dump() for scene in scenes]
    try:
        return validate_story(data)
    except StoryValidationError as error:
        raise PlanningError(f"the planned story is not valid: {error}", problems=[str(p) for p in error.problems]) from None
