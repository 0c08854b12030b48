"""Two browser tabs on one project: a drag made in a tab that shows an older layout is refused with a message
and the tab is redrawn with the current boxes; nothing is dropped silently."""

from __future__ import annotations

import pytest

from browser import (AppServer, app_home, artifacts, chromium, drag_box, new_page, open_tab,  # noqa: F401
                     read_project, toast_texts, wait_until)

pytestmark = pytest.mark.browser


def test_a_drag_in_a_stale_tab_is_refused_with_a_message(chromium, app_home, artifacts):
    app = AppServer(app_home).start()
    try:
        folder = app_home / "projects" / "demo"
        first, second = new_page(chromium, app.url), new_page(chromium, app.url)
        for page in (first, second):
            open_tab(page, "Storyboard")
            page.locator("#box-editor canvas").first.wait_for()
        before = read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0]
        assert before["name"] == "Pip"

        # The first tab moves Pip; the second tab still shows Pip where he was.
        drag_box(first, before["box"], 72, 48)
        moved = wait_until(lambda: (e := read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0])["box"]
                           != before["box"] and e, what="the first tab's drag in project.json")
        artifacts.shot(first, "first tab moved pip")
        artifacts.shot(second, "second tab still shows the old layout")

        drag_box(second, before["box"], -72, 0)
        wait_until(lambda: any("changed elsewhere" in t for t in toast_texts(second)),
                   what="the stale-tab message in the second tab")
        # The second tab now shows the stored boxes (the first tab's drag), and the file kept them.
        wait_until(lambda: f"{moved['box'][0]:g}" in second.locator("#entities").inner_text(),
                   what="the refreshed entity table in the second tab")
        assert read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0]["box"] == moved["box"]
        artifacts.shot(second, "second tab refused and refreshed")

        # Once refreshed, the second tab's next drag is applied.
        drag_box(second, moved["box"], -72, 0)
        wait_until(lambda: read_project(folder)["scenes"][0]["keyframes"][0]["entities"][0]["box"][0]
                   < moved["box"][0] - 0.05, what="the second tab's drag after the refresh")
    finally:
        app.stop()
