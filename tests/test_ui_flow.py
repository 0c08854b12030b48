"""The whole flow in a real headless Chromium, offline: plan a story, change a narration, drag a box,
add your own clip and approve a retrieved one, train a motion prior, cancel a render, render a scene with
the tiny backend, export, and check the mp4 with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import pytest

from media_files import moving_square_clip
from browser import (AppServer, app_home, artifacts, chromium, drag_box, fill_and_leave,  # noqa: F401
                     new_page, open_tab, read_project, wait_until)

pytestmark = pytest.mark.browser


def mp4_facts(path):
    """(frames, seconds) of a video as PyAV decodes it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        rate = Fraction(stream.average_rate)
    return frames, float(frames / rate)


def test_plan_edit_approve_render_export(chromium, app_home, artifacts, tmp_path):
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"

        # 1. Plan a story offline (the offline planner is the default without an LLM).
        # A topic whose first motion (walking, for every plan variant) the demo clip catalog holds: the page plans
        # with a fresh variant each load, and step 4 finds clips for that motion.
        topic = "Rusty the fox and Pip the owl walk through the meadow"
        fill_and_leave(page, "#story-topic", topic)
        page.get_by_role("button", name="Plan story").click()
        page.locator("#confirm-plan-yes").click()  # the demo is planned: Plan story asks first
        story = wait_until(lambda: (s := read_project(folder))["topic"] == topic and len(s["scenes"]) != 4
                           # the story plan is saved first, each scene plan as it arrives: wait for the last
                           and all(any(k["entities"] for k in scene["keyframes"]) for scene in s["scenes"])
                           and s, timeout=30, what="the planned story in project.json")
        assert 5 <= len(story["scenes"]) <= 8
        assert story["title"] == "Pip and Rusty", "a new plan keeps the story's title"
        assert story["characters"][0]["id"] == "pip", "planning keeps the story's characters"
        assert all(len(s["keyframes"]) == 6 for s in story["scenes"])
        artifacts.shot(page, "planned story")

        # 2. Change the narration of scene 1.
        open_tab(page, "Storyboard")
        page.locator("#box-editor canvas").first.wait_for()
        narration = "Pip blinks awake as the sun goes down."
        fill_and_leave(page, "#narration", narration)
        wait_until(lambda: read_project(folder)["scenes"][0]["narration"] == narration, what="the narration")
        artifacts.shot(page, "narration changed")

        # The animatic plays the scene plan.
        page.get_by_text("Animatic: the scene plan as a moving sketch").click()
        page.get_by_role("button", name="Show the animatic of this scene").click()
        page.locator("#animatic-video video").wait_for()
        source = page.locator("#animatic-video video").get_attribute("src")
        assert source and source.split("?")[0].endswith(".mp4")
        artifacts.shot(page, "animatic")

        # 3. Drag the first box of keyframe 1.
        before = read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0]
        drag_box(page, before["box"], 36, -24)
        moved = wait_until(lambda: (e := read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0])["box"]
                           != before["box"] and e, what="the dragged box")
        expected = [v + d for v, d in zip(before["box"], [36 / 720, -24 / 480, 36 / 720, -24 / 480])]
        assert moved["box"] == pytest.approx(expected, abs=2.5 / 480)
        artifacts.shot(page, "box dragged")

        # 4. Clips for a motion: add your own, and approve a retrieved one.
        scene_with_clips = next(i for i, s in enumerate(story["scenes"]) if s["motions"])
        motion = story["scenes"][scene_with_clips]["motions"][0]
        scene_id = story["scenes"][scene_with_clips]["id"]
        open_tab(page, "Motion clips")
        page.locator("#clips-scene input").click()
        page.get_by_role("option", name=f"{scene_with_clips + 1}.", exact=False).first.click()
        wait_until(lambda: page.locator("#clips-motion input").input_value() == motion, what="the scene's motion")
        own = tmp_path / "my-walk.mp4"
        moving_square_clip(own)
        page.locator("#own-clip input[type=file]").set_input_files(str(own))
        clips = wait_until(lambda: read_project(folder)["scenes"][scene_with_clips]["approved_clips"],
                           what="the user's clip")
        assert clips[0]["source"] == "user" and clips[0]["motion"] == motion
        assert clips[0]["path"].startswith(f"media/clips/{scene_id}/") and (folder / clips[0]["path"]).is_file()
        artifacts.shot(page, "own clip added")
        page.get_by_role("button", name="Find clips").click()
        page.locator("#clip-info").get_by_text("score").wait_for(timeout=60_000)
        artifacts.shot(page, "clips retrieved")
        page.get_by_role("button", name="Approve", exact=True).click()
        clips = wait_until(lambda: (c := read_project(folder)["scenes"][scene_with_clips]["approved_clips"])
                           and len(c) == 2 and c, what="the approved clip")
        assert clips[1]["source"] == "retrieval" and clips[1]["motion"] == motion
        assert (folder / clips[1]["path"]).is_file()
        artifacts.shot(page, "clip approved")

        # 5. Train the motion prior on the approved clip (2 steps on the tiny model), then find it reused.
        open_tab(page, "Priors")
        steps = page.locator("#prior-steps input")
        steps.fill("2")
        steps.press("Tab")
        wait_until(lambda: read_project(folder)["settings"]["prior"]["max_steps"] == 2, what="the prior steps")
        wait_until(lambda: page.locator("#motion-choice input").input_value() == motion, what="the motion")
        page.get_by_role("button", name="Train motion prior").click()
        page.locator("#prior-progress").get_by_text("trained 2 steps").wait_for(timeout=90_000)
        saved = read_project(folder)
        prior = next(p for p in saved["priors"] if p["kind"] == "motion")
        assert prior["target"] == motion and (folder / prior["path"]).is_file()
        assert any(b["prior_id"] == prior["id"] for b in saved["scenes"][scene_with_clips]["prior_bindings"])
        artifacts.shot(page, "motion prior trained")
        page.get_by_role("button", name="Train motion prior").click()
        page.locator("#prior-progress").get_by_text("reused").wait_for(timeout=30_000)

        # 6. Render with the tiny backend (random weights: labelled noise): watch the live preview of a
        #    long render and cancel it, then render scene 1 (its motion prior bound) as 2 variants of 2 steps.
        open_tab(page, "Render")
        render_steps = page.locator("#render-steps input")
        render_steps.fill("500")
        render_steps.press("Tab")
        wait_until(lambda: read_project(folder)["settings"]["render"]["steps"] == 500, what="the steps setting")
        page.get_by_role("button", name="Render scene").click()
        page.locator("#render-progress progress").wait_for(timeout=60_000)
        page.locator("#render-preview img").wait_for(timeout=60_000)
        artifacts.shot(page, "live preview")
        page.get_by_role("button", name="Cancel").click()
        page.locator("#render-progress").get_by_text("cancelled").wait_for(timeout=30_000)
        assert read_project(folder)["scenes"][0]["renders"] == []
        artifacts.shot(page, "render cancelled")
        render_steps.fill("2")
        render_steps.press("Tab")
        variants = page.locator("#render-variants input")
        variants.fill("2")
        variants.press("Tab")
        wait_until(lambda: (r := read_project(folder)["settings"]["render"])["steps"] == 2 and r["variants"] == 2,
                   what="the render settings")
        page.get_by_role("button", name="Render scene").click()
        page.locator("#noise-note").get_by_text("NOISE").wait_for(timeout=90_000)
        renders = wait_until(lambda: read_project(folder)["scenes"][0]["renders"], what="the renders")
        assert len(renders) == 2 and all(r["is_noise"] and r["backend"].startswith("tiny") for r in renders)
        assert renders[0]["seed"] != renders[1]["seed"]
        page.locator("#variant-choice").get_by_text("variant 2", exact=False).click()
        page.get_by_role("button", name="Use this variant in the export").click()
        wait_until(lambda: read_project(folder)["scenes"][0]["chosen_render"] == 1, what="the chosen variant")
        rendered_frames, _ = mp4_facts(folder / renders[1]["path"])
        artifacts.shot(page, "scene rendered")

        # 7. Export: the story video plays and lasts what its scenes add up to.
        open_tab(page, "Export")
        page.get_by_role("button", name="Export story video").click()
        page.locator("#export-summary").get_by_text("frames at").wait_for(timeout=60_000)
        artifacts.shot(page, "exported")
        saved = read_project(folder)
        fps = saved["settings"]["video"]["fps"]
        per_scene = [rendered_frames] + [saved["settings"]["video"]["num_frames"]] * (len(saved["scenes"]) - 1)
        frames, seconds = mp4_facts(folder / "exports" / "story-001.mp4")
        assert frames == sum(per_scene)
        assert seconds == pytest.approx(sum(per_scene) / fps, abs=1e-6)
        subtitles = (folder / "exports" / "story-001.srt").read_text(encoding="utf-8")
        assert narration in subtitles
        # The player shows the cues: the WebVTT file as the video's captions track.
        assert page.locator("#export-video video track").get_attribute("src").endswith("/story-001.vtt")
        manifest = json.loads((folder / "exports" / "story-001.json").read_text(encoding="utf-8"))
        assert manifest["scenes"][0]["seed"] == renders[1]["seed"] and manifest["contains_noise"]
