"""The whole paper pipeline in one call: topic and characters in, stitched story video out.

    plan    story plan + scene plans (LLM or offline planner), characters' reference images stored
    clips   per motion: retrieve reference clips and approve the best (top-k, score threshold)
    train   a subject prior per character with images, a motion prior per motion with clips, each bound
            to the scenes it belongs to
    render  every scene with SR3AI and its bound priors
    export  the chosen renders stitched into one mp4 with subtitles and a manifest

Each stage is a small function of the run (project, options, progress, cancel) and commits what it makes
through `dreamrunner.edits` inside `Project.edit()`, the same calls the editor makes, so the editor and
`dreamrunner story` make the same project from the same choices. Each stage looks first whether its result
is already there and unchanged and then does nothing: the plan when the project holds a story of the same
topic and characters, clips when a motion has approved clips, priors whose card names the same model,
sources and settings (`priors.current_prior`), renders by their content-keyed cache, the export when its
manifest lists the clips it would use. So a run stopped anywhere (Ctrl-C, a crash, `until=`) resumes where
it stopped, and a second run does no work. The model is loaded only when a stage has something to compute.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import edits
from .backends import MemoryOptions, ModelComponents, load_backend, model_name
from .errors import DreamRunnerError
from .jobs import CancelToken, ProgressCallback
from .project import PROJECT_FILE, Project
from .story import Character, Prior, Story

if TYPE_CHECKING:
    from .priors import PriorOutcome
    from .rendering.story_render import SceneRenderOutcome

STAGES = ("plan", "clips", "train", "render", "export")
DEFAULT_VIDEO = "story.mp4"


class StoryPipelineError(DreamRunnerError):
    pass


@dataclass(frozen=True)
class CastMember:
    """A character asked for: name, description and an optional reference image file."""

    name: str
    description: str = ""
    image: Path | None = None
    given_as: str = ""  # how the caller named it, for messages (the CLI: its --character option)


@dataclass
class StoryOptions:
    topic: str
    cast: list[CastMember]
    scenes: int | None = None  # None: the planner's choice (5-8)
    planner: Any = None  # a dreamrunner.planning Planner; None: the offline planner
    force: bool = False  # plan anew even where the folder holds a story from other inputs
    # clips
    catalog: str | None = None  # None: the demo catalog
    clips_per_motion: int = 4
    min_score: float | None = None  # approve only clips scoring at least this (retrieval's final score)
    detector: str | None = "motion"  # the demo clips' drawn figures escape HOG (dreamrunner/assets/clips/README.md)
    clip_model: str | None = "openai/clip-vit-base-patch32"
    # model, for training and rendering
    backend: str | None = None  # None: the project's render backend
    model_path: str | None = None
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    train_steps: int | None = None  # saved as prior.max_steps (as the editor's field does)
    render_steps: int | None = None  # saved as render.steps
    variants: int | None = None
    # export
    video: Path | None = None  # default: <folder>/story.mp4
    crossfade_frames: int = 0
    burn_subtitles: bool = False
    until: str = "export"


class Listener:
    """What a run tells its caller besides progress; the CLI's Reporter has the same methods."""

    def stage(self, stage: str, status: str, message: str = "", **data: Any) -> None: ...

    def note(self, message: str, **data: Any) -> None: ...

    def warn(self, message: str) -> None: ...


@dataclass
class StoryResult:
    folder: Path
    video: Path | None
    stages: dict[str, str]  # stage -> "done" (did work) or "skipped" (its result was already there)


class StoryRun:
    """One run of the pipeline over a project folder; `run()` goes through the stages up to `options.until`."""

    def __init__(self, folder: str | Path, options: StoryOptions, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, listener: Listener | None = None,
                 components: ModelComponents | None = None) -> None:
        if options.until not in STAGES:
            raise StoryPipelineError(f"until must be one of {', '.join(STAGES)}, got {options.until!r}")
        self.folder = Path(folder)
        self.options = options
        self.progress = progress
        self.cancel = cancel or CancelToken()
        self.listener = listener or Listener()
        self.project: Project | None = None
        self._components = components

    @property
    def backend(self) -> str:
        return self.options.backend or self.project.story.settings.render.backend

    def components(self) -> ModelComponents:
        """The model, loaded at the first stage that computes something and shared by training and rendering."""
        if self._components is None:
            self.listener.note(f"loading the {self.backend} backend")
            self._components = load_backend(self.backend, self.options.model_path, memory=self.options.memory)
        return self._components

    def stage_function(self, name: str) -> Callable[[StoryRun], StageOutcome]:
        """The function of stage `name` (dreamrunner.distributed's run puts its task graph in for train and render)."""
        return STAGE_FUNCTIONS[name]

    def run(self) -> StoryResult:
        stages: dict[str, str] = {}
        video = None
        for name in STAGES[: STAGES.index(self.options.until) + 1]:
            self.cancel.check()
            self.listener.stage(name, "started")
            did_work, message, data = self.stage_function(name)(self)
            stages[name] = "done" if did_work else "skipped"
            self.listener.stage(name, stages[name], message, **data)
            if name == "export":
                video = Path(data["video"])
        return StoryResult(self.folder, video, stages)


StageOutcome = tuple[bool, str, dict]


def _characters(cast: list[CastMember]) -> list[Character]:
    story = Story()
    return [edits.add_character(story, member.name, member.description) for member in cast]  # the editor's rules


def check_images(cast: list[CastMember]) -> None:
    """Read every reference image by the editor's rules before any work (a bad one raises a named error)."""
    from .media import ImageFileError, load_reference_image

    for member in cast:
        if member.image is not None:
            try:
                load_reference_image(member.image)
            except ImageFileError as error:
                raise type(error)(f"{member.given_as or f'character {member.name!r}'}: {error}") from None


def new_project(folder: Path, story: Story, cast: list[CastMember], overwrite: bool = False) -> Project:
    """A planned story saved as a new project, each character's reference image stored as the editor stores
    uploads (`edits.add_reference_images`). `story.characters` are the cast, in order."""
    project = Project.create(folder, story, overwrite=overwrite)
    with project.edit():
        for character, member in zip(project.story.characters, cast):
            if member.image is not None:
                edits.add_reference_images(project, character.id, [member.image])
    return project


def resumable(project: Project, topic: str, cast: list[CastMember], scenes: int | None) -> bool:
    """Whether the folder holds a plan of these inputs saved part way (some scene plans missing)."""
    from .planning.base import is_planned

    story = project.story
    return (bool(story.scenes) and not all(is_planned(s) for s in story.scenes)
            and not plan_differences(project, topic, cast, scenes))


def plan_and_save(folder: Path, planner: Any, topic: str, cast: list[CastMember], scenes: int | None, *,
                  overwrite: bool = False, resume: Project | None = None,
                  note: Callable[[str], None] = lambda message: None) -> Project:
    """Plan a story into the project at `folder`, committing the story plan (a new project) and each scene plan
    (`edits.store_scene_plan`) as the planner hands them over, so a failure or a cancel keeps what was
    finished. `resume`: the project at `folder` holding such a plan saved part way (`resumable`); the scene
    plans it has are kept and not asked for again."""
    from .planning.base import is_planned

    holder: dict[str, Project] = {}
    if resume is not None:
        holder["project"] = resume
        story = resume.story
        done = sum(1 for scene in story.scenes if is_planned(scene))
        note(f"resuming the plan saved in {folder}: {done} of {len(story.scenes)} scene plans are there; "
             f"planning the other {len(story.scenes) - done}")

    def on_outline(story: Story) -> None:
        holder["project"] = new_project(folder, story, cast, overwrite=overwrite)
        note(f"saved the story plan ({len(story.scenes)} scenes, {story.title!r}) in {folder}")

    def on_scene(scene) -> None:
        project = holder["project"]
        with project.edit():
            edits.store_scene_plan(project.story, scene)
        note(f"saved the plan of scene {scene.id!r}")

    planner.plan_story(topic, _characters(cast), scenes, on_outline=on_outline, on_scene=on_scene,
                       resume=None if resume is None else resume.story)
    return holder["project"]


def _differences(project: Project, options: StoryOptions) -> list[str]:
    return plan_differences(project, options.topic, options.cast, options.scenes)


def plan_differences(project: Project, topic: str, cast: list[CastMember], scenes: int | None) -> list[str]:
    """How the folder's story differs from a plan asked for with these inputs (empty: it is that plan,
    finished or saved part way, see `plan_and_save`)."""
    from .media import load_image, load_reference_image

    story = project.story
    differences = []
    if story.topic.strip() != topic.strip():
        differences.append(f"its topic is {story.topic!r}")
    have = [(c.name, c.description) for c in story.characters]
    want = [(m.name.strip(), m.description.strip()) for m in cast]
    if have != want:
        differences.append(f"its characters are {', '.join(n for n, _ in have) or 'none'}")
    elif any(m.image is not None for m in cast):
        for character, member in zip(story.characters, cast):
            if member.image is None:
                continue
            wanted = np.asarray(load_reference_image(member.image, story.settings.reference_background))
            stored = [np.asarray(load_image(project.resolve(p))) for p in character.reference_images[:1]]
            if not stored or stored[0].shape != wanted.shape or not np.array_equal(stored[0], wanted):
                differences.append(f"{character.name}'s reference image is another picture")
    if scenes is not None and scenes != len(story.scenes):
        differences.append(f"it has {len(story.scenes)} scenes")
    return differences


def plan_stage(run: StoryRun) -> StageOutcome:
    options = run.options
    if not options.topic.strip():
        raise StoryPipelineError("the topic is empty")
    if not options.cast:
        raise StoryPipelineError("give at least one character")
    check_images(options.cast)
    done = False
    resume = None
    if (run.folder / PROJECT_FILE).is_file() and not options.force:
        run.project = Project.load(run.folder)
        differences = _differences(run.project, options)
        if differences:
            raise StoryPipelineError(
                f"{run.folder} holds a story planned from other inputs ({'; '.join(differences)}); choose "
                f"another folder, or pass force (--force) to plan it anew")
        if resumable(run.project, options.topic, options.cast, options.scenes):
            resume = run.project
        message = f"{len(run.project.story.scenes)} scenes already planned"
    if resume is not None or run.project is None or options.force:
        from .planning import OfflinePlanner

        planner = options.planner or OfflinePlanner()
        planner.progress, planner.cancel = run.progress, run.cancel
        if hasattr(planner, "note"):  # the LLM planner names each retry and repair as it happens
            planner.note = run.listener.note
        run.cancel.check()
        run.project = plan_and_save(run.folder, planner, options.topic, options.cast, options.scenes,
                                    overwrite=options.force, resume=resume, note=run.listener.note)
        if not hasattr(planner, "note"):
            for repair in getattr(planner, "last_repairs", []):
                run.listener.note(f"repaired {repair}")
        story = run.project.story
        message = f"planned {len(story.scenes)} scenes of {story.title!r}"
        done = True
    _apply_settings(run)
    return done, message, {"scenes": len(run.project.story.scenes)}


def _apply_settings(run: StoryRun) -> None:
    """The run's model and step options as the project's settings (the editor's fields set the same ones),
    so later commands and the editor see what the priors and renders were made with."""
    options = run.options
    wanted = {"render.backend": options.backend, "prior.max_steps": options.train_steps,
              "render.steps": options.render_steps}
    with run.project.edit():
        for path, value in wanted.items():
            if value is not None:
                if (note := edits.set_setting(run.project.story, path, value)) is not None:
                    run.listener.note(note)


def _motions(story: Story) -> list[str]:
    return list(dict.fromkeys(m for scene in story.scenes for m in scene.motions))


def clips_stage(run: StoryRun) -> StageOutcome:
    from .retrieval import ClipCatalog, RetrievalSettings, default_demo_catalog, retrieve_clips

    options, project = run.options, run.project
    catalog = None
    approved: dict[str, list[str]] = {}
    missing = []
    for motion in _motions(project.story):
        if any(c.motion == motion for s in project.story.scenes for c in s.approved_clips):
            continue
        run.cancel.check()
        if catalog is None:
            catalog = ClipCatalog.open(options.catalog) if options.catalog else default_demo_catalog()
        with tempfile.TemporaryDirectory(prefix="dreamrunner-clips-") as cut:
            settings = RetrievalSettings(max_clips=options.clips_per_motion,
                                         min_clips=min(4, options.clips_per_motion), detector=options.detector,
                                         clip_model=options.clip_model, output_dir=cut)
            result = retrieve_clips(motion, catalog, settings, progress=run.progress, cancel=run.cancel)
            chosen = [c for c in result.clips if c.path and (options.min_score is None or c.score >= options.min_score)]
            if not chosen:
                missing.append(motion)
                run.listener.warn(f"no clips for {motion!r} ({'; '.join(result.warnings) or 'none scored high enough'}): "
                                  f"its scenes render without a motion prior")
                continue
            # One set of clips per motion, approved in the first scene that has it: the motion prior trains on
            # the clips approved for the motion anywhere in the story and binds to every scene with it.
            scene = next(s for s in project.story.scenes if motion in s.motions)
            with project.edit():
                for clip in chosen:
                    edits.approve_clip(project, scene.id, motion, clip.path, clip.id, clip.caption, clip.score,
                                       "retrieval")
        approved[motion] = [c.id for c in chosen]
        run.listener.note(f"approved {len(chosen)} clip(s) for {motion!r} in scene {scene.id}: "
                          f"{', '.join(approved[motion])}")
    message = (f"approved clips for {len(approved)} motion(s)" if approved else "every motion has its clips") + (
        f"; none found for {', '.join(missing)}" if missing else "")
    return bool(approved), message, {"approved": approved, "without_clips": missing}


def prior_targets(run: StoryRun) -> tuple[list[tuple[str, str]], list[str]]:
    """The priors the story needs, as (kind, target) still to train and the ids of those up to date: a subject
    prior per character with an image, a motion prior per motion with approved clips (`priors.current_prior`)."""
    from .backends import UNTRAINED_PRIORS
    from .priors import current_prior, motion_request, subject_request

    project = run.project
    story = project.story
    if run.backend in UNTRAINED_PRIORS:  # priors/service.train_prior refuses them (docs/rendering.md)
        run.listener.warn(f"priors do not train on {run.backend} ({UNTRAINED_PRIORS[run.backend]}) yet: its scenes "
                          f"render with the priors already bound, and no new ones")
        return [], []
    targets = [("subject", c.id) for c in story.characters if c.reference_images]
    for character in story.characters:
        if not character.reference_images:
            run.listener.warn(f"{character.name} has no reference image: no subject prior")
    targets += [("motion", m) for m in _motions(story) if any(c.motion == m for s in story.scenes for c in s.approved_clips)]
    todo, current = [], []
    for kind, target in targets:
        request = (subject_request if kind == "subject" else motion_request)(project, target)
        prior = current_prior(project, request, model_name(run.backend))
        if prior is None:
            todo.append((kind, target))
        else:
            current.append(prior.id)
    return todo, current


def commit_prior(run: StoryRun, prior: Prior, outcome: PriorOutcome) -> None:
    """Register a finished prior in the story, bound to its scenes, and say so."""
    with run.project.edit():
        bound = edits.register_prior(run.project.story, prior)
    experts = len(outcome.card.get("experts") or ()) or 1  # Wan 2.2 A14B: the steps are each expert's
    how = ("reused its cached file" if outcome.cached else f"trained {outcome.card.get('steps')} steps"
           + (f" on each of its {experts} experts" if experts > 1 else ""))
    run.listener.note(f"{prior.id}: {how}, bound to {', '.join(bound) or 'no scene'}")


def train_outcome(trained: list[str], current: list[str]) -> StageOutcome:
    message = f"trained {', '.join(trained)}" if trained else f"{len(current)} prior(s) up to date"
    return bool(trained), message, {"trained": trained, "up_to_date": current}


def train_stage(run: StoryRun) -> StageOutcome:
    from .priors import train_motion, train_subject

    todo, current = prior_targets(run)
    trained = []
    for kind, target in todo:
        run.cancel.check()
        train = train_subject if kind == "subject" else train_motion
        prior, outcome = train(run.project, target, run.components(), progress=run.progress, cancel=run.cancel,
                               device=run.options.memory.device)
        commit_prior(run, prior, outcome)
        trained.append(prior.id)
    return train_outcome(trained, current)


def note_render(run: StoryRun, index: int, outcome: SceneRenderOutcome) -> None:
    run.listener.note(f"scene {index + 1} ({outcome.scene_id}) seed {outcome.seed}: "
                      f"{'cached' if outcome.cached else 'rendered'} {outcome.path}",
                      scene=outcome.scene_id, seed=outcome.seed, cached=outcome.cached, path=outcome.path)


def render_outcome(run: StoryRun, outcomes: list[SceneRenderOutcome]) -> StageOutcome:
    rendered = [o.scene_id for o in outcomes if not o.cached]
    cached = [o.scene_id for o in outcomes if o.cached]
    if run.backend.startswith("tiny") and rendered:
        run.listener.note("the tiny backend has random weights: these clips are noise, labelled as such")
    message = f"rendered {len(rendered)}, cached {len(cached)}"
    return bool(rendered), message, {"rendered": rendered, "cached": cached}


def render_stage(run: StoryRun) -> StageOutcome:
    from .rendering.story_render import StoryRenderer, commit_to

    project = run.project
    renderer = StoryRenderer(project, run.backend, model_path=run.options.model_path, memory=run.options.memory,
                             components=run.components)
    commit = commit_to(project)
    outcomes = []
    for index in range(len(project.story.scenes)):
        for outcome in renderer.render_scene(index, commit, variants=run.options.variants, progress=run.progress,
                                             cancel=run.cancel):
            outcomes.append(outcome)
            note_render(run, index, outcome)
    return render_outcome(run, outcomes)


def export_stage(run: StoryRun) -> StageOutcome:
    from .export import export_is_current, export_story

    options, project = run.options, run.project
    out = Path(options.video) if options.video else run.folder / DEFAULT_VIDEO
    choices = {"crossfade_frames": options.crossfade_frames, "burn_subtitles": options.burn_subtitles}
    if export_is_current(project, out, **choices):
        return False, f"{out} is up to date", {"video": str(out), "manifest": str(out.with_suffix(".json"))}
    result = export_story(project, out, **choices, progress=run.progress, cancel=run.cancel)
    message = f"wrote {out} ({result.num_frames} frames, {result.duration:.2f} s)"
    return True, message, {"video": str(out), "manifest": str(result.manifest)}


STAGE_FUNCTIONS: dict[str, Callable[[StoryRun], StageOutcome]] = {
    "plan": plan_stage, "clips": clips_stage, "train": train_stage, "render": render_stage, "export": export_stage,
}
