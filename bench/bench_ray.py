"""Wall time (and GPU use) of one story's priors and renders, serial (`dreamrunner story`) against the Ray task
graph (`dreamrunner story --ray`), on two copies of the same project, in one run.

    python bench/bench_ray.py --out results.json                  # local Ray over this machine's GPUs
    python bench/bench_ray.py --fake-gpus 2 --out results.json     # no GPU: Ray declares 2, the tasks use the CPU

The story: N scenes (default 3) and 2 characters with a reference image each, two motions with an approved
demo clip each (4 priors), `--variants` seeds per scene; the tiny backend by default (random weights: the
clips are noise, the timing is what counts). Each run starts from the same untrained project; the Ray run's
time includes starting Ray and its workers (the first `--ray` of a process pays it). GPU use is the mean of
`nvidia-smi` utilization samples per GPU over each run, where nvidia-smi exists.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from dreamrunner import edits
from dreamrunner.distributed import RayCluster, RayStoryRun
from dreamrunner.files import ASSETS_DIR
from dreamrunner.project import Project
from dreamrunner.story import Character, Entity, KeyFrame, Scene, Story, StorySettings, VideoSettings
from dreamrunner.story_pipeline import CastMember, Listener, StoryOptions, StoryRun

TOPIC = "Mia and the owl"


def make_project(folder: Path, scenes: int, variants: int, size: tuple[int, int, int]) -> list[CastMember]:
    Image.new("RGB", (64, 64), (20, 20, 20)).save(folder.parent / "mia.png")
    Image.new("RGB", (64, 80), (140, 90, 40)).save(folder.parent / "owl.png")
    cast = [CastMember("Mia", "a small black cat", folder.parent / "mia.png"),
            CastMember("Owl", "an old owl", folder.parent / "owl.png")]

    def entity(name, character, motion, x, y=0.4):
        return Entity(name=name, character_id=character, motion=motion, description=f"{name} {motion}",
                      box=(x, y, x + 0.35, y + 0.45))

    kinds = [(["walking", "flying"], [entity("cat", "mia", "walking", 0.05), entity("owl", "owl", "flying", 0.5, 0.1)]),
             (["walking"], [entity("cat", "mia", "walking", 0.4)]),
             (["flying"], [entity("owl", "owl", "flying", 0.3, 0.1)])]
    story = Story(title=TOPIC, topic=TOPIC, characters=[
        Character(id="mia", name="Mia", token="[v1]", description="a small black cat"),
        Character(id="owl", name="Owl", token="[v2]", description="an old owl")], scenes=[
        Scene(id=f"s{n + 1}", narration=f"Scene {n + 1}.", motions=kinds[n % 3][0], background="a green forest",
              keyframes=[KeyFrame(index=k, entities=kinds[n % 3][1]) for k in range(6)]) for n in range(scenes)])
    frames, height, width = size
    settings = StorySettings(video=VideoSettings(num_frames=frames, fps=8, height=height, width=width))
    settings.render.variants = variants
    story.settings = settings
    project = Project.create(folder, story)
    with project.edit():
        for character, member in zip(project.story.characters, cast):
            edits.add_reference_images(project, character.id, [member.image])
        edits.approve_clip(project, "s1", "walking", ASSETS_DIR / "clips" / "bunny-stretches.mp4")
        edits.approve_clip(project, "s1", "flying", ASSETS_DIR / "clips" / "synthetic-jump-1.mp4")
    return cast


class GpuSampler:
    """Mean utilization per GPU from nvidia-smi, sampled every half second while running."""

    def __init__(self) -> None:
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            self.samples.append([float(v) for v in out.split()])

    def __exit__(self, *_) -> None:
        self._stop.set()

    def mean(self) -> list[float] | None:
        if not self.samples:
            return None
        return [round(sum(s[i] for s in self.samples) / len(self.samples), 1) for i in range(len(self.samples[0]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tiny")
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--render-steps", type=int, default=2)
    parser.add_argument("--size", default="9x64x96", help="frames x height x width (default 9x64x96)")
    parser.add_argument("--fake-gpus", type=int, help="start a local Ray that declares this many GPUs (CPU runs)")
    parser.add_argument("--address", help="an existing Ray cluster instead of a local one")
    parser.add_argument("--serial-threads", type=int,
                        help="torch threads of the serial run (a Ray worker asking no CPU gets OMP_NUM_THREADS=1)")
    parser.add_argument("--out", help="write the results here as JSON")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.serial_threads:
        torch.set_num_threads(args.serial_threads)
    results = {"command": " ".join(["python bench/bench_ray.py", *sys.argv[1:]]),
               "machine": f"{platform.machine()} {platform.node()}", "date": time.strftime("%Y-%m-%d"),
               "backend": args.backend, "scenes": args.scenes, "variants": args.variants, "size": args.size,
               "train_steps": args.train_steps, "render_steps": args.render_steps,
               "serial_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as root:
        root = Path(root)
        cast = make_project(root / "serial", args.scenes, args.variants, size)
        shutil.copytree(root / "serial", root / "ray")
        options = lambda: StoryOptions(topic=TOPIC, cast=cast, backend=args.backend, train_steps=args.train_steps,  # noqa: E731
                                       render_steps=args.render_steps, until="render")
        with GpuSampler() as gpus:
            started = time.perf_counter()
            StoryRun(root / "serial", options(), listener=Listener()).run()
            results["serial_seconds"] = round(time.perf_counter() - started, 2)
        results["serial_gpu_util"] = gpus.mean()
        for folder in (root / "serial").glob("media/renders/*"):  # the renders again, priors trained
            shutil.rmtree(folder)
        started = time.perf_counter()
        StoryRun(root / "serial", options(), listener=Listener()).run()
        results["serial_renders_seconds"] = round(time.perf_counter() - started, 2)
        if args.fake_gpus:
            import ray

            ray.init(num_cpus=args.fake_gpus, num_gpus=args.fake_gpus, log_to_driver=False, include_dashboard=False)
        cluster = RayCluster(args.address)
        with GpuSampler() as gpus:
            started = time.perf_counter()
            RayStoryRun(root / "ray", options(), listener=Listener(), cluster=cluster).run()
            results["ray_seconds"] = round(time.perf_counter() - started, 2)
        results["ray_gpu_util"] = gpus.mean()
        results["ray_workers"] = len(cluster.workers)
        # The renders again on the warm workers (models loaded): the graph without Ray's start-up.
        for folder in (root / "ray").glob("media/renders/*"):
            shutil.rmtree(folder)
        with GpuSampler() as gpus:
            started = time.perf_counter()
            RayStoryRun(root / "ray", options(), listener=Listener(), cluster=cluster).run()
            results["ray_renders_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
