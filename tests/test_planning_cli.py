"""`dreamrunner plan` and `dreamrunner replan`: offline by default, the LLM when the environment names one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dreamrunner.cli import main
from dreamrunner import edits
from dreamrunner.planning.prompts import STORY_EXAMPLE_ANSWER
from dreamrunner.project import Project

from llm_server import LLMServer, Reply
from media_files import exif_rotated_jpeg, red_mask
from planning_answers import GOOD_SCENE


@pytest.fixture(autouse=True)
def no_llm(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DREAMRUNNER_LLM_MODEL", "DREAMRUNNER_LLM_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def test_plan_offline_with_a_reference_image(tmp_path, capsys):
    image = exif_rotated_jpeg(tmp_path / "mira.JPG")  # a phone photo: stored 256x192, shown 192x256
    out = tmp_path / "story"
    code = main(["plan", "--topic", "a witch learns to fly", "--character", "Mira:a young witch=" + str(image),
                 "--character", "Bolt", "--out", str(out), "--scenes", "6"])
    assert code == 0
    captured = capsys.readouterr()
    assert "offline planner" in captured.err and "planned 6 scenes" in captured.out
    project = Project.load(out)
    mira, bolt = project.story.characters
    assert (mira.id, mira.token, mira.description, mira.reference_images) == ("mira", "[v1]", "a young witch",
                                                                             ["media/characters/mira_1.png"])
    assert (bolt.id, bolt.token, bolt.reference_images) == ("bolt", "[v2]", [])
    # Stored as the editor stores uploads: the picture as shown, an RGB PNG.
    with Image.open(out / "media/characters/mira_1.png") as stored:
        assert (stored.format, stored.mode, stored.size) == ("PNG", "RGB", (192, 256))
        assert red_mask(np.asarray(stored)[:64, -48:]).mean() > 0.9
    assert len(project.story.scenes) == 6
    assert main(["validate", str(out)]) == 0


def test_plan_single_prompt(tmp_path):
    out = tmp_path / "one"
    assert main(["plan", "--prompt", "a dog runs along the beach", "--out", str(out)]) == 0
    story = Project.load(out).story
    assert len(story.scenes) == 1 and story.scenes[0].motions == ["running"]


def test_plan_and_replan_through_the_llm_named_by_the_environment(tmp_path, monkeypatch, capsys):
    out = tmp_path / "llm"
    with LLMServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DREAMRUNNER_LLM_MODEL", "recorded-model")
        server.llm.queue(json.dumps(STORY_EXAMPLE_ANSWER), *[GOOD_SCENE] * 6)
        assert main(["plan", "--topic", "a delivery", "--character", "Mira", "--character", "Pip", "--out", str(out)]) == 0
        assert "LLM planner (model 'recorded-model'" in capsys.readouterr().err
        assert Project.load(out).story.title == STORY_EXAMPLE_ANSWER["title"]
        assert {r["body"]["model"] for r in server.llm.requests} == {"recorded-model"}

        # A failing server: a clear error, exit code 2, and the project on disk is byte-for-byte the same.
        before = (out / "project.json").read_bytes()
        monkeypatch.setenv("DREAMRUNNER_LLM_TIMEOUT", "5")
        server.llm.queue(Reply(status=503, body={"error": {"message": "overloaded"}}),
                         Reply(status=503, body={"error": {"message": "overloaded"}}))
        assert main(["replan", str(out), "--scene", "s2"]) == 1
        assert "error: the LLM server" in capsys.readouterr().err
        assert (out / "project.json").read_bytes() == before
        # --offline ignores the environment.
        assert main(["replan", str(out), "--scene", "s2", "--offline"]) == 0
        assert (out / "project.json.bak").read_bytes() == before


def test_replan_keeps_edits_on_disk(tmp_path, capsys):
    out = tmp_path / "story"
    assert main(["plan", "--topic", "a picnic in the park", "--character", "Ann", "--out", str(out), "--scenes", "5"]) == 0
    project = Project.load(out)
    with project.edit():
        edits.edit_scene(project.story, "s2", narration="Edited.")
        edits.edit_entity(project.story, "s2", 1, 0, box=(0.1, 0.1, 0.3, 0.4))
    assert main(["replan", str(out), "--seed", "2"]) == 0
    scene = Project.load(out).story.scene("s2")
    assert scene.narration == "Edited." and scene.keyframes[1].entities[0].box == (0.1, 0.1, 0.3, 0.4)
    assert main(["replan", str(out), "--scene", "s2", "--replace", "box", "narration"]) == 0
    scene = Project.load(out).story.scene("s2")
    assert scene.narration == "Edited."  # replan_scene does not rewrite story-level fields
    assert scene.keyframes[1].entities[0].box != (0.1, 0.1, 0.3, 0.4) and scene.user_edited == []
    assert "re-planned scene 's2'" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message, code", [
    (["plan", "--topic", "t", "--out", "{out}"], "at least one --character", 2),
    (["plan", "--topic", "t", "--character", ":witch", "--out", "{out}"], "the name is empty", 2),
    (["plan", "--topic", "t", "--character", "A=missing.png", "--out", "{out}"], "missing.png does not exist", 1),
    (["plan", "--prompt", "p", "--scenes", "3", "--out", "{out}"], "--scenes does not apply", 2),
    (["plan", "--topic", "t", "--character", "A", "--scenes", "99", "--out", "{out}"], "between 1 and 12", 1),
    (["plan", "--topic", " ", "--character", "A", "--out", "{out}"], "--topic is empty", 2),
    (["replan", "{out}"], "no project at", 1),
])
def test_clear_errors(tmp_path, capsys, argv, message, code):
    argv = [a.replace("{out}", str(tmp_path / "p")) for a in argv]
    assert main(argv) == code  # 2: the command line is wrong; 1: the command failed
    assert message in capsys.readouterr().err


def test_reference_images_are_checked_at_plan_time_as_the_editor_checks_them(tmp_path, capsys):
    fake = tmp_path / "mira.png"
    fake.write_bytes(b"\x89PNG fake bytes")
    small = tmp_path / "icon.png"
    Image.new("RGB", (32, 32)).save(small)
    for path, message in ((fake, "mira.png is not an image Pillow can read"), (small, "icon.png is 32x32 pixels")):
        out = tmp_path / path.stem
        assert main(["plan", "--topic", "t", "--character", f"Mira={path}", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"--character 'Mira={path}'" in err and message in err and "Traceback" not in err
        assert not out.exists()


def test_replan_errors_and_existing_projects(tmp_path, capsys):
    out = str(tmp_path / "p")
    assert main(["plan", "--topic", "t", "--character", "A", "--out", out]) == 0
    assert main(["plan", "--topic", "t", "--character", "A", "--out", out]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert main(["replan", out, "--scene", "s99"]) == 1
    assert "has no scene 's99'; give an id (s1, s2" in capsys.readouterr().err
    assert main(["replan", out, "--replace", "boxes"]) == 1
    assert "cannot replace ['boxes']" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["plan", "replan"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "OPENAI_BASE_URL" in capsys.readouterr().out


def test_plan_and_replan_read_the_reported_llm_answers(tmp_path, monkeypatch, capsys):
    """Issue 13: prose with a bracket before valid JSON made `plan` exit with no project; a scene answered in
    pixels of the 720x480 frame was saved with a full-frame sun and without its only character."""
    prose = "The boxes are [x0, y0, x1, y1]: left, top, right, bottom.\n"
    out = tmp_path / "llm"
    with LLMServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        server.llm.queue(prose + json.dumps(STORY_EXAMPLE_ANSWER), *[prose + GOOD_SCENE] * 6)
        assert main(["plan", "--topic", "a delivery", "--character", "Mira", "--character", "Pip", "--out", str(out)]) == 0
        assert len(server.llm.requests) == 7 and len(Project.load(out).story.scenes) == 6
        pixels = json.loads(GOOD_SCENE)
        pixels["keyframes"] = [{"entities": [
            {"name": "sun", "motion": None, "description": "a bright sun", "box": [576, 24, 684, 120]},
            {"name": "Mira", "motion": "walking", "description": "A young witch walking",
             "box": [72 + 72 * k, 192, 216 + 72 * k, 456]},
        ]} for k in range(6)]
        # Scene 2 names Pip, whom the answer leaves out: sent back once, then Pip is placed here.
        server.llm.queue(json.dumps(pixels), json.dumps(pixels))
        assert main(["replan", str(out), "--scene", "s2"]) == 0
    err = capsys.readouterr().err
    assert "the boxes were in pixels of the 720x480 frame" in err
    assert "asked again (attempt 2 of 3): Pip is in this scene but in no keyframe" in err
    assert "'Pip': is named in the scene but was in no keyframe; placed in every keyframe" in err
    scene = Project.load(out).story.scene("s2")
    for k, keyframe in enumerate(scene.keyframes):
        sun, mira, pip = keyframe.entities
        assert sun.box == pytest.approx((0.8, 0.05, 0.95, 0.25))
        assert mira.box == pytest.approx((0.1 + 0.1 * k, 0.4, 0.3 + 0.1 * k, 0.95)) and mira.character_id == "mira"
        assert pip.character_id == "pip" and "[v2]" in pip.description
