"""`dreamrunner story`: the whole pipeline from the command line, in real processes on the tiny backend.

One story goes through every stage to an exported mp4; the project file and the export manifest show that
every scene was rendered with the subject and motion priors bound to it, trained on the approved clips; a
run stopped after training (`--until train`) and a run cancelled with a real SIGINT while rendering both
resume where they stopped; a second run does no work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreamrunner.cli import main
from dreamrunner.project import Project
from dreamrunner.rendering.story_render import StoryRenderer
from dreamrunner.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "a witch and a robot race across the meadow"
# One catalog motion per scene (the demo catalog has clips for these), set the way a user would.
MOTIONS = ["walking", "jumping", "waving", "walking", "running"]


def story_command(folder: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamrunner", "--offline", "--json", "story", "--topic", TOPIC,
            "--character", f"Mira:a young witch={folder / 'mira.png'}",
            "--character", f"Pip:a small robot={folder / 'pip.png'}",
            "--out", str(folder / "proj"), "--scenes", "5", "--backend", "tiny", "--train-steps", "2",
            "--render-steps", "2", "--clip-model", "none", "--clips-per-motion", "2", *extra]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": ""}


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def run_story(folder: Path, *extra: str) -> list[dict]:
    result = subprocess.run(story_command(folder, *extra), capture_output=True, text=True, env=environment(),
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return events_of(result.stdout)  # every stdout line is one JSON object


def stage_status(events: list[dict]) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in events if e["event"] == "stage" and e["status"] != "started"}


@pytest.mark.slow
def test_story_runs_every_stage_resumes_and_then_does_no_work(tmp_path):
    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "mira.png")
    Image.new("RGB", (64, 96), (40, 40, 200)).save(tmp_path / "pip.png")
    proj = tmp_path / "proj"

    events = run_story(tmp_path, "--until", "plan")
    assert stage_status(events) == {"plan": "done"}
    # The user adjusts the plan before going on: small frames for a quick trial and one catalog motion per
    # scene (re-planned so the entities carry it).
    assert main(["set", str(proj), "video.num_frames=9", "video.height=64", "video.width=96"]) == 0
    for number, motion in enumerate(MOTIONS, start=1):
        assert main(["scene", "edit", str(proj), str(number), "--motion", motion]) == 0
    assert main(["replan", str(proj), "--offline"]) == 0

    events = run_story(tmp_path, "--until", "train")
    assert stage_status(events) == {"plan": "skipped", "clips": "done", "train": "done"}
    story = Project.load(proj).story
    assert {p.id for p in story.priors} == {"subject-mira", "subject-pip", "motion-walking", "motion-jumping",
                                           "motion-waving", "motion-running"}
    assert not any(s.renders for s in story.scenes)

    # A real Ctrl-C while rendering: the process stops at the next step, keeps the finished scenes, exits 130.
    process = subprocess.Popen(story_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment())
    seen = []
    for line in process.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "note" and seen[-1].get("cached") is False:  # the first scene is rendered
            process.send_signal(signal.SIGINT)
            break
    rest, err = process.communicate(timeout=300)
    seen += events_of(rest)
    assert process.returncode == 130, err
    assert "Traceback" not in err and seen[-1]["event"] == "error" and seen[-1]["cancelled"] is True
    assert stage_status(seen) == {"plan": "skipped", "clips": "skipped", "train": "skipped"}
    finished = [s.id for s in Project.load(proj).story.scenes if s.renders]
    assert finished and len(finished) < len(MOTIONS)

    events = run_story(tmp_path)
    assert stage_status(events) == {"plan": "skipped", "clips": "skipped", "train": "skipped", "render": "done",
                                    "export": "done"}
    render = next(e for e in events if e["event"] == "stage" and e["stage"] == "render" and e["status"] == "done")
    assert render["cached"] == finished and len(render["rendered"]) == len(MOTIONS) - len(finished)
    result = events[-1]
    assert result["event"] == "result" and result["video"] == str(proj / "story.mp4")

    project = Project.load(proj)
    story = project.story
    manifest = json.loads((proj / "story.json").read_text())
    assert manifest["video"]["num_frames"] == 5 * 9
    assert len(read_video(proj / "story.mp4")) == 5 * 9
    priors = {p.id: p for p in story.priors}
    renderer = StoryRenderer(project, "tiny")
    for scene, listed in zip(story.scenes, manifest["scenes"]):
        characters = {e.character_id for k in scene.keyframes for e in k.entities if e.character_id}
        bound = {b.prior_id for b in scene.prior_bindings}
        assert bound == {f"subject-{c}" for c in characters} | {f"motion-{m}" for m in scene.motions}
        chosen = scene.renders[scene.chosen_render]
        # The render was made with exactly the bound priors, and its cache key hashes their files as they are.
        assert {b.prior_id for b in chosen.priors} == bound
        assert listed["cache_key"] == chosen.cache_key == renderer.scene_key(scene)
        assert listed["source"] == "render" and listed["is_noise"] is True
        assert {p["id"] for p in listed["priors"]} == bound
        for used in listed["priors"]:
            prior = priors[used["id"]]
            if prior.kind == "motion":  # trained on the clips approved for the motion
                approved = [c.path for s in story.scenes for c in s.approved_clips if c.motion == prior.target]
                assert used["sources"] == approved and approved
            else:
                assert used["sources"] == story.character(prior.target).reference_images

    events = run_story(tmp_path)
    assert set(stage_status(events).values()) == {"skipped"}
    assert not [e for e in events if e["event"] == "progress"]  # nothing computed, no model loaded
    assert not [e for e in events if "loading the" in e.get("message", "")]
