"""Plan story as an editor job (issue 20), in a real headless Chromium against a loopback LLM server that
streams slowly: the progress area follows the story plan, then each scene plan, and lists the planner's
retries; Cancel stops the LLM mid-answer and the page says what was kept; the finished plans stay saved, and
Plan story again goes on from them as `dreamrunner plan` does (the story plan is not asked for again)."""

from __future__ import annotations

import pytest

from dreamrunner.planning.base import is_planned
from dreamrunner.project import Project
from dreamrunner.story import Character, Story

from browser import AppServer, app_home, artifacts, chromium, new_page, read_project, wait_until  # noqa: F401
from llm_server import LLMServer, Reply
from planning_answers import GOOD_SCENE, STORY_ANSWER

pytestmark = pytest.mark.browser

TOPIC = "a witch's first delivery"


def unplanned_project(folder):
    """A story with its topic and characters and no plan yet (Plan story asks nothing over it)."""
    story = Story(title="", topic=TOPIC, characters=[
        Character(id="mira", name="Mira", token="[v1]", description="a young witch with a pointed hat"),
        Character(id="pip", name="Pip", token="[v2]", description="a small black cat")])
    return Project.create(folder, story).folder


def planned(folder) -> list[bool]:
    return [any(k["entities"] for k in scene["keyframes"]) for scene in read_project(folder)["scenes"]]


def test_plan_story_shows_progress_cancels_mid_answer_and_resumes(chromium, app_home, artifacts):
    folder = unplanned_project(app_home / "projects" / "witch")
    with LLMServer(chunk=16) as server:
        # A first answer that is no JSON (the planner asks again, and says so), the story plan, scene 1, then
        # scene 2 streamed slowly: the user cancels while it arrives.
        server.llm.queue("Sure! Here is the story plan you asked for.", STORY_ANSWER, GOOD_SCENE,
                         Reply(GOOD_SCENE, chunk_delay=0.5))
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "DREAMRUNNER_LLM_MODEL": "qwen"}
        with AppServer(app_home, project=folder, env=env) as app:
            page = new_page(chromium, app.url)
            progress = page.locator("#plan-progress")
            page.get_by_role("button", name="Plan story").click()
            progress.get_by_text("plan of scene 's2'").wait_for(timeout=60_000)
            # The planner's retry (and its repairs of scene 1) are listed as they happen.
            shown = progress.inner_text()
            assert "retries and repairs while planning" in shown and "story plan: asked again" in shown
            artifacts.shot(page, "scene 2 arriving")
            page.locator("#plan-cancel").click()
            progress.get_by_text("cancelled by the user").wait_for(timeout=30_000)
            text = progress.inner_text()
            assert "the story plan and 1 of 6 scene plans are saved" in text and "goes on from them" in text
            artifacts.shot(page, "planning cancelled")
            # What was finished is saved: the story plan and scene 1; the LLM was asked nothing after the cancel.
            assert planned(folder) == [True] + [False] * 5
            assert read_project(folder)["title"] == "Mira's First Delivery"
            assert len(server.llm.requests) == 4
            # The storyboard shows the kept plan.
            assert page.locator("#project-status").get_by_text("6 scenes").count() == 1

            # Plan story again with the same topic goes on with the saved plan: only the 5 missing scene plans.
            server.llm.queue(*[GOOD_SCENE] * 5)
            page.get_by_role("button", name="Plan story").click()
            progress.get_by_text("went on with the saved plan and planned 6 scenes").wait_for(timeout=60_000)
            assert not page.locator("#confirm-plan").is_visible(), "nothing is replaced: nothing is asked"
            artifacts.shot(page, "plan resumed")
            assert len(server.llm.requests) == 9
            assert wait_until(lambda: all(planned(folder)), what="every scene planned")
            story = Project.load(folder).story
            assert story.title == "Mira's First Delivery" and all(is_planned(s) for s in story.scenes)
