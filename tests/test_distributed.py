"""A story's priors and renders on Ray (dreamrunner.distributed): one local Ray cluster for the module, with two
GPUs declared (fake: the tasks run the tiny backend on the CPU), and a 3-scene, 2-character story.

The task graph makes the same project as the serial run; a worker killed mid-task is restarted by Ray and its
task run again; a task that fails is named while the others are committed; cancel stops every task; a second
run submits nothing; models load once per worker; without Ray, --ray is a named error saying how to install.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreamrunner import edits
from dreamrunner.cli import main
from dreamrunner.files import ASSETS_DIR
from dreamrunner.jobs import Cancelled, CancelToken
from dreamrunner.project import Project
from dreamrunner.story import Character, Entity, KeyFrame, Scene, Story, StorySettings
from dreamrunner.story_pipeline import CastMember, StoryOptions, StoryRun
from tests.render_helpers import TINY_VIDEO

ray = pytest.importorskip("ray")
distributed = pytest.importorskip("dreamrunner.distributed")

CLIPS = ASSETS_DIR / "clips"
TOPIC = "Mia and the owl"


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module: 2 CPUs, 2 declared GPUs (the workers' tasks run on the CPU)."""
    ray.init(num_cpus=2, num_gpus=2, log_to_driver=False, include_dashboard=False)
    try:
        yield distributed.RayCluster()
    finally:
        ray.shutdown()


def entity(name: str, character: str, motion: str, x: float, y: float = 0.4) -> Entity:
    return Entity(name=name, character_id=character, motion=motion, description=f"{name} {motion}",
                  box=(x, y, x + 0.35, y + 0.45))


def scene(scene_id: str, motions: list[str], *entities: Entity) -> Scene:
    return Scene(id=scene_id, narration=f"Scene {scene_id}.", motions=motions, background="a green forest",
                 keyframes=[KeyFrame(index=k, entities=list(entities)) for k in range(6)])


def cast(folder: Path) -> list[CastMember]:
    Image.new("RGB", (64, 64), (20, 20, 20)).save(folder / "mia.png")
    Image.new("RGB", (64, 80), (140, 90, 40)).save(folder / "owl.png")
    return [CastMember("Mia", "a small black cat", folder / "mia.png"),
            CastMember("Owl", "an old owl", folder / "owl.png")]


def make_project(folder: Path, members: list[CastMember]) -> Path:
    """3 scenes, 2 characters with a reference image each, 2 motions with approved clips: 4 priors, 6
    variants (2 per scene); scene s3 needs only the owl's priors."""
    story = Story(title="Mia and the owl", topic=TOPIC, characters=[
        Character(id="mia", name="Mia", token="[v1]", description="a small black cat"),
        Character(id="owl", name="Owl", token="[v2]", description="an old owl")], scenes=[
        scene("s1", ["walking", "flying"], entity("cat", "mia", "walking", 0.05), entity("owl", "owl", "flying", 0.5, 0.1)),
        scene("s2", ["walking"], entity("cat", "mia", "walking", 0.4)),
        scene("s3", ["flying"], entity("owl", "owl", "flying", 0.3, 0.1)),
    ])
    settings = StorySettings(video=TINY_VIDEO)
    settings.render.variants = 2
    story.settings = settings
    project = Project.create(folder, story)
    with project.edit():
        for character, member in zip(project.story.characters, members):
            edits.add_reference_images(project, character.id, [member.image])
        edits.approve_clip(project, "s1", "walking", CLIPS / "bunny-stretches.mp4")
        edits.approve_clip(project, "s1", "flying", CLIPS / "synthetic-jump-1.mp4")
    return folder


def options(members: list[CastMember], until: str = "export") -> StoryOptions:
    return StoryOptions(topic=TOPIC, cast=members, backend="tiny", train_steps=2, render_steps=2, until=until)


def comparable(folder: Path) -> dict:
    """The project's story without what differs between two runs of the same work: timings and revision."""
    story = Project.load(folder).story.model_dump(mode="json")
    for prior in story["priors"]:
        prior["card"].pop("train_seconds")
    return story


class Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.stages: dict[str, str] = {}

    def stage(self, stage, status, message="", **data):
        if status != "started":
            self.stages[stage] = status

    def note(self, message, **data):
        self.notes.append(message)

    def warn(self, message):
        self.notes.append(message)


@pytest.fixture(scope="module")
def story_folders(tmp_path_factory):
    """The same project made twice, for a serial and a Ray run."""
    root = tmp_path_factory.mktemp("story")
    members = cast(root)
    make_project(root / "serial", members)
    shutil.copytree(root / "serial", root / "ray")
    return root, members


def test_the_task_graph_makes_the_serial_project_and_a_rerun_submits_nothing(cluster, story_folders):
    root, members = story_folders
    serial = StoryRun(root / "serial", options(members), listener=Recorder()).run()
    assert serial.stages == {"plan": "skipped", "clips": "skipped", "train": "done", "render": "done",
                             "export": "done"}

    updates = []
    listener = Recorder()
    result = distributed.RayStoryRun(root / "ray", options(members), progress=updates.append, listener=listener,
                                     cluster=cluster).run()
    assert result.stages == serial.stages
    assert comparable(root / "ray") == comparable(root / "serial")
    story = Project.load(root / "ray").story
    assert {p.id for p in story.priors} == {"subject-mia", "subject-owl", "motion-walking", "motion-flying"}
    assert [len(s.renders) for s in story.scenes] == [2, 2, 2]
    assert (root / "ray" / "story.mp4").is_file()
    # One view of every task: step = tasks finished of the graph's 4 priors + 6 variants.
    assert {u.stage for u in updates} == {"tasks"} and {u.total for u in updates} == {10}
    assert updates[-1].step == 10 and any("subject-" in u.message for u in updates)
    assert any("s3 seed" in u.message for u in updates)
    # Models load once per worker (2 workers), not once per task (10).
    loads = ray.get([worker.model_loads.remote() for worker in cluster.workers])
    assert len(cluster.workers) == 2 and sum(loads) == 2

    again = Recorder()
    updates.clear()
    result = distributed.RayStoryRun(root / "ray", options(members), progress=updates.append, listener=again,
                                     cluster=cluster).run()
    assert set(result.stages.values()) == {"skipped"} and not updates
    assert comparable(root / "ray") == comparable(root / "serial")
