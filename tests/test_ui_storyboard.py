"""The storyboard editor in a real headless Chromium: narration edits, dragging a box, the entity table,
readable errors, and an app restart that finds the project as it was."""

from __future__ import annotations

import pytest
from PIL import Image

from browser import (IMAGE_H, IMAGE_W, AppServer, app_home, artifacts, chromium, drag_box,  # noqa: F401
                           fill_and_leave, new_page, open_tab, read_project, toast_texts, wait_until)

pytestmark = pytest.mark.browser

def test_storyboard_edits_reach_the_project_and_survive_a_restart(chromium, app_home, artifacts, tmp_path):
    app = AppServer(app_home).start()
    try:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        assert (folder / "project.json").is_file(), "a fresh app opens a copy of the demo story"
        artifacts.shot(page, "opened demo")

        open_tab(page, "Storyboard")
        page.locator("#box-editor canvas").first.wait_for()
        artifacts.shot(page, "storyboard")

        # Narration: typed, saved when the field loses focus, marked as the user's.
        new_narration = "At dusk, Pip opens one sleepy eye and stretches."
        fill_and_leave(page, "#narration", new_narration)
        scene = wait_until(lambda: (s := read_project(folder)["scenes"][0])["narration"] == new_narration and s,
                           what="the new narration in project.json")
        assert "narration" in scene["user_edited"]
        artifacts.shot(page, "narration changed")

        # Drag Pip's box on keyframe 1 by (72, 48) pixels: the project gets the moved normalized box.
        before = scene["keyframes"][0]["entities"][0]
        assert before["name"] == "Pip"
        drag_box(page, before["box"], 72, 48)
        moved = wait_until(lambda: (e := read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0])["box"]
                           != before["box"] and e, what="the dragged box in project.json")
        expected = [before["box"][0] + 72 / IMAGE_W, before["box"][1] + 48 / IMAGE_H,
                    before["box"][2] + 72 / IMAGE_W, before["box"][3] + 48 / IMAGE_H]
        assert moved["box"] == pytest.approx(expected, abs=2.5 / IMAGE_H)
        assert "box" in moved["user_edited"]
        # The other entity and the other keyframes did not move.
        after = read_project(folder)["scenes"][0]
        assert after["keyframes"][0]["entities"][1]["box"] == scene["keyframes"][0]["entities"][1]["box"]
        assert after["keyframes"][1] == scene["keyframes"][1]
        # The table shows the new coordinates.
        wait_until(lambda: f"{moved['box'][0]:g}" in page.locator("#entities").inner_text(),
                   what="the moved box in the entity table")
        artifacts.shot(page, "box dragged")

        # Another keyframe shows its own boxes; adding an entity there marks the keyframe edited.
        page.locator("#keyframe").get_by_text("4", exact=True).click()
        page.get_by_role("button", name="Add entity").click()
        keyframe = wait_until(lambda: (k := read_project(folder)["scenes"][0]["keyframes"][3])["entities"][-1]
                              ["name"] == "entity 3" and k, what="the added entity")
        assert "entities" in keyframe["user_edited"]
        artifacts.shot(page, "entity added on keyframe 4")

        # Descriptions are edited in the entity table.
        cell = page.locator("#entities [data-testid='cell-1-3']")  # row 2 (the oak branch), description
        assert cell.inner_text().strip() == "a thick mossy oak branch"
        cell.dblclick()
        editor = page.locator("#entities textarea, #entities input").first
        editor.fill("a thick mossy oak branch in the last light")
        editor.press("Enter")
        entity = wait_until(lambda: (e := read_project(folder)["scenes"][0]["keyframes"][3]["entities"][1])
                            ["description"].endswith("last light") and e, what="the edited description")
        assert "description" in entity["user_edited"]

        # Bad input is refused with a readable message and changes nothing; good input is taken.
        open_tab(page, "Story")
        saved = read_project(folder)
        page.get_by_label("New character name").fill("")
        page.get_by_role("button", name="Add character").click()
        wait_until(lambda: any("give the new character a name" in t for t in toast_texts(page)),
                   what="the error message")
        artifacts.shot(page, "readable error")
        not_an_image = tmp_path / "scan.png"
        not_an_image.write_text("not a picture")
        page.locator("#reference-upload input[type=file]").set_input_files(str(not_an_image))
        wait_until(lambda: any("scan.png is not an image" in t for t in toast_texts(page)), what="the image error")
        assert read_project(folder) == saved
        picture = tmp_path / "pip-side.png"
        Image.new("RGB", (96, 96), (120, 80, 40)).save(picture)
        page.locator("#reference-upload input[type=file]").set_input_files(str(picture))
        wait_until(lambda: len(read_project(folder)["characters"][0]["reference_images"]) == 3,
                   what="the added reference image")
        assert (folder / "media" / "characters" / "pip_3.png").is_file()
        artifacts.shot(page, "reference image added")
        saved = read_project(folder)

        # Restart the app without warning (kill -9): the next app reopens the project as it was.
        app.stop(kill=True)
        page.close()
        app = AppServer(app_home).start()
        page = new_page(chromium, app.url)
        assert read_project(folder) == saved
        open_tab(page, "Storyboard")
        narration = page.locator("#narration textarea")
        wait_until(lambda: narration.input_value() == new_narration, what="the narration after the restart")
        wait_until(lambda: f"{moved['box'][0]:g}" in page.locator("#entities").inner_text(),
                   what="the moved box in the entity table after the restart")
        assert str(folder) in page.locator("#project-status").inner_text()
        artifacts.shot(page, "after restart")
    finally:
        app.stop()


def test_plan_offline_then_replan_a_scene_keeping_the_edits(chromium, app_home, artifacts):
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        folder = app_home / "projects" / "demo"
        fill_and_leave(page, "#story-topic", "Rusty the fox learns to swim in the river")
        page.get_by_role("button", name="Plan story").click()
        page.locator("#confirm-plan-yes").click()  # the demo is planned: Plan story asks first
        planned = wait_until(lambda: (s := read_project(folder))["topic"].startswith("Rusty the fox learns")
                             and s["scenes"][0]["background"] != "a huge old oak tree at dusk, warm orange sky"
                             # the story plan is saved first, each scene plan as it arrives: wait for the last
                             and all(any(k["entities"] for k in scene["keyframes"]) for scene in s["scenes"]) and s,
                             timeout=30, what="the planned story")
        assert 5 <= len(planned["scenes"]) <= 8
        artifacts.shot(page, "planned")

        open_tab(page, "Storyboard")
        page.locator("#box-editor canvas").first.wait_for()
        fill_and_leave(page, "#narration", "My own words.")
        first = planned["scenes"][0]["keyframes"][0]["entities"][0]
        drag_box(page, first["box"], 30, 0)
        edited = wait_until(lambda: (s := read_project(folder)["scenes"][0])["keyframes"][0]["entities"][0]["box"]
                            != first["box"] and s["narration"] == "My own words." and s, what="the edits")
        page.get_by_role("button", name="Re-plan scene").click()
        wait_until(lambda: any("keeping your edits" in t for t in toast_texts(page)), what="the re-plan notice")
        replanned = read_project(folder)["scenes"][0]
        assert replanned["narration"] == "My own words."
        moved = edited["keyframes"][0]["entities"][0]
        # The entity is the one of that name (a re-plan may list a keyframe's entities in another order).
        kept = [e for e in replanned["keyframes"][0]["entities"] if e["name"] == moved["name"]]
        assert [e["box"] for e in kept] == [moved["box"]], (replanned["keyframes"][0], moved)
        artifacts.shot(page, "re-planned keeping edits")


def test_project_tab_new_open_and_save_without_autosave(chromium, app_home, artifacts):
    with AppServer(app_home) as app:
        page = new_page(chromium, app.url)
        demo = app_home / "projects" / "demo"
        second = app_home / "projects" / "second"
        open_tab(page, "Project")
        page.get_by_label("Folder (a name under the projects folder, or a path)").fill("second")
        page.get_by_role("button", name="New from the demo story").click()
        wait_until(lambda: str(second) in page.locator("#project-status").inner_text(), what="the new project")
        assert read_project(second)["title"] == "Pip and Rusty"
        assert (second / "media" / "characters" / "pip_1.png").is_file()

        # Autosave off: an edit waits for Save.
        page.get_by_label("Autosave").uncheck()
        wait_until(lambda: "autosave" in (app_home / "state.json").read_text() and
                   '"autosave": false' in (app_home / "state.json").read_text(), what="autosave off")
        open_tab(page, "Story")
        fill_and_leave(page, "#story-title", "The second story")
        page.locator("#project-status").get_by_text("unsaved changes").wait_for()
        assert read_project(second)["title"] == "Pip and Rusty"
        open_tab(page, "Project")
        page.get_by_role("button", name="Save", exact=True).click()
        wait_until(lambda: read_project(second)["title"] == "The second story", what="the saved title")
        artifacts.shot(page, "saved")

        # Open the demo again from the project list.
        page.locator("#recent-projects input").fill(str(demo))
        page.get_by_role("button", name="Open", exact=True).click()
        wait_until(lambda: str(demo) in page.locator("#project-status").inner_text(), what="the demo reopened")
        assert f'"last_project": "{demo}"' in (app_home / "state.json").read_text()
        artifacts.shot(page, "demo reopened")
