"""Entity tracks, re-planning, undo of a re-plan and of Plan story, plain messages and the layout, in a real
headless Chromium (issue 15, items 8, 11 and 12)."""

from __future__ import annotations

import pytest
from PIL import Image

from browser import (AppServer, app_home, artifacts, chromium, fill_and_leave, new_page, open_tab,  # noqa: F401
                     read_project, toast_texts, wait_until)

pytestmark = pytest.mark.browser


def edit_cell(page, table: str, row: int, column: int, text: str) -> None:
    page.locator(f"{table} [data-testid='cell-{row}-{column}']").dblclick()
    editor = page.locator(f"{table} textarea, {table} input").first
    editor.fill(text)
    editor.press("Enter")


def count(page, text: str) -> int:
    """How many times the page's notices say `text` (toasts of one kind are grouped in one element)."""
    return sum(t.count(text) for t in toast_texts(page))


def test_entity_tracks_replanning_and_undo(chromium, app_home, artifacts):
    with AppServer(app_home) as app:
        folder = app_home / "projects" / "demo"
        page = new_page(chromium, app.url)
        open_tab(page, "Storyboard")
        page.locator("#box-editor canvas").first.wait_for()

        # Item 8: a motion typed once in the table reaches Pip on all six keyframes and the scene's motions;
        # the boxes stay per keyframe.
        before = read_project(folder)["scenes"][0]
        edit_cell(page, "#entities", 0, 2, "flapping")
        scene = wait_until(lambda: (s := read_project(folder)["scenes"][0])["keyframes"][5]["entities"][0]
                           ["motion"] == "flapping" and s, what="the motion on every keyframe")
        assert [k["entities"][0]["motion"] for k in scene["keyframes"]] == ["flapping"] * 6
        assert [k["entities"][0]["box"] for k in scene["keyframes"]] == [k["entities"][0]["box"]
                                                                          for k in before["keyframes"]]
        assert scene["motions"] == ["stretching wings", "flapping"]
        wait_until(lambda: "flapping" in page.locator("#motions textarea").input_value(), what="the motions box")
        # A description edited once is the track's too.
        edit_cell(page, "#entities", 0, 3, "[v1] Pip the owl flapping her wings")
        wait_until(lambda: all(k["entities"][0]["description"] == "[v1] Pip the owl flapping her wings"
                               for k in read_project(folder)["scenes"][0]["keyframes"]), what="the description")
        wait_until(lambda: "flapping her wings" in page.locator("#entities").inner_text(), what="the table")
        page.wait_for_timeout(500)
        # A motion changed in the scene's list changes the entities that carry it.
        fill_and_leave(page, "#motions", "stretching wings\nhopping")
        wait_until(lambda: [k["entities"][0]["motion"] for k in read_project(folder)["scenes"][0]["keyframes"]]
                   == ["hopping"] * 6, what="the renamed motion on Pip's track")
        wait_until(lambda: "hopping" in page.locator("#entities").inner_text(), what="the table")
        artifacts.shot(page, "motion edited once for all keyframes")

        # Re-planning: "Another plan" gives another plan (seed 1); undo brings the previous one back.
        planned = read_project(folder)["scenes"][1]
        page.locator("#scene-list").get_by_text("2. Rusty runs through the meadow").click()
        wait_until(lambda: "Rusty" in page.locator("#entities").inner_text(), what="scene 2")
        page.get_by_role("button", name="Another plan").click()
        replanned = wait_until(lambda: (s := read_project(folder)["scenes"][1])["keyframes"] != planned["keyframes"]
                               and s, what="another plan")
        wait_until(lambda: page.locator("#replan-seed input").input_value() == "1", what="variant 1 shown")
        artifacts.shot(page, "another plan")
        page.get_by_role("button", name="↶ Undo").click()
        wait_until(lambda: read_project(folder)["scenes"][1] == planned, what="the re-plan undone")
        page.get_by_role("button", name="↷ Redo").click()
        wait_until(lambda: read_project(folder)["scenes"][1] == replanned, what="the re-plan redone")
        # "Replace my edits too" is for one re-plan only.
        page.get_by_label("Replace my edits too (this re-plan only)").check()
        page.get_by_role("button", name="Re-plan scene").click()
        wait_until(lambda: any("replacing your edits" in t for t in toast_texts(page)), what="the re-plan")
        wait_until(lambda: not page.get_by_label("Replace my edits too (this re-plan only)").is_checked(),
                   what="the box unticked")

        # Plan story replaces the whole story; Undo brings every scene back.
        story = read_project(folder)
        open_tab(page, "Story")
        fill_and_leave(page, "#story-topic", "Rusty the fox learns to swim in the river")
        page.get_by_role("button", name="Plan story").click()
        page.locator("#confirm-plan-yes").click()  # a planned story: Plan story asks first
        wait_until(lambda: read_project(folder)["scenes"][0]["background"] != story["scenes"][0]["background"],
                   timeout=30, what="the planned story")
        # The plans are saved as they arrive, each scene on its own: undo once the last one is in.
        wait_until(lambda: any("scenes with the" in t for t in toast_texts(page)), timeout=30, what="planning done")
        page.get_by_role("button", name="↶ Undo").click()
        wait_until(lambda: read_project(folder)["scenes"] == story["scenes"], what="Plan story undone")
        wait_until(lambda: "redo: scenes" in page.locator("#project-status").inner_text(), what="the status")
        page.get_by_role("button", name="↶ Undo").click()  # the topic
        wait_until(lambda: read_project(folder)["topic"] == story["topic"], what="the topic undone")
        artifacts.shot(page, "plan story undone")


def test_messages_and_layout(chromium, app_home, artifacts, tmp_path):
    with AppServer(app_home) as app:
        folder = app_home / "projects" / "demo"
        page = new_page(chromium, app.url)

        # Item 11: Enter adds a character; a duplicate name is refused, said once; counts read right.
        box = page.get_by_label("New character name")
        box.fill("Gus")
        box.press("Enter")
        wait_until(lambda: [c["name"] for c in read_project(folder)["characters"]][-1] == "Gus", what="Gus added")
        wait_until(lambda: "3 characters" in page.locator("#project-status").inner_text(), what="the count")
        box.fill("gus")
        box.press("Enter")
        wait_until(lambda: count(page, "already has a character named 'gus'"), what="the duplicate refused")
        page.wait_for_timeout(1500)
        assert count(page, "already has a character named 'gus'") == 1
        assert [c["name"] for c in read_project(folder)["characters"]] == ["Pip", "Rusty", "Gus"]
        # An emptied name in the character table: plain words, once.
        edit_cell(page, "#characters", 2, 1, "")
        wait_until(lambda: count(page, "may not be empty"), what="the empty-name message")
        page.wait_for_timeout(1500)
        assert count(page, "may not be empty") == 1
        assert not count(page, "String should have")
        # A bad upload is named by its own file name, not the server's temporary copy.
        bad = tmp_path / "scan.png"
        bad.write_text("not a picture")
        page.locator("#reference-upload input[type=file]").set_input_files(str(bad))
        wait_until(lambda: count(page, "scan.png is not an image"), what="the image error")
        assert not [t for t in toast_texts(page) if "/tmp/" in t or "gradio/" in t], toast_texts(page)
        artifacts.shot(page, "plain messages")

        # Item 12: a single reference image is shown whole, not cropped into a strip.
        tall = tmp_path / "tall.png"
        Image.new("RGB", (80, 400), (200, 60, 60)).save(tall)
        page.locator("#character-choice input").click()
        page.get_by_role("option", name="Gus (gus)").click()
        page.locator("#reference-upload input[type=file]").set_input_files(str(tall))
        image = page.locator("#reference-gallery img").first
        image.wait_for()
        assert image.evaluate("img => getComputedStyle(img).objectFit") == "contain"

        # A table warning in the Storyboard tab is shown once.
        open_tab(page, "Storyboard")
        page.locator("#box-editor canvas").first.wait_for()
        edit_cell(page, "#entities", 0, 4, "2")
        wait_until(lambda: count(page, "outside [0, 1]"), what="the box warning")
        page.wait_for_timeout(1500)
        assert count(page, "outside [0, 1]") == 1
        # The entity table fits its panel (no horizontal scroll, headers on one line) and the entity
        # dropdown shows its whole choice.
        table = page.locator("#entities table").first
        assert table.evaluate("t => t.parentElement.scrollWidth <= t.parentElement.clientWidth + 1")
        heights = page.locator("#entities th").evaluate_all("ths => ths.map(th => th.getBoundingClientRect().height)")
        assert max(heights) < 2 * min(heights), heights
        choice = page.locator("#delete-choice input").first
        assert choice.evaluate("i => i.scrollWidth <= i.clientWidth + 1"), choice.input_value()
        artifacts.shot(page, "layout")
