"""Issue 15 in a real headless Chromium, tab by tab: nothing is thrown away without a question (Plan story,
Remove character, Revert to saved), reference images go to the character shown and can be taken off,
switching projects never shows a raw Gradio error, clips found for one motion are not approved for another,
the render history keeps every variant with its settings, job status says what is going on and what was
kept, priors can be bound, unbound and deleted, and exports keep the earlier ones."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from media_files import moving_square_clip
from browser import (AppServer, app_home, artifacts, chromium, fill_and_leave, new_page,  # noqa: F401
                     open_tab, read_project, toast_texts, wait_until)

pytestmark = pytest.mark.browser

RAW_GRADIO_ERROR = "is not in the list of choices"


def choose(page, selector: str, option: str) -> None:
    """Pick an option of a Gradio dropdown by (the start of) its label."""
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option, exact=False).first.click()


def no_raw_errors(page) -> None:
    texts = toast_texts(page)
    assert not any(RAW_GRADIO_ERROR in t or "Value: " in t for t in texts), texts


def test_story_and_project_tabs_ask_before_throwing_work_away(chromium, app_home, artifacts, tmp_path):
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"

        # Item 4: editing a table cell keeps the character chosen; the upload box names it; images go there.
        choose(page, "#character-choice", "Rusty (rusty)")
        wait_until(lambda: "Rusty" in page.locator("#reference-upload").inner_text(), what="the upload box names Rusty")
        cell = page.locator("#characters [data-testid='cell-0-3']")  # Pip's description
        cell.dblclick()
        editor = page.locator("#characters textarea, #characters input").first
        editor.fill("a small brown owl with big eyes")
        editor.press("Enter")
        wait_until(lambda: read_project(folder)["characters"][0]["description"] == "a small brown owl with big eyes",
                   what="the edited description")
        page.wait_for_timeout(500)
        assert page.locator("#character-choice input").input_value() == "Rusty (rusty)"
        assert "Add reference images of Rusty (rusty)" in page.locator("#reference-upload").inner_text()
        picture = tmp_path / "rusty side.png"
        Image.new("RGB", (96, 96), (200, 90, 30)).save(picture)
        page.locator("#reference-upload input[type=file]").set_input_files(str(picture))
        story = wait_until(lambda: (s := read_project(folder))["characters"][1]["reference_images"][2:] and s,
                           what="the image added to Rusty")
        assert story["characters"][1]["reference_images"][2] == "media/characters/rusty_3.png"
        assert len(story["characters"][0]["reference_images"]) == 2, "Pip got nothing"
        artifacts.shot(page, "image added to the chosen character")

        # Item 4: a reference image can be taken off (the third picture of Rusty's gallery).
        wait_until(lambda: page.locator("#reference-gallery img").count() == 3, what="three pictures of Rusty")
        page.locator("#reference-gallery img").nth(2).click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Remove the selected image").click()
        wait_until(lambda: read_project(folder)["characters"][1]["reference_images"]
                   == ["media/characters/rusty_1.png", "media/characters/rusty_2.png"], what="the image removed")
        assert (folder / "media/characters/rusty_3.png").is_file(), "the file stays for undo"

        # Item 3: removing a character bound to entities asks, says what happens, and then unbinds it.
        page.get_by_role("button", name="Remove character").click()
        question = page.locator("#confirm-remove-character-text")
        wait_until(lambda: "entity box(es)" in question.inner_text(), what="the question about Rusty")
        assert "Rusty" in question.inner_text()
        artifacts.shot(page, "remove character asks")
        page.locator("#confirm-remove-character-no").click()
        wait_until(lambda: not page.locator("#confirm-remove-character-yes").is_visible(), what="the question closed")
        assert [c["id"] for c in read_project(folder)["characters"]] == ["pip", "rusty"]
        page.get_by_role("button", name="Remove character").click()
        page.locator("#confirm-remove-character-yes").click()
        story = wait_until(lambda: (s := read_project(folder)) and len(s["characters"]) == 1 and s,
                           what="Rusty removed")
        assert not any(e["character_id"] == "rusty" for s in story["scenes"] for k in s["keyframes"]
                       for e in k["entities"])

        # Item 3: Plan story over a planned story asks first; the edits stay until the user confirms.
        open_tab(page, "Storyboard")
        narration = "My own words for the first scene."
        fill_and_leave(page, "#narration", narration)
        wait_until(lambda: read_project(folder)["scenes"][0]["narration"] == narration, what="the narration")
        open_tab(page, "Story")
        fill_and_leave(page, "#story-title", "")
        topic = ("Pip the owl who cannot sleep at night wanders through the whole forest looking for somebody "
                 "to talk to")
        fill_and_leave(page, "#story-topic", topic)
        wait_until(lambda: read_project(folder)["title"] == "", what="the empty title")
        page.get_by_role("button", name="Plan story").click()
        question = page.locator("#confirm-plan-text")
        wait_until(lambda: "throws away" in question.inner_text(), what="the Plan story question")
        assert "your edits in" in question.inner_text()
        artifacts.shot(page, "plan story asks")
        assert read_project(folder)["scenes"][0]["narration"] == narration, "nothing replaced before the answer"
        page.locator("#confirm-plan-yes").click()
        story = wait_until(lambda: (s := read_project(folder))["topic"] == topic and s["title"] and s,
                           timeout=30, what="the new plan")
        # No title: the new one is the topic cut at a word boundary, not mid-word.
        title = story["title"]
        assert len(title) <= 80 and title.endswith("…"), title
        assert topic.startswith(title[:-1]) and topic[len(title) - 1] == " ", title
        wait_until(lambda: not page.locator("#confirm-plan-yes").is_visible(), what="the question closed")

        # Item 3: "Replace my edits too" is for one re-plan only.
        open_tab(page, "Storyboard")
        page.locator("#replace-edits input").check()
        page.get_by_role("button", name="Re-plan scene").click()
        wait_until(lambda: not page.locator("#replace-edits input").is_checked(), what="the box unticked")
        artifacts.shot(page, "replace edits reset")

        # Item 3: Revert to saved asks when there are unsaved changes.
        open_tab(page, "Project")
        page.locator("#autosave input").uncheck()
        open_tab(page, "Story")
        fill_and_leave(page, "#story-title", "A title not saved")
        open_tab(page, "Project")
        wait_until(lambda: "unsaved changes" in page.locator("#project-status").inner_text(), what="unsaved")
        page.get_by_role("button", name="Revert to saved").click()
        wait_until(lambda: "drops every change" in page.locator("#confirm-revert-text").inner_text(),
                   what="the Revert question")
        page.locator("#confirm-revert-no").click()
        assert "unsaved changes" in page.locator("#project-status").inner_text()
        page.get_by_role("button", name="Revert to saved").click()
        page.locator("#confirm-revert-yes").click()
        wait_until(lambda: "all changes saved" in page.locator("#project-status").inner_text(), what="reverted")
        assert page.locator("#story-title input, #story-title textarea").first.input_value() == title
        page.locator("#autosave input").check()

        # Item 6: a new project while a scene the new project lacks is selected: no raw Gradio error.
        open_tab(page, "Storyboard")
        page.locator("#scene-list").get_by_text("3.", exact=False).first.click()
        page.wait_for_timeout(500)
        open_tab(page, "Project")
        page.locator("#new-folder input, #new-folder textarea").first.fill("empty one")
        page.get_by_role("button", name="New empty project").click()
        wait_until(lambda: "0 scenes" in page.locator("#project-status").inner_text(), what="the new project")
        page.wait_for_timeout(1500)
        no_raw_errors(page)
        assert page.locator(".error, [data-testid='error']").count() == 0 or not page.locator(
            ".error").first.is_visible()
        artifacts.shot(page, "new project without errors")
        no_raw_errors(page)


def test_opening_an_empty_backup_with_a_scene_selected_shows_no_raw_error(chromium, app_home, artifacts):
    """Item 6, second case: the damaged project's backup is an empty story."""
    from dreamrunner.project import Project
    from dreamrunner.story import Story

    folder = app_home / "projects" / "broken"
    project = Project.create(folder, Story(title="broken"))
    with project.edit():  # a second save: project.json.bak now holds the empty story too
        project.story.title = "broken, saved twice"
    (folder / "project.json").write_text("{ not json", encoding="utf-8")
    assert (folder / "project.json.bak").is_file()
    (app_home / "state.json").write_text(json.dumps({"last_project": str(folder.resolve())}), encoding="utf-8")
    # Started on a damaged last project: the demo opens and the page offers the backup.
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        open_tab(page, "Storyboard")
        page.locator("#scene-list").get_by_text("2.", exact=False).first.click()
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Open the backup").click()
        wait_until(lambda: "0 scenes" in page.locator("#project-status").inner_text(), what="the backup open")
        page.wait_for_timeout(1500)
        artifacts.shot(page, "backup opened")
        no_raw_errors(page)


def test_clips_belong_to_their_motion(chromium, app_home, artifacts, tmp_path):
    """Item 5: clips found for one motion are not approved for another; removing an approval removes that
    one only; the count of clips to review follows Reject."""
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        # Scene 3 gets two motions the demo clip library has clips of.
        open_tab(page, "Storyboard")
        page.locator("#scene-list").get_by_text("3.", exact=False).first.click()
        wait_until(lambda: "flying" in page.locator("#motions textarea").input_value(), what="scene 3")
        fill_and_leave(page, "#motions", "jumping\nrunning")
        wait_until(lambda: read_project(folder)["scenes"][2]["motions"] == ["jumping", "running"], what="motions")
        open_tab(page, "Motion clips")
        choose(page, "#clips-scene", "3.")
        wait_until(lambda: page.locator("#clips-motion input").input_value() == "jumping", what="the first motion")
        page.get_by_role("button", name="Find clips").click()
        page.locator("#clip-info").get_by_text("score").wait_for(timeout=90_000)
        notes = page.locator("#clips-notes").inner_text()
        found = int(notes.split(" clip(s)")[0].split()[-1])
        assert found >= 2, notes
        artifacts.shot(page, "clips for jumping")

        # Switching the motion drops the clips found for the other one: Approve has nothing to attach.
        choose(page, "#clips-motion", "running")
        wait_until(lambda: "Find clips for this motion" in page.locator("#clips-notes").inner_text(),
                   what="the clips of 'jumping' cleared")
        page.get_by_role("button", name="Approve", exact=True).click()
        wait_until(lambda: any("select a retrieved clip" in t for t in toast_texts(page)), what="the refusal")
        assert read_project(folder)["scenes"][2]["approved_clips"] == []
        artifacts.shot(page, "motion switched")

        # Reject updates the count of clips still to review.
        choose(page, "#clips-motion", "jumping")
        page.get_by_role("button", name="Find clips").click()
        wait_until(lambda: f"{found} clip(s)" in page.locator("#clips-notes").inner_text(), timeout=90,
                   what="the clips found again")
        page.get_by_role("button", name="Reject").click()
        wait_until(lambda: f"{found - 1} clip(s)" in page.locator("#clips-notes").inner_text(),
                   what="the count after Reject")
        page.get_by_role("button", name="Approve", exact=True).click()
        approved = wait_until(lambda: read_project(folder)["scenes"][2]["approved_clips"], what="the approval")
        assert [c["motion"] for c in approved] == ["jumping"]

        # One clip approved for both motions; removing one approval keeps the other.
        own = tmp_path / "my-move.mp4"
        moving_square_clip(own)
        for motion in ("running", "jumping"):
            choose(page, "#clips-motion", motion)
            wait_until(lambda: page.locator("#clips-motion input").input_value() == motion, what=motion)
            page.locator("#own-clip input[type=file]").set_input_files(str(own))
            wait_until(lambda: any(c["id"] == "user-my-move" and c["motion"] == motion
                                   for c in read_project(folder)["scenes"][2]["approved_clips"]), what=f"own {motion}")
        choose(page, "#approved-choice", "running: user-my-move")
        page.get_by_role("button", name="Remove from approved").click()
        clips = wait_until(lambda: (c := read_project(folder)["scenes"][2]["approved_clips"]) and len(c) == 2 and c,
                           what="one approval removed")
        assert ("jumping", "user-my-move") in [(c["motion"], c["id"]) for c in clips]
        assert all(c["motion"] == "jumping" for c in clips)
        artifacts.shot(page, "approvals")


def set_number(page, selector: str, value: int) -> None:
    box = page.locator(f"{selector} input")
    box.fill(str(value))
    box.press("Tab")


def test_render_history_and_job_status(chromium, app_home, artifacts):
    """Items 7 and 9: every variant stays listed with its settings until deleted; progress says each thing
    once; a job waiting behind another tab's job says so; a cancel ends with what was kept."""
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        open_tab(page, "Render")
        labels = lambda: page.locator("#variant-choice label").all_inner_texts()  # noqa: E731
        # Issue 17: the negative prompt is shown and saved; a scene gets its own settings and drops them again.
        seeds = page.locator("#render-seed textarea, #render-seed input").first
        wait_until(lambda: seeds.input_value() == "42", what="the settings shown")  # the tab's values have come
        fill_and_leave(page, "#render-negative", "blurry, watermark")
        wait_until(lambda: read_project(folder)["settings"]["render"]["negative_prompt"] == "blurry, watermark",
                   what="the negative prompt")
        page.locator("#render-scope").get_by_text("This scene").click()
        use_default = page.locator("#render-use-default input")
        wait_until(lambda: use_default.is_visible() and use_default.is_checked(), what="the story-default box")
        set_number(page, "#render-guidance", 4.5)
        wait_until(lambda: (read_project(folder)["scenes"][0].get("render") or {}).get("guidance_scale") == 4.5,
                   what="the scene's own guidance")
        wait_until(lambda: not use_default.is_checked(), what="the box unticked")
        use_default.check()
        wait_until(lambda: read_project(folder)["scenes"][0].get("render") is None, what="the story default again")
        page.locator("#render-scope").get_by_text("Story default").click()
        for steps in (2, 3):
            set_number(page, "#render-steps", steps)
            wait_until(lambda: read_project(folder)["settings"]["render"]["steps"] == steps, what="the steps")
            page.get_by_role("button", name="Render scene").click()
            wait_until(lambda: any(f"{steps} steps" in label for label in labels()), timeout=120,
                       what=f"the variant of {steps} steps")
        renders = read_project(folder)["scenes"][0]["renders"]
        assert [r["steps"] for r in renders] == [2, 3] and renders[0]["seed"] == renders[1]["seed"]
        assert all("seed 42" in label and re.search(r"guidance 6 · (ddim|dpm) sampler · sr3ai-fast · tiny", label)
                   and "current plan" in label for label in labels()), labels()
        artifacts.shot(page, "two variants listed")

        # A variant of an older plan stays listed, marked as such.
        open_tab(page, "Storyboard")
        fill_and_leave(page, "#narration", "Pip wakes up late.")
        wait_until(lambda: read_project(folder)["scenes"][0]["narration"] == "Pip wakes up late.", what="narration")
        open_tab(page, "Render")
        wait_until(lambda: len(labels()) == 2 and all("older plan" in label for label in labels()),
                   what="variants of the older plan")

        # Delete the first variant: the list and the story lose it, the file stays.
        page.locator("#variant-choice").get_by_text("variant 1", exact=False).click()
        page.get_by_role("button", name="Delete this variant").click()
        wait_until(lambda: [r["steps"] for r in read_project(folder)["scenes"][0]["renders"]] == [3],
                   what="the variant deleted")
        wait_until(lambda: len(labels()) == 1 and "3 steps" in labels()[0], what="one variant listed")
        assert (folder / renders[0]["path"]).is_file()
        artifacts.shot(page, "variant deleted")

        # A long single-scene render: the progress names the scene once, not "scene 1/4", and the step once.
        set_number(page, "#render-steps", 500)
        wait_until(lambda: read_project(folder)["settings"]["render"]["steps"] == 500, what="500 steps")
        page.get_by_role("button", name="Render scene").click()
        progress = page.locator("#render-progress")
        text = wait_until(lambda: (t := progress.inner_text()) and "step " in t and "scene" in t and t,
                          timeout=60, what="render progress")
        assert "scene s1" in text and "1/4" not in text and "of 4" not in text, text
        assert text.count("step ") == 1, text

        # Another tab asks for a render meanwhile: it waits, says so, and shows no earlier result.
        other = new_page(chromium, app.url)
        open_tab(other, "Render")
        other.get_by_role("button", name="Render scene").click()
        wait_until(lambda: "waiting for the GPU" in other.locator("#render-progress").inner_text(),
                   what="the waiting job's note")
        assert "rendered" not in other.locator("#render-progress").inner_text()
        # Gradio's own tracker on the progress area gives the place in the GPU queue.
        wait_until(lambda: "queue" in other.locator("#render-progress").inner_text(), what="the queue position")
        artifacts.shot(other, "second tab waits")

        # Cancel: the job's own area ends saying what was kept; no stale "cancelling" stays.
        page.get_by_role("button", name="Cancel").click()
        wait_until(lambda: "cancelled" in progress.inner_text(), timeout=60, what="the cancel")
        page.wait_for_timeout(1000)
        assert "nothing new was kept" in progress.inner_text() and "cancelling" not in progress.inner_text()
        other.get_by_role("button", name="Cancel").click()
        wait_until(lambda: "cancelled" in other.locator("#render-progress").inner_text(), timeout=60,
                   what="the second tab's cancel")
        other.close()

        # Render all, cancelled while scene 1 renders.
        page.get_by_role("button", name="Render all scenes").click()
        text = wait_until(lambda: (t := progress.inner_text()) and "step " in t and t, timeout=60, what="render all")
        assert "scene 1 of 4 (s1)" in text, text
        page.get_by_role("button", name="Cancel").click()
        wait_until(lambda: "cancelled" in progress.inner_text(), timeout=60, what="render all cancelled")
        page.wait_for_timeout(1000)
        assert "cancelling" not in progress.inner_text()
        assert "nothing new was kept" in progress.inner_text()
        artifacts.shot(page, "render all cancelled")


def test_priors_can_be_bound_unbound_and_deleted(chromium, app_home, artifacts):
    """Item 3 (priors) and item 9 (a message when training ends)."""
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        open_tab(page, "Priors")
        set_number(page, "#prior-steps", 2)
        wait_until(lambda: read_project(folder)["settings"]["prior"]["max_steps"] == 2, what="2 steps")
        page.get_by_role("button", name="Train subject prior").click()
        # A toast says so, whichever tab is open by then.
        open_tab(page, "Story")
        wait_until(lambda: any("trained 2 steps" in t and "bound to" in t for t in toast_texts(page)),
                   timeout=180, what="the message that training ended")
        artifacts.shot(page, "trained")
        open_tab(page, "Priors")
        prior = read_project(folder)["priors"][0]
        assert prior["kind"] == "subject" and prior["target"] == "pip"

        choose(page, "#prior-scenes", "2.")
        page.keyboard.press("Escape")
        set_number(page, "#prior-scale", 0.5)
        page.get_by_role("button", name="Bind", exact=True).click()
        wait_until(lambda: {"prior_id": prior["id"], "scale": 0.5} in read_project(folder)["scenes"][1]["prior_bindings"],
                   what="bound to scene 2 at 0.5")
        wait_until(lambda: "s2 ×0.5" in page.locator("#priors").inner_text(), what="the table shows the scale")
        page.get_by_role("button", name="Unbind", exact=True).click()  # scene 2 still chosen
        wait_until(lambda: read_project(folder)["scenes"][1]["prior_bindings"] == [], what="unbound from scene 2")
        assert any(b["prior_id"] == prior["id"] for b in read_project(folder)["scenes"][0]["prior_bindings"])
        page.get_by_role("button", name="Delete prior").click()
        story = wait_until(lambda: (s := read_project(folder))["priors"] == [] and s, what="the prior deleted")
        assert all(s["prior_bindings"] == [] for s in story["scenes"])
        assert (folder / prior["path"]).is_file(), "the file stays for reuse"
        artifacts.shot(page, "prior deleted")


def test_exports_are_kept_and_subtitles_show_once(chromium, app_home, artifacts):
    """Item 10: the player's subtitle track has the cues; each export is a new file; an animatic scene with
    burned subtitles does not also draw its narration, nor its caption under the subtitles."""
    from dreamrunner.project import Project
    from dreamrunner.rendering.animatic import render_animatic
    from dreamrunner.video_io import read_video

    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        open_tab(page, "Export")
        page.get_by_role("button", name="Export story video").click()
        page.locator("#export-summary").get_by_text("frames at").wait_for(timeout=90_000)
        cues = page.evaluate("""async () => {
            const track = document.querySelector('#export-video video track');
            track.track.mode = 'showing';
            for (let i = 0; i < 50 && !(track.track.cues && track.track.cues.length); i++)
                await new Promise(r => setTimeout(r, 100));
            return track.track.cues ? Array.from(track.track.cues).map(c => c.text) : [];
        }""")
        story = read_project(folder)
        assert cues and cues[0] == story["scenes"][0]["narration"], cues

        page.locator("#export-burn input").check()
        page.get_by_role("button", name="Export story video").click()
        page.locator("#export-summary").get_by_text("story-002.mp4").wait_for(timeout=90_000)
        assert (folder / "exports/story-001.mp4").is_file() and (folder / "exports/story-002.mp4").is_file()
        page.locator("#export-choice input").click()
        assert [t.split()[-1] for t in page.get_by_role("option").all_inner_texts()] == ["story-002.mp4", "story-001.mp4"]
        page.keyboard.press("Escape")
        artifacts.shot(page, "two exports")

        project = Project.load(folder)
        scene, video = project.story.scenes[0], project.story.settings.video
        middle = video.num_frames // 2
        burned = read_video(folder / "exports/story-002.mp4", [middle])[0].astype(int)
        clear = render_animatic(scene, video, subtitles_below=True)[middle].astype(int)
        spoken = render_animatic(scene, video)[middle].astype(int)
        top = slice(0, video.height // 8)
        # The top shows the caption, not the narration (the subtitles carry it)...
        assert np.abs(burned[top] - clear[top]).mean() < 6
        assert np.abs(burned[top] - spoken[top]).mean() > 2 * np.abs(burned[top] - clear[top]).mean()
        # ...and the subtitles at the bottom are drawn over nothing of the animatic's own text.
        bottom = slice(video.height * 3 // 4, video.height)
        assert (np.abs(burned[bottom] - clear[bottom]).max(axis=-1) > 60).sum() > 200, "no subtitles drawn"
        assert np.abs(clear[bottom] - render_animatic(scene.model_copy(update={"narration": "", "background": "x"}),
                                                      video, subtitles_below=True)[middle][bottom]).max() == 0
