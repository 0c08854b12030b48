"""The editor's Ray setting (issue 19): with Ray on in the Render tab's "This machine", the render and prior
training jobs run as the CLI's task graph (dreamrunner.distributed) on a local Ray, here started (from a thread,
as the editor's job thread does) with 2 declared GPUs and the tiny backend on the CPU. The job panel shows
every task in one view, the results are committed by the editor's process, Cancel stops every task; without
Ray the setting says how to install it and cannot be chosen."""

from __future__ import annotations

import os
import re
import shutil
import sys

import gradio as gr
import pytest

from dreamrunner import edits
from dreamrunner.jobs import Cancelled
from dreamrunner.machine import MachineSettingsError, read_machine_settings
from dreamrunner.project import Project
from ui import render_tab
from ui.editor import build_app
from ui.workspace import Workspace

ray = pytest.importorskip("ray")
distributed = pytest.importorskip("dreamrunner.distributed")
from test_distributed import cast, make_project  # noqa: E402 - the Ray tests' 3-scene, 2-character story


@pytest.fixture(scope="module")
def cluster():
    """The local Ray the editor's "local" setting starts at its first Ray job (from the job's thread), over
    2 CPUs and 2 GPUs declared through Ray's resource override: the tasks run on the CPU."""
    assert not ray.is_initialized()
    os.environ["RAY_OVERRIDE_RESOURCES"] = '{"CPU": 2, "GPU": 2}'
    try:
        yield distributed.RayCluster.at()  # the one the editor's "local" setting uses in this process
    finally:
        ray.shutdown()
        del os.environ["RAY_OVERRIDE_RESOURCES"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("story")
    make_project(root / "done", cast(root))
    with Project.load(root / "done").edit() as project:
        edits.set_setting(project.story, "render.steps", 2)
        edits.set_setting(project.story, "prior.max_steps", 2)
    shutil.copytree(root / "done", root / "cancelled")
    return root


def ray_editor(folder, home):
    _, editor = build_app(Workspace(home=home), folder)
    editor.set_machine_setting("ray", "local")
    return editor


def shown(answer, component) -> str:
    return re.sub(r"<[^>]+>", " ", str(answer.get(component, "")))


def test_render_and_train_jobs_run_as_ray_tasks_and_are_committed_by_the_editor(cluster, folders, tmp_path):
    folder = folders / "done"
    editor = ray_editor(folder, tmp_path / "home")
    assert editor.machine_view()[editor.machine_ray] == "local"

    answers = list(editor.render_all_job(folder, "s1", request=None))
    progress = [shown(a, editor.render_progress) for a in answers]
    # One view of every task: 3 scenes x 2 variants, each running task's step.
    assert any(re.search(r"tasks: step \d/6 · .*s\d seed 4[23] \d/2", text) for text in progress), progress
    assert "rendered 6 variant(s), 0 from the cache on Ray" in progress[-1]
    story = Project.load(folder).story
    assert [[r.seed for r in s.renders] for s in story.scenes] == [[42, 43]] * 3
    assert all((folder / r.path).is_file() and r.is_noise for s in story.scenes for r in s.renders)
    assert len(cluster.workers) == 2  # the tasks ran on the Ray workers, not in the editor's process
    assert not render_tab._components, "the editor loaded no model of its own"

    answers = list(editor.train_subject_job(folder, "mia", request=None))
    assert any("tasks: step 0/1 · subject-mia" in shown(a, editor.prior_progress) for a in answers)
    assert "subject-mia: trained 2 steps" in shown(answers[-1], editor.prior_progress)
    story = Project.load(folder).story
    assert [p.id for p in story.priors] == ["subject-mia"] and (folder / story.priors[0].path).is_file()
    assert [s.id for s in story.scenes if s.prior_bindings] == ["s1", "s2"]


def test_cancel_stops_every_ray_task_of_the_editor_job(cluster, folders, tmp_path):
    folder = folders / "cancelled"
    with Project.load(folder).edit() as project:
        edits.set_setting(project.story, "render.steps", 500)
    editor = ray_editor(folder, tmp_path / "home")
    job = editor.render_all_job(folder, "s1", request=None)
    texts = []
    with pytest.raises(Cancelled):
        for answer in job:
            texts.append(shown(answer, editor.render_progress))
            running = {name for name, step in re.findall(r"(s\d seed \d+) (\d+)/500", texts[-1]) if int(step) < 500}
            if len(running) == 2:  # both workers are in the middle of a variant: the user presses Cancel
                editor.cancels.cancel(None)
    assert "cancelled by the user; no scene had finished, nothing new was kept" in texts[-1]
    # Every task stopped: both workers answer at once (an actor runs one call at a time), nothing was committed.
    assert ray.get([worker.model_loads.remote() for worker in cluster.workers], timeout=30)
    assert all(not s.renders for s in Project.load(folder).story.scenes)

    # A cluster needs its address; another Ray than the one this process uses is refused by name, not
    # silently served by the first one.
    editor.set_machine_setting("ray", "cluster")
    with pytest.raises(MachineSettingsError, match="its address is empty"):
        list(editor.render_all_job(folder, "s1", request=None))
    editor.set_machine_setting("ray_address", " 127.0.0.1:6379 ")
    assert read_machine_settings(editor.machine_file).ray_address == "127.0.0.1:6379"
    with pytest.raises(distributed.DistributedError, match="already uses the local Ray and cannot switch to the "
                                                           "Ray cluster at 127.0.0.1:6379: restart it"):
        list(editor.render_all_job(folder, "s1", request=None))


def test_without_ray_the_setting_says_how_to_install_it_and_cannot_be_chosen(tmp_path, monkeypatch):
    monkeypatch.setattr(render_tab, "ray_installed", lambda: False)
    workspace = Workspace(home=tmp_path / "home")
    folder = workspace.install_demo()
    _, editor = build_app(workspace, folder)
    assert editor.machine_ray.interactive is False and editor.machine_ray_address.interactive is False
    assert "pip install 'dreamrunner-studio[ray]'" in editor.machine_ray.info
    with pytest.raises(gr.Error, match="Ray is not installed"):
        editor.set_machine_setting("ray", "local")
    # A machine.json that says Ray (written where it was installed) is named at the job, not ignored.
    (tmp_path / "home" / "machine.json").write_text('{"ray": "local"}')
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where Ray is not installed
    with pytest.raises(distributed.RayUnavailable, match="pip install 'dreamrunner-studio\\[ray\\]'"):
        list(editor.render_all_job(folder, "s1", request=None))
