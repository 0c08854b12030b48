"""A story's priors and scene renders across GPUs and machines, on Ray (`--ray [ADDRESS]`, docs/scaling.md).

The work is a graph built from the project by the serial pipeline's own rules (`story_pipeline.prior_targets`
and the render cache): a task per prior still to train (subject and motion priors do not depend on each
other), then per scene one task per variant (seed) not yet rendered, each scene's after the priors bound to
it; the driver writes the export last. A task takes one GPU (`num_gpus=1`) on a `ModelWorker` actor, one per
GPU, which keeps the model it loaded (keyed by backend and weights) for every later task, so a model loads
once per worker, not once per task. A task writes its files into the project folder, which every worker must
see at the same path (shared storage), and hands back the `Prior` or `RenderResult` describing them; the
driver alone commits those to the story through `dreamrunner.edits` inside `Project.edit()` (the single-owner
rule, docs/architecture.md), in the order the serial run does (priors in graph order, a scene's variants
together in seed order), so `dreamrunner story --ray` makes the same project as `dreamrunner story`.

Ray restarts a worker that died and runs its task again (`max_restarts`, `max_task_retries`); a task that
still fails, or fails with an error of its own, is reported by name, and the scenes that needed it are left
out, while everything finished stays committed. Cancel calls `ray.cancel` on every running task, which stops
at its next step (`TaskCancel`), and submits nothing more. A rerun finds the finished priors and renders and
has nothing to submit: Ray is reached only when there is a task.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import edits
from .backends import MemoryOptions
from .errors import DreamRunnerError
from .jobs import Cancelled, CancelToken, Progress, ProgressCallback
from .project import PROJECT_FILE, Project
from .story import Prior, RenderResult, Story, slug
from .story_pipeline import (STAGES, StageOutcome, StoryRun, commit_prior, note_render, prior_targets,
                             render_outcome, train_outcome)

if TYPE_CHECKING:
    from .priors import PriorOutcome
    from .rendering.story_render import RenderCommit, SceneRenderOutcome

INSTALL = "pip install 'dreamrunner-studio[ray]'"
# Ray starts its local processes (GCS, raylet) with PR_SET_PDEATHSIG: they are killed when the *thread* that
# started them ends. A driver off the main thread (the editor's jobs, each on a thread that ends with it)
# starts Ray from this one thread, which lives as long as the process.
_RAY_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-init")
_STARTED: dict[str, str | None] = {}  # "address": what this process's Ray session was started for
# How often Ray restarts a dead worker and runs its task again before the task is reported as failed.
RETRIES = 2
POLL_SECONDS = 0.2


class RayUnavailable(DreamRunnerError):
    """--ray was asked for where Ray is not installed."""


class DistributedError(DreamRunnerError):
    """The Ray cluster cannot run the work, or tasks failed (named in the message)."""


def require_ray() -> Any:
    """The `ray` module, or `RayUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed in this Python: {INSTALL} "
                             "(or pip install ray)") from None
    return ray


class TaskCancel(CancelToken):
    """The cancel token of a task running on a Ray worker: set when the driver calls `ray.cancel` on the task
    (Ray flags a running actor task; the training and denoising loops look at every step)."""

    @property
    def cancelled(self) -> bool:
        import ray

        return super().cancelled or ray.get_runtime_context().is_canceled()

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by the user")


def _project(folder: str, story_json: str) -> Project:
    """The driver's story over the project folder as this worker sees it (it must see the same folder)."""
    if not (Path(folder) / PROJECT_FILE).is_file():
        raise DistributedError(f"the Ray worker on {socket.gethostname()} does not see the project folder {folder}: "
                               "put the project on storage every Ray node mounts at the same path (docs/scaling.md)")
    return Project(folder, Story.model_validate_json(story_json))


class ProgressBoard:
    """Where tasks post their progress (a Ray actor); the driver takes the latest of each task to show them
    all in one view."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[str, int, int, str]] = {}

    def post(self, task: str, stage: str, step: int, total: int, message: str) -> None:
        self.latest[task] = (stage, step, total, message)

    def take(self) -> dict[str, tuple[str, int, int, str]]:
        latest, self.latest = self.latest, {}
        return latest


class ModelWorker:
    """One per GPU (a Ray actor with `num_gpus=1`): trains priors and renders variants with the model it
    keeps loaded. It holds one model at a time, keyed by (backend, weights, memory options): a task of
    another backend replaces it (a GPU holds one CogVideoX)."""

    def __init__(self, board: str) -> None:
        # The ProgressBoard's actor name, not a handle: a handle argument would sit in the object store, where
        # Ray may lose it before a restart.
        self.board = board
        self.models: dict[tuple, Any] = {}
        self.loads = 0  # models this process loaded (a restarted worker starts again from 0)

    def components(self, backend: str, model_path: str | None, memory: MemoryOptions):
        from .backends import load_backend

        key = (backend, model_path, memory)
        if key not in self.models:
            self.models.clear()
            self.models[key] = load_backend(backend, model_path, memory=memory)
            self.loads += 1
        return self.models[key]

    def _progress(self, task: str) -> ProgressCallback:
        import ray

        board = ray.get_actor(self.board)

        def post(update: Progress) -> None:
            board.post.remote(task, update.stage, update.step, update.total, update.message)
        return post

    def train(self, task: str, folder: str, story_json: str, kind: str, target: str, backend: str,
              model_path: str | None, memory: MemoryOptions, max_steps: int | None) -> tuple[Prior, PriorOutcome]:
        from .priors import train_motion, train_subject

        project = _project(folder, story_json)
        train = train_subject if kind == "subject" else train_motion
        return train(project, target, self.components(backend, model_path, memory), max_steps=max_steps,
                     progress=self._progress(task), cancel=TaskCancel())

    def render(self, task: str, folder: str, story_json: str, index: int, seed: int, backend: str,
               model_path: str | None, memory: MemoryOptions, region_control: str,
               force: bool) -> tuple[SceneRenderOutcome, RenderResult]:
        from .rendering.pipeline import REGION_CONTROLS
        from .rendering.story_render import StoryRenderer

        project = _project(folder, story_json)
        # One variant is the scene rendered with that seed alone: the renderer's own cache, files and sidecar.
        renderer = StoryRenderer(project, backend, components=lambda: self.components(backend, model_path, memory),
                                 region_control=REGION_CONTROLS[region_control]())
        results: list[RenderResult] = []
        [outcome] = renderer.render_scene(index, lambda _scene, found: results.extend(found), force=force,
                                          progress=self._progress(task), cancel=TaskCancel(), seeds=[seed])
        return outcome, results[0]

    def model_loads(self) -> int:
        return self.loads


class RayCluster:
    """A Ray cluster and the GPU workers started on it. `address` None: Ray's own rule (RAY_ADDRESS, else a
    cluster started on this machine, else a new local one over the visible GPUs); "host:port" or
    "ray://host:10001": an existing cluster. Connected at the first task; the workers stay for later runs of
    this process (their models stay loaded)."""

    def __init__(self, address: str | None = None, retries: int = RETRIES) -> None:
        self.address = address or None
        self.retries = retries
        self.workers: list[Any] = []
        self.board: Any = None
        self._worker_class: Any = None
        self._gpus: int | None = None
        self._session: str | None = None  # the Ray session (its node id) the handles above belong to

    @classmethod
    def at(cls, address: str | None = None) -> RayCluster:
        """This process's cluster for `address`, made at the first call: later runs reuse its workers."""
        return _CLUSTERS.setdefault(address or None, cls(address))

    def connect(self) -> Any:
        ray = require_ray()
        if ray.is_initialized() and _STARTED.get("address", self.address) != self.address:
            # One Ray session per process (ray.init): another address would silently use the first one.
            raise DistributedError(f"this process already uses {_describe(_STARTED['address'])} and cannot switch "
                                   f"to {_describe(self.address)}: restart it (the editor: restart the app)")
        if self.address and _STARTED.get("address") != self.address:
            check_reachable(self.address)  # before ray.init, which retries an unreachable address for ever
        if not ray.is_initialized():
            try:
                # Workers' own output stays in Ray's logs: the driver shows progress and errors in one view.
                if threading.current_thread() is threading.main_thread():
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    _RAY_STARTER.submit(ray.init, address=self.address, log_to_driver=False).result()
            except (ConnectionError, ValueError) as error:  # ValueError: an address Ray cannot parse
                raise DistributedError(f"cannot reach the Ray cluster at {self.address}: {error}") from None
            _STARTED["address"] = self.address
        session = ray.get_runtime_context().get_node_id()  # new at every start of a cluster (job ids restart at 1)
        if session != self._session:  # a new Ray session (ours or another ray.init's): the old handles are gone
            self.workers, self.board, self._gpus, self._session = [], None, None, session
        if self.board is None:
            self.board_name = f"dreamrunner-progress-{uuid.uuid4().hex[:12]}"
            self.board = ray.remote(num_cpus=0)(ProgressBoard).options(name=self.board_name).remote()
            self._worker_class = ray.remote(num_gpus=1, max_restarts=self.retries,
                                            max_task_retries=self.retries)(ModelWorker)
        return ray

    def start_workers(self, wanted: int) -> list[Any]:
        """The workers, started up to `wanted` and at most one per GPU of the cluster (as it was at the first call)."""
        ray = self.connect()  # also drops the workers of an earlier Ray session
        if self._gpus is None:
            self._gpus = int(ray.cluster_resources().get("GPU", 0))
        gpus = self._gpus
        if gpus < 1:
            raise DistributedError(f"the Ray cluster{f' at {self.address}' if self.address else ''} has no GPU: "
                                   "every task takes one (num_gpus=1); start Ray on machines with GPUs, or run "
                                   "without --ray")
        while len(self.workers) < min(gpus, max(wanted, 1)):
            self.workers.append(self._worker_class.remote(self.board_name))
        return self.workers

    def replace(self, worker: Any) -> Any:
        """A fresh worker in place of one Ray gave up restarting."""
        fresh = self._worker_class.remote(self.board_name)
        self.workers[self.workers.index(worker)] = fresh
        return fresh


_CLUSTERS: dict[str | None, RayCluster] = {}
# Seconds to wait for a cluster's port to answer before ray.init, which retries an unreachable address for
# ever (seen: over 13 minutes, the editor's GPU queue held all the while).
CONNECT_TIMEOUT_S = 10.0


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of a Ray cluster address, "HOST:PORT" or "ray://HOST:PORT" ([IPv6] hosts too); raises
    DistributedError naming both forms for anything else."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"{address!r} is not a Ray cluster address: give HOST:PORT (the head's GCS port, "
                               "6379 by default) or ray://HOST:10001 (Ray Client)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise DistributedError unless `address` ("HOST:PORT" or "ray://HOST:PORT") names a port that accepts a TCP
    connection within `timeout` seconds: a wrong or unreachable address is said at once, by name."""
    try:
        socket.create_connection(parse_address(address), timeout=timeout).close()
    except OSError as error:
        raise DistributedError(f"cannot reach the Ray cluster at {address}: {error.strerror or error} (waited up to "
                               f"{timeout:.0f} s; is `ray start --head` running there, and the port open?)") from None


def _describe(address: str | None) -> str:
    return f"the Ray cluster at {address}" if address else "the local Ray"


@dataclass(frozen=True)
class PriorTask:
    kind: str  # "subject" or "motion"
    target: str  # character id or motion text
    max_steps: int | None = None
    bind: bool = True

    @property
    def name(self) -> str:
        return f"{self.kind}-{slug(self.target)}"  # the prior's id (priors.service)


@dataclass
class StoryGraph:
    """A story's work: priors to train, independent of each other, then scenes (0-based indices), each after
    the priors it will be bound to (`needs`: scene index -> prior task names)."""

    priors: list[PriorTask]
    scenes: list[int]
    needs: dict[int, set[str]]


def story_graph(story: Story, priors: list[PriorTask], scenes: list[int]) -> StoryGraph:
    """The graph of `priors` and `scenes`: a scene waits for the priors that bind to it (`edits.scenes_for`)."""
    position = {scene.id: index for index, scene in enumerate(story.scenes)}
    needs: dict[int, set[str]] = {index: set() for index in scenes}
    for task in priors:
        if task.bind:
            for scene_id in edits.scenes_for(story, task.kind, task.target):
                needs.get(position[scene_id], set()).add(task.name)
    return StoryGraph(priors, scenes, needs)


@dataclass
class GraphReport:
    priors: list[tuple[Prior, PriorOutcome]] = field(default_factory=list)  # committed, in graph order
    renders: list[tuple[int, SceneRenderOutcome]] = field(default_factory=list)  # (scene index, outcome)
    failed: dict[str, str] = field(default_factory=dict)  # task name -> why, after Ray's retries
    left_out: dict[str, str] = field(default_factory=dict)  # scene id -> why it was not rendered

    def raise_failures(self) -> None:
        if self.failed:
            why = "; ".join(f"{name}: {reason}" for name, reason in self.failed.items())
            left = f"; not rendered: {', '.join(self.left_out)}" if self.left_out else ""
            raise DistributedError(f"{len(self.failed)} task(s) failed: {why}{left}. What finished is saved; "
                                   "run the same command again to retry the rest")


@dataclass
class _Scene:
    index: int
    seeds: list[int]
    found: dict[int, tuple[SceneRenderOutcome, RenderResult] | None] = field(default_factory=dict)


class GraphRun:
    """Runs a `StoryGraph` on a `RayCluster`, committing what finishes through the callers' commits:
    `commit_prior(task, prior, outcome)` (the serial run's `commit_prior`, the CLI's register) and
    `commit_scene(scene_id, results)` (`story_render.commit_to`). `progress` gets one `Progress` for all
    tasks: step = tasks finished, total = tasks in the graph, message = each running task's step."""

    def __init__(self, cluster: RayCluster, project: Project, backend: str, *,
                 commit_prior: Callable[[PriorTask, Prior, PriorOutcome], None] | None,
                 commit_scene: RenderCommit | None,
                 on_render: Callable[[int, SceneRenderOutcome], None] | None = None, model_path: str | None = None,
                 memory: MemoryOptions | None = None, region_control: str = "sr3ai", variants: int | None = None,
                 force: bool = False, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> None:
        self.cluster, self.project, self.backend = cluster, project, backend
        self.commit_prior, self.commit_scene, self.on_render = commit_prior, commit_scene, on_render
        # No device: Ray gives each worker its GPU (CUDA_VISIBLE_DEVICES), which is "cuda" there.
        self.model_path, self.memory = model_path, replace(memory or MemoryOptions(), device=None)
        self.region_control, self.variants, self.force = region_control, variants, force
        self.progress, self.cancel = progress, cancel or CancelToken()

    def run(self, graph: StoryGraph) -> GraphReport:
        from .rendering.pipeline import REGION_CONTROLS
        from .rendering.story_render import StoryRenderer, variant_seeds

        # The driver's renderer only computes keys and finds cached variants; it never loads a model.
        self.renderer = StoryRenderer(self.project, self.backend, region_control=REGION_CONTROLS[self.region_control]())
        story = self.project.story
        # Each scene's own seeds (its settings may override the story's, `story.scene_render_settings`).
        seeds = {index: variant_seeds(story, self.variants, story.scenes[index]) for index in graph.scenes}
        self.report = GraphReport()
        self.total = len(graph.priors) + sum(len(scene_seeds) for scene_seeds in seeds.values())
        self.finished = 0
        self.running: dict[str, tuple[str, int, int, str]] = {}
        self._shown: tuple | None = None
        resolved: dict[str, tuple[Prior, PriorOutcome] | None] = {}
        committed: set[str] = set()
        waiting = [_Scene(index, seeds[index]) for index in graph.scenes]
        open_scenes: dict[int, _Scene] = {}
        ready: deque[tuple] = deque(("prior", task) for task in graph.priors)
        inflight: dict[Any, tuple[tuple, Any]] = {}
        try:
            self._loop(graph, resolved, committed, waiting, open_scenes, ready, inflight)
        except BaseException:
            if inflight:  # a failed commit, a second Ctrl-C: no task goes on without its driver
                ray = self.cluster.connect()
                for ref in inflight:
                    ray.cancel(ref)
            raise
        self.report.renders.sort(key=lambda item: (graph.scenes.index(item[0]), seeds[item[0]].index(item[1].seed)))
        return self.report

    def _loop(self, graph: StoryGraph, resolved: dict, committed: set[str], waiting: list[_Scene],
              open_scenes: dict[int, _Scene], ready: deque, inflight: dict) -> None:
        idle: list[Any] = []
        next_prior = 0
        while True:
            if self.cancel.cancelled:
                self._stop(inflight, resolved, committed, graph.priors)
            # Priors are committed in graph order (the serial run's), each as soon as those before it are done.
            while next_prior < len(graph.priors) and graph.priors[next_prior].name in resolved:
                task = graph.priors[next_prior]
                if resolved[task.name] is not None:
                    prior, outcome = resolved[task.name]
                    self.commit_prior(task, prior, outcome)
                    self.report.priors.append((prior, outcome))
                    committed.add(task.name)
                next_prior += 1
            for scene in list(waiting):
                needs = graph.needs[scene.index]
                failed = sorted(needs & set(self.report.failed))
                scene_id = self.project.story.scenes[scene.index].id
                if failed:
                    self.report.left_out[scene_id] = f"its prior {', '.join(failed)} failed"
                    self.finished += len(scene.seeds)
                    waiting.remove(scene)
                elif needs <= committed:
                    waiting.remove(scene)
                    try:
                        ready.extend(self._expand(scene))
                    except DreamRunnerError as error:  # e.g. a bound prior's file is missing
                        self.report.failed[scene_id] = str(error)
                        self.finished += len(scene.seeds) - len(scene.found)
                        continue
                    if len(scene.found) == len(scene.seeds):
                        self._finish(scene)
                    else:
                        open_scenes[scene.index] = scene
            if ready and not idle:  # more workers, up to one per GPU, where tasks wait
                busy = [worker for _, worker in inflight.values()]
                idle = [w for w in self.cluster.start_workers(len(ready) + len(busy)) if all(w is not b for b in busy)]
            story_json = self.project.story.model_dump_json() if ready and idle else ""
            while ready and idle:
                job, worker = ready.popleft(), idle.pop()
                inflight[self._submit(job, worker, story_json)] = (job, worker)
            if story_json:  # the new tasks show at once, not after the first wait (a short one ends within it)
                self._show()
            if not inflight:
                if ready or waiting:  # cannot happen: every scene waits only for priors of the graph
                    raise DistributedError(f"the task graph is stuck with {len(ready) + len(waiting)} task(s) left")
                break
            ray = self.cluster.connect()
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                job, worker = inflight.pop(ref)
                value, worker = self._result(ref, job, worker)
                idle.append(worker)
                self._take(job, value, resolved, open_scenes)
            self._show()

    def _expand(self, scene: _Scene) -> list[tuple]:
        """The scene's variants still to render, as tasks; cached ones are found here, on the driver."""
        live = self.project.story.scenes[scene.index]
        key = self.renderer.scene_key(live)
        jobs = []
        for seed in scene.seeds:
            found = None if self.force else self.renderer.cached(live, key, seed)
            if found is None:
                jobs.append(("render", scene.index, seed, f"{live.id} seed {seed}"))
            else:
                from .rendering.story_render import SceneRenderOutcome

                scene.found[seed] = (SceneRenderOutcome(live.id, seed, found.path, cached=True), found)
                self.finished += 1
        return jobs

    def _submit(self, job: tuple, worker: Any, story_json: str) -> Any:
        folder = str(self.project.folder.resolve())
        common = (self.backend, self.model_path, self.memory)
        if job[0] == "prior":
            task = job[1]
            self.running[task.name] = ("waiting", 0, 0, "")
            return worker.train.remote(task.name, folder, story_json, task.kind, task.target, *common, task.max_steps)
        _, index, seed, name = job
        self.running[name] = ("waiting", 0, 0, "")
        return worker.render.remote(name, folder, story_json, index, seed, *common, self.region_control, self.force)

    def _result(self, ref: Any, job: tuple, worker: Any) -> tuple[Any, Any]:
        """The task's value, or the reason it failed (a str) after Ray's retries; a worker Ray gave up on is
        replaced."""
        ray = self.cluster.connect()
        try:
            return ray.get(ref), worker
        except ray.exceptions.TaskCancelledError:
            return Cancelled("cancelled by the user"), worker
        except ray.exceptions.RayActorError as error:
            reason = f"its worker died {self.cluster.retries + 1} time(s) ({type(error).__name__})"
            return reason, self.cluster.replace(worker)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None) or error
            if isinstance(cause, Cancelled):
                return cause, worker
            return (str(cause) if isinstance(cause, DreamRunnerError) else f"{type(cause).__name__}: {cause}"), worker

    def _take(self, job: tuple, value: Any, resolved: dict, open_scenes: dict[int, _Scene]) -> None:
        name = job[1].name if job[0] == "prior" else job[3]
        self.running.pop(name, None)
        if isinstance(value, Cancelled):
            return
        self.finished += 1
        if isinstance(value, str):
            self.report.failed[name] = value
        if job[0] == "prior":
            resolved[name] = None if isinstance(value, str) else value
            return
        scene = open_scenes[job[1]]
        scene.found[job[2]] = None if isinstance(value, str) else value
        if len(scene.found) == len(scene.seeds):
            del open_scenes[scene.index]
            self._finish(scene)

    def _finish(self, scene: _Scene) -> None:
        """Commit a scene's variants together, in seed order, as the serial run does."""
        kept = [scene.found[seed] for seed in scene.seeds if scene.found[seed] is not None]
        if kept:
            self.commit_scene(self.project.story.scenes[scene.index].id, [result for _, result in kept])
        for outcome, _ in kept:
            self.report.renders.append((scene.index, outcome))
            if self.on_render is not None:
                self.on_render(scene.index, outcome)

    def _stop(self, inflight: dict, resolved: dict, committed: set[str], priors: list[PriorTask]) -> None:
        """Cancel every running task, commit the priors finished by then and raise `Cancelled`. Scenes not
        wholly rendered stay uncommitted, as in the serial run: their finished variants are on disk (clip and
        sidecar), where the next run finds them."""
        ray = self.cluster.connect()
        for ref in inflight:
            ray.cancel(ref)
        for ref, (job, worker) in list(inflight.items()):
            value, _ = self._result(ref, job, worker)
            if job[0] == "prior" and not isinstance(value, (str, Cancelled)):
                resolved[job[1].name] = value
        for task in priors:  # finished, some waiting for an earlier one to be committed first
            if resolved.get(task.name) is not None and task.name not in committed:
                self.commit_prior(task, *resolved[task.name])
        raise Cancelled("cancelled by the user")

    def _show(self) -> None:
        if self.cluster.board is not None:
            for name, state in self.cluster.connect().get(self.cluster.board.take.remote()).items():
                if name in self.running:
                    self.running[name] = state
        shown = (self.finished, tuple(sorted(self.running.items())))
        if self.progress is None or shown == self._shown:
            return
        self._shown = shown
        message = "; ".join(f"{name} {step}/{total}" if total else f"{name} starting"
                            for name, (_, step, total, _) in sorted(self.running.items()))
        self.progress(Progress("tasks", self.finished, self.total, message))


class RayStoryRun(StoryRun):
    """`StoryRun` whose train and render stages are one task graph on Ray (`dreamrunner story --ray`): plan,
    clips and export run here as in the serial run."""

    def __init__(self, folder: str | Path, options, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, listener=None, cluster: RayCluster | None = None) -> None:
        super().__init__(folder, options, progress, cancel, listener)
        self.cluster = cluster or RayCluster.at()
        self._render_outcome: StageOutcome | None = None

    def stage_function(self, name: str) -> Callable[[StoryRun], StageOutcome]:
        if name == "train":
            return RayStoryRun._graph_stage
        if name == "render":
            return lambda run: run._render_outcome
        return super().stage_function(name)

    def _graph_stage(self) -> StageOutcome:
        from .rendering.story_render import commit_to

        todo, current = prior_targets(self)
        rendering = STAGES.index(self.options.until) >= STAGES.index("render")
        scenes = list(range(len(self.project.story.scenes))) if rendering else []
        graph = story_graph(self.project.story, [PriorTask(kind, target) for kind, target in todo], scenes)
        trained: list[str] = []

        def commit(task: PriorTask, prior: Prior, outcome: PriorOutcome) -> None:
            commit_prior(self, prior, outcome)
            trained.append(prior.id)

        report = GraphRun(self.cluster, self.project, self.backend, commit_prior=commit,
                          commit_scene=commit_to(self.project), on_render=lambda index, o: note_render(self, index, o),
                          model_path=self.options.model_path, memory=self.options.memory,
                          variants=self.options.variants, progress=self.progress, cancel=self.cancel).run(graph)
        report.raise_failures()
        self._render_outcome = render_outcome(self, [outcome for _, outcome in report.renders])
        return train_outcome(trained, current)
