"""The LLM planner against servers that behave like the small local ones users run (issue 20): a loopback
server that answers like llama-cpp-python's (json_schema refused with HTTP 500, a context limit enforced
with HTTP 400, answers streamed slowly piece by piece), and what a failure or a cancel leaves behind."""

from __future__ import annotations

import json
import sys
import threading

import pytest

from dreamrunner.cli import main
from dreamrunner.jobs import Cancelled, CancelToken
from dreamrunner.planning import LLMPlanner, PlannerSettings, PlanningError
from dreamrunner.planning.base import is_planned
from dreamrunner.planning.checks import rendering_problems, repair_for_rendering
from dreamrunner.planning.prompts import SCENE_EXAMPLE_ANSWER
from dreamrunner.planning.schema import ScenePlanAnswer, json_schema
from dreamrunner.project import Project
from dreamrunner.story import NUM_KEYFRAMES, Character

from llm_server import LLMServer, Reply
from planning_answers import GOOD_SCENE, STORY_ANSWER, scene_answer

CHARACTERS = [
    Character(id="mira", name="Mira", token="[v1]", description="a young witch with a pointed hat"),
    Character(id="pip", name="Pip", token="[v2]", description="a small black cat"),
]
TOPIC = "a witch's first delivery"


def planner_for(server: LLMServer, **settings) -> LLMPlanner:
    values = {"base_url": server.base_url, "model": "qwen", "timeout": 10.0, "first_token_timeout": 10.0,
              "http_retries": 0, **settings}
    return LLMPlanner(PlannerSettings(**values))


def test_a_story_is_planned_by_a_server_like_llama_cpp_python():
    """Reported: llama-cpp-python answers HTTP 500 "Input should be 'text' or 'json_object'" to json_schema
    and the planner stopped. It steps down to JSON mode with the schema (which that server enforces), says
    so, sends the schema in the prompt, bounds every answer, and remembers the format for the server."""
    with LLMServer(llama_cpp=True, context=8192, chunk=40) as server:
        server.llm.queue(*[Reply(answer, chunk_delay=0.002) for answer in [STORY_ANSWER, *[GOOD_SCENE] * 6]])
        planner = planner_for(server)
        progress, notes = [], []
        planner.progress, planner.note = progress.append, notes.append
        story = planner.plan_story(TOPIC, CHARACTERS)
        assert len(story.scenes) == 6 and all(is_planned(s) for s in story.scenes)
        requests = [r["body"] for r in server.llm.requests]
        assert len(requests) == 8 and len(server.llm.refused) == 1
        assert server.llm.refused[0][0] == 500 and "Input should be 'text' or 'json_object'" in server.llm.refused[0][1]
        assert requests[0]["response_format"]["type"] == "json_schema"
        assert [r["response_format"]["type"] for r in requests[1:]] == ["json_object"] * 7
        assert requests[2]["response_format"]["schema"] == json_schema(ScenePlanAnswer)
        assert json.dumps(json_schema(ScenePlanAnswer), separators=(",", ":")) in requests[2]["messages"][0]["content"]
        assert all(r["stream"] is True for r in requests)
        # The story answer's bound; each scene's is 2048 or what the 4096-token window (the default for a
        # server that does not say, as llama-cpp-python's does not) leaves beside the prompt.
        assert requests[1]["max_tokens"] == 1536 and all(1024 <= r["max_tokens"] <= 2048 for r in requests[2:])
        assert any("does not take response_format json_schema (HTTP 500" in n and "using json_object_schema" in n
                   for n in notes)
        # Progress named what was being received, in characters, and counted the scenes.
        assert any("plan of scene 's3'" in p.message and "characters" in p.message for p in progress)
        assert max(p.total for p in progress) == 6
        # Each scene's request holds the story in one line a scene and this scene, never the other scene plans:
        # the prompt does not grow scene by scene.
        sizes = [len(json.dumps(r["messages"])) for r in requests[2:]]
        assert max(sizes) - min(sizes) < 300
        assert len({json.dumps(r["messages"]).count("keyframes") for r in requests[2:]}) == 1
        # A second planner for the same server and model asks in the format found at once.
        server.llm.queue(GOOD_SCENE)
        planner_for(server).plan_scene(story, "s1")
        assert server.llm.requests[-1]["body"]["response_format"]["type"] == "json_object"
        assert len(server.llm.refused) == 1


def test_a_request_over_the_servers_context_window_is_made_to_fit():
    """Reported: a request exceeded the server's 8192-token context (HTTP 400). The server's refusal names its
    window: the planner learns it, says so, and asks again inside it with a smaller answer bound."""
    with LLMServer(llama_cpp=True, context=3000) as server:
        server.llm.queue(GOOD_SCENE)
        planner = planner_for(server, response_format="json_object")
        notes = []
        planner.note = notes.append
        story = _outline_story()
        scene = planner.plan_scene(story, "s1")
        assert scene.background == "a village lane at dawn"
        assert [status for status, _ in server.llm.refused] == [400]
        assert "exceed context window of 3000" in server.llm.refused[0][1]
        first, second = (r["body"] for r in server.llm.requests)
        # Inside 3000 tokens the worked example is left out, so the answer keeps room.
        assert len(first["messages"]) == 4 and len(second["messages"]) == 2
        assert server.llm.tokens(second) + second["max_tokens"] <= 3000
        assert any("too long for its context window (3000 tokens)" in n for n in notes)


def test_a_context_the_server_says_bounds_the_answer_and_a_prompt_that_cannot_fit_is_named():
    with LLMServer(context=2600) as server:  # GET /props says n_ctx, as llama.cpp's server does
        server.llm.queue(GOOD_SCENE)
        planner = planner_for(server)
        planner.plan_scene(_outline_story(), "s1")
        body = server.llm.requests[0]["body"]
        # Room for the answer: the window less the (over-)counted prompt; the worked example is left out
        # when the answer would not have room beside it.
        assert body["max_tokens"] < 2048
    with LLMServer(context=600) as server:
        with pytest.raises(PlanningError, match=r"leaves no room for an answer in the context window of 600 tokens"):
            planner_for(server).plan_scene(_outline_story(), "s1")
        assert server.llm.requests == []


def _outline_story():
    from dreamrunner.planning.base import story_from_outline
    from dreamrunner.planning.parsing import parse_story_answer

    outline, _ = parse_story_answer(STORY_ANSWER)
    return story_from_outline(outline, TOPIC, CHARACTERS)


def test_a_failure_keeps_the_plans_so_far_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Reported: a failure on scene 4 threw away the story plan and three finished scene plans. They are
    saved as they arrive; the same command again plans only what is missing, and says so."""
    out = tmp_path / "story"
    argv = ["plan", "--topic", TOPIC, "--character", "Mira:a young witch with a pointed hat",
            "--character", "Pip:a small black cat", "--out", str(out)]
    with LLMServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("DREAMRUNNER_LLM_MODEL", "qwen")
        server.llm.queue(STORY_ANSWER, GOOD_SCENE, GOOD_SCENE, GOOD_SCENE,
                         Reply(status=401, body={"error": {"message": "invalid api key"}}))
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert "HTTP 401: invalid api key" in err and "run the same command again" in err
        saved = Project.load(out).story
        assert [is_planned(s) for s in saved.scenes] == [True] * 3 + [False] * 3
        assert saved.scenes[0].background == "a village lane at dawn"
        server.llm.queue(*[GOOD_SCENE] * 3)
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "resuming the plan saved in" in err and "3 of 6 scene plans are there; planning the other 3" in err
        assert len(server.llm.requests) == 8  # 5 + the 3 missing scene plans, not the story plan again
        story = Project.load(out).story
        assert all(is_planned(s) for s in story.scenes) and story.title == "Mira's First Delivery"
        # A finished plan is not planned again over: the folder holds a project.
        assert main(argv) != 0 and "already holds a project" in capsys.readouterr().err


def test_cancel_stops_mid_answer_and_keeps_the_finished_plans():
    with LLMServer(chunk=16) as server:
        server.llm.queue(STORY_ANSWER, GOOD_SCENE, Reply(GOOD_SCENE, chunk_delay=0.2), GOOD_SCENE)
        planner = planner_for(server)
        planner.cancel = CancelToken()
        scenes, outline = [], []

        def progress(update):
            if "plan of scene 's2'" in update.message and "characters" in update.message:
                planner.cancel.cancel()  # the user presses Cancel while scene 2 is being written

        planner.progress = progress
        with pytest.raises(Cancelled, match="the plans finished so far are kept"):
            planner.plan_story(TOPIC, CHARACTERS, on_outline=outline.append, on_scene=scenes.append)
        assert len(outline) == 1 and [s.id for s in scenes] == ["s1"]
        assert len(server.llm.requests) == 3  # nothing asked after the cancel


def test_a_cut_off_answer_is_not_sent_back_and_max_tokens_bounds_each_request():
    """Reported: with no max_tokens an answer ran away until the context was full, and the retry re-sent it."""
    with LLMServer() as server:
        long_answer = json.dumps({"background": "x" * 4000, **{k: v for k, v in scene_answer().items()
                                                                if k != "background"}})
        server.llm.queue(long_answer, GOOD_SCENE)
        planner = planner_for(server, scene_max_tokens=900)
        planner.plan_scene(_outline_story(), "s1")
        first, second = (r["body"] for r in server.llm.requests)
        assert first["max_tokens"] == second["max_tokens"] == 900
        assert "x" * 100 not in json.dumps(second["messages"])
        assert "cut off at the 900-token limit" in second["messages"][-1]["content"]


def test_scene_plans_in_parallel_keep_their_order():
    with LLMServer() as server:
        server.llm.queue(STORY_ANSWER, *[Reply(GOOD_SCENE, chunk_delay=0.01)] * 6)
        committed = []
        story = planner_for(server, parallel=3).plan_story(TOPIC, CHARACTERS, on_scene=committed.append)
        assert [s.id for s in story.scenes] == [f"s{i}" for i in range(1, 7)]
        assert sorted(s.id for s in committed) == [s.id for s in story.scenes]
        assert threading.current_thread() is threading.main_thread()


def _still_scene_answer() -> dict:
    answer = scene_answer()
    for keyframe in answer["keyframes"]:
        mira = keyframe["entities"][0]
        mira["box"] = [0.1, 0.3, 0.3, 0.9]  # walking, never moving
        mira["description"] = "A [v1] young witch walking beside a [v2] cat"  # Pip's box is far away
    return answer


def test_problems_for_rendering_go_back_once_then_are_repaired_and_shown():
    """Reported: a character named but never placed, a mover whose box never moves, a description with
    another character's token, boxes copied from the prompt's example, keyframes held from a neighbour."""
    copied = json.loads(json.dumps(SCENE_EXAMPLE_ANSWER))
    held = scene_answer()
    held["keyframes"] = held["keyframes"][:2]  # 4 of 6 held
    story = _outline_story()
    scene = story.scene("s1").model_copy(update={"description": "Mira and Pip walk down the lane."})
    from dreamrunner.planning.parsing import parse_scene_answer

    planned, _ = parse_scene_answer(json.dumps(_still_scene_answer()), scene, CHARACTERS)
    problems = rendering_problems(planned, CHARACTERS)
    assert any("'Mira' is walking but its box is the same in every keyframe" in p for p in problems)
    assert any("holds [v2], the token of Pip, whose box does not overlap it" in p for p in problems)
    without_pip = scene_answer()
    for keyframe in without_pip["keyframes"]:
        del keyframe["entities"][1]
    planned, _ = parse_scene_answer(json.dumps(without_pip), scene, CHARACTERS)
    assert any(p.startswith("Pip is in this scene but in no keyframe") for p in rendering_problems(planned, CHARACTERS))
    planned, repairs = parse_scene_answer(json.dumps(held), scene, CHARACTERS)
    assert any("keyframes are missing or repeat the one before" in p for p in rendering_problems(planned, CHARACTERS))
    planned, _ = parse_scene_answer(json.dumps(copied), scene, CHARACTERS)
    assert any("copied from the example answer" in p for p in rendering_problems(planned, CHARACTERS))

    with LLMServer() as server:
        story.scenes[0].description = "Mira and Pip walk down the lane."
        server.llm.queue(json.dumps(_still_scene_answer()), json.dumps(_still_scene_answer()))
        planner = planner_for(server)
        notes = []
        planner.note = notes.append
        fixed = planner.plan_scene(story, "s1")
        assert len(server.llm.requests) == 2
        feedback = server.llm.requests[1]["body"]["messages"][-1]["content"]
        assert "box is the same in every keyframe" in feedback and "the token of Pip" in feedback
        boxes = [k.entities[0].box for k in fixed.keyframes]
        assert len(set(boxes)) == NUM_KEYFRAMES  # Mira moves now
        assert all("[v2]" not in k.entities[0].description for k in fixed.keyframes)
        assert rendering_problems(fixed, CHARACTERS) == []
        shown = "\n".join(notes)
        assert "asked again (attempt 2 of 3)" in shown
        assert "is walking but its box never moved; moved it right" in shown
        assert "left out Pip's token [v2]" in shown
    repaired, changes = repair_for_rendering(fixed, CHARACTERS)
    assert repaired is fixed and changes == []


def test_llm_gguf_without_the_extra_is_a_named_error(tmp_path, monkeypatch, capsys):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    code = main(["plan", "--topic", TOPIC, "--character", "Mira", "--out", str(tmp_path / "p"),
                 "--llm-gguf", str(model)])
    assert code != 0
    assert "--llm-gguf needs llama-cpp-python, which is not installed: pip install '.[local-llm]'" in capsys.readouterr().err


def test_dreamrunner_story_resumes_a_plan_stopped_part_way(tmp_path, monkeypatch, capsys):
    out = tmp_path / "story"
    argv = ["story", "--topic", TOPIC, "--character", "Mira:a young witch with a pointed hat",
            "--character", "Pip:a small black cat", "--out", str(out), "--until", "plan"]
    with LLMServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        server.llm.queue(STORY_ANSWER, GOOD_SCENE, Reply(status=400, body={"error": {"message": "model not loaded"}}))
        assert main(argv) != 0
        assert [is_planned(s) for s in Project.load(out).story.scenes] == [True] + [False] * 5
        capsys.readouterr()
        server.llm.queue(*[GOOD_SCENE] * 5)
        assert main(argv) == 0
        assert "1 of 6 scene plans are there; planning the other 5" in capsys.readouterr().err
        assert len(server.llm.requests) == 8
        assert all(is_planned(s) for s in Project.load(out).story.scenes)


def test_the_editors_plan_story_saves_as_plans_arrive_and_goes_on_after_a_failure(tmp_path):
    from dreamrunner.story import Story
    from ui.editor import build_app
    from ui.workspace import Workspace

    workspace = Workspace(home=tmp_path / "home")
    _, editor = build_app(workspace, workspace.install_demo())
    folder = workspace.projects_dir / "witch"
    Project.create(folder, Story(title="", topic=TOPIC, characters=CHARACTERS))
    with LLMServer() as server:
        server.llm.queue(STORY_ANSWER, GOOD_SCENE, GOOD_SCENE, Reply(status=401, body={"error": {"message": "bad key"}}))
        with pytest.raises(PlanningError, match="HTTP 401"):  # Plan story is a job: a generator of page updates
            list(editor.plan_story(str(folder), TOPIC, 6, None, "llm", server.base_url, "qwen", "typed-key",
                                   confirmed=True))
        saved = Project.load(folder).story
        assert [is_planned(s) for s in saved.scenes] == [True, True] + [False] * 4
        server.llm.queue(*[GOOD_SCENE] * 4)
        list(editor.plan_story(str(folder), TOPIC, 6, None, "llm", server.base_url, "qwen", "typed-key"))
        assert len(server.llm.requests) == 8  # the story plan and the 2 scene plans were not asked again
        story = Project.load(folder).story
        assert all(is_planned(s) for s in story.scenes) and story.title == "Mira's First Delivery"
