"""A story's priors and renders on Ray (dreamrunner.distributed): one local Ray cluster for the module, with two
GPUs declared (fake: the tasks run the tiny backend on the CPU), and a 3-scene, 2-character story.

The task graph makes the same project as the serial run; a worker killed mid-task is restarted by Ray and its
task run again; a task that fails is named while the others are committed; cancel stops every task; a second
run submits nothing; models load once per worker; without Ray, --ray is a named error saying how to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
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
        yield distributed.RayCluster.at()  # the one `--ray` without an address uses in this process
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
    """The project's story without what differs between two runs of the same work: the training time, and
    the renders' cache keys and file names, which hash the prior files' bytes (safetensors writes their
    metadata in an order of its own per process); `prior_weights` compares what the files hold."""
    story = Project.load(folder).story.model_dump(mode="json")
    for prior in story["priors"]:
        prior["card"].pop("train_seconds")
    for scene in story["scenes"]:
        for render in scene["renders"]:
            assert render.pop("path") == f"media/renders/{scene['id']}/{render.pop('cache_key')[:16]}-seed{render['seed']}.mp4"
    return story


def prior_weights(folder: Path) -> dict:
    """Each prior file's tensors and metadata (as data, not bytes)."""
    from safetensors import safe_open

    held = {}
    for prior in Project.load(folder).story.priors:
        with safe_open(str(folder / prior.path), framework="pt") as handle:
            held[prior.id] = ({key: handle.get_tensor(key).tolist() for key in handle.keys()}, handle.metadata())
    return held


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
    for copy in ("ray", "failing", "cancelled"):
        shutil.copytree(root / "serial", root / copy)
    return root, members


def test_the_task_graph_makes_the_serial_project_and_a_rerun_submits_nothing(cluster, story_folders):
    root, members = story_folders
    # One thread, as Ray gives a worker that asks for no CPU (OMP_NUM_THREADS=1): CPU float sums depend on the
    # thread count, and the tiny model's random weights make any difference visible in the priors and clips.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = StoryRun(root / "serial", options(members), listener=Recorder()).run()
    finally:
        torch.set_num_threads(threads)
    assert serial.stages == {"plan": "skipped", "clips": "skipped", "train": "done", "render": "done",
                             "export": "done"}

    updates = []
    listener = Recorder()
    result = distributed.RayStoryRun(root / "ray", options(members), progress=updates.append, listener=listener,
                                     cluster=cluster).run()
    assert result.stages == serial.stages
    assert comparable(root / "ray") == comparable(root / "serial")
    assert prior_weights(root / "ray") == prior_weights(root / "serial")
    story = Project.load(root / "ray").story
    assert {p.id for p in story.priors} == {"subject-mia", "subject-owl", "motion-walking", "motion-flying"}
    assert [len(s.renders) for s in story.scenes] == [2, 2, 2]
    assert (root / "ray" / "story.mp4").is_file()
    # One view of every task: step = tasks finished of the graph's 4 priors + 6 variants.
    tasks = [u for u in updates if u.stage == "tasks"]  # the rest: the export's, written by the driver
    assert {u.total for u in tasks} == {10} and tasks[-1].step == 10
    assert any("subject-mia" in u.message for u in tasks) and any("s3 seed 43" in u.message for u in tasks)
    # Models load once per worker (2 workers), not once per task (10).
    loads = ray.get([worker.model_loads.remote() for worker in cluster.workers])
    assert len(cluster.workers) == 2 and sum(loads) == 2

    again = Recorder()
    updates.clear()
    result = distributed.RayStoryRun(root / "ray", options(members), progress=updates.append, listener=again,
                                     cluster=cluster).run()
    assert set(result.stages.values()) == {"skipped"} and not updates
    assert comparable(root / "ray") == comparable(root / "serial")


def pids(cluster) -> list[int]:
    return ray.get([worker.__ray_call__.remote(lambda worker: os.getpid()) for worker in cluster.workers])


def test_a_worker_killed_mid_task_is_restarted_and_its_task_run_again(cluster, story_folders):
    root, _ = story_folders
    folder = root / "ray"
    assert main(["set", str(folder), "render.steps=100"]) == 0  # long enough to be killed in the middle
    before = pids(cluster)
    killed = []

    def progress(update):
        step = re.search(r"seed 42 (\d+)/100", update.message)
        if not killed and step and int(step.group(1)) < 100:  # the variant is in the middle: kill every worker
            killed.extend(before)
            for worker in cluster.workers:
                ray.kill(worker, no_restart=False)

    project = Project.load(folder)
    report = distributed.GraphRun(cluster, project, "tiny", commit_prior=None,
                                  commit_scene=lambda scene_id, results: None, progress=progress,
                                  variants=1).run(distributed.story_graph(project.story, [], [2]))
    assert killed and not report.failed
    assert [(o.scene_id, o.cached) for _, o in report.renders] == [("s3", False)]
    assert (folder / report.renders[0][1].path).is_file()
    assert set(pids(cluster)).isdisjoint(before)  # Ray restarted the workers; the task ran again on one


def test_a_failed_task_is_named_and_everything_else_is_committed(cluster, story_folders):
    root, members = story_folders
    folder = root / "failing"
    clip = next((folder / "media" / "clips" / "s1" / "flying").iterdir())
    clip.write_bytes(b"not a video")  # the flying prior cannot read its clip: an error of its own, not retried
    with pytest.raises(distributed.DistributedError) as error:
        distributed.RayStoryRun(folder, options(members), listener=Recorder(), cluster=cluster).run()
    message = str(error.value)
    assert "1 task(s) failed: motion-flying:" in message and "not rendered: s1, s3" in message
    story = Project.load(folder).story
    assert {p.id for p in story.priors} == {"subject-mia", "subject-owl", "motion-walking"}
    assert [len(s.renders) for s in story.scenes] == [0, 2, 0]


def test_cancel_stops_every_task(cluster, story_folders):
    root, members = story_folders
    folder = root / "cancelled"
    cancel = CancelToken()
    running = set()

    def progress(update):
        running.update(name for name, step in re.findall(r"(\S+) (\d+)/500", update.message) if int(step) < 500)
        if len(running) == 2:  # both workers are in the middle of a prior
            cancel.cancel()

    slow = options(members)
    slow.train_steps = 500
    with pytest.raises(Cancelled):
        distributed.RayStoryRun(folder, slow, progress=progress, cancel=cancel, listener=Recorder(),
                                cluster=cluster).run()
    # Both tasks stopped at their next step: they left a checkpoint and no prior; the workers are free again.
    assert ray.get([worker.model_loads.remote() for worker in cluster.workers], timeout=30)
    assert len(list((folder / "media" / "priors" / ".work").iterdir())) == 2
    assert not list((folder / "media" / "priors").glob("*.safetensors"))
    assert not Project.load(folder).story.priors


def test_cli_render_and_train_with_ray_and_without_ray_installed(cluster, story_folders, monkeypatch, capsys):
    root, _ = story_folders
    folder = root / "serial"
    assert main(["--json", "render", str(folder), "--scene", "3", "--force", "--ray"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["scene"], r["seed"], r["cached"]) for r in results if r["event"] == "result"] == [
        ("s3", 42, False), ("s3", 43, False)]
    story = ["--json", "story", "--topic", TOPIC, "--character", f"Mia:a small black cat={root / 'mia.png'}",
             "--character", f"Owl:an old owl={root / 'owl.png'}", "--out", str(folder), "--backend", "tiny",
             "--train-steps", "2", "--render-steps", "2", "--until", "render", "--ray"]
    assert main(story) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["stages"] == {"plan": "skipped", "clips": "skipped", "train": "skipped", "render": "skipped"}
    assert main(["--json", "train-subject", str(folder), "--character", "Mia", "--ray"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert results[-2]["prior"] == "subject-mia" and results[-2]["cached"] is True  # the same file, found
    assert results[-1]["bound"] == ["s1", "s2"]
    assert main([*story, "--device", "cpu"]) == 2
    assert "--device cpu does not go with --ray" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where Ray is not installed
    assert main(["render", str(folder), "--ray"]) == 1
    err = capsys.readouterr().err
    assert "--ray needs Ray" in err and "pip install 'dreamrunner-studio[ray]'" in err


def test_a_cluster_address_that_is_wrong_or_unreachable_is_refused_at_once(tmp_path, capsys):
    """ray.init retried an unreachable address for over 13 minutes (the editor's GPU queue held all the while);
    an address it cannot parse ended in a traceback."""
    import socket

    with pytest.raises(distributed.DistributedError, match="is not a Ray cluster address"):
        distributed.check_reachable("not an address")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens on it now
    with pytest.raises(distributed.DistributedError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        distributed.check_reachable(f"127.0.0.1:{port}", timeout=5)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        distributed.check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}", timeout=5)
    ball = Entity(name="ball", description="a red ball", box=(0.2, 0.3, 0.5, 0.7))
    Project.create(tmp_path / "p", Story(title="t", topic=TOPIC, characters=[], scenes=[scene("s1", [], ball)],
                                         settings=StorySettings(video=TINY_VIDEO)))
    assert main(["render", str(tmp_path / "p"), "--ray", "not an address"]) == 2  # a usage error, before Ray is needed
    err = capsys.readouterr().err
    assert "is not a Ray cluster address" in err and "Traceback" not in err
