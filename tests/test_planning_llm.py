"""The LLM planner against a real OpenAI chat-completions server on loopback, answering from recorded responses."""

from __future__ import annotations

import copy
import json

import pytest

from dreamrunner.planning import (
    LLMPlanner,
    OfflinePlanner,
    PlannerSettings,
    PlanningError,
    get_planner,
    replan_scene,
    replan_story,
)
from dreamrunner.planning.prompts import SCENE_EXAMPLE_ANSWER, STORY_EXAMPLE_ANSWER
from dreamrunner.planning.schema import ScenePlanAnswer, json_schema
from dreamrunner.story import NUM_KEYFRAMES, Character, Story

from llm_server import LLMServer, Reply
from planning_answers import GOOD_SCENE, STORY_ANSWER, scene_answer

CHARACTERS = [
    Character(id="mira", name="Mira", token="[v1]", description="a young witch with a pointed hat"),
    Character(id="pip", name="Pip", token="[v2]", description="a small black cat"),
]


@pytest.fixture
def server():
    with LLMServer() as running:
        yield running


def planner_for(server: LLMServer, **settings) -> LLMPlanner:
    values = {"base_url": server.base_url, "model": "recorded", "timeout": 5.0, "http_retries": 0, **settings}
    return LLMPlanner(PlannerSettings(**values))


@pytest.fixture
def story() -> Story:
    return OfflinePlanner().plan_story("a witch delivers potions in the village", CHARACTERS, num_scenes=6)


def test_good_answer_plans_a_whole_story(server):
    server.llm.queue(STORY_ANSWER, *[GOOD_SCENE] * 6)
    story = planner_for(server).plan_story("a witch's first delivery", CHARACTERS, num_scenes=6)
    assert [s.id for s in story.scenes] == [f"s{i}" for i in range(1, 7)]
    assert story.title == "Mira's First Delivery"
    assert story.scenes[2].narration == STORY_EXAMPLE_ANSWER["scenes"][2]["narration"]
    assert story.scenes[2].motions == ["flying"]
    first = story.scenes[0].keyframes[0].entities
    # Characters are bound: id set, token written before what the character is.
    assert first[0].character_id == "mira" and first[0].description == "A [v1] young witch walking"
    assert first[1].character_id == "pip" and first[1].description == "A [v2] small black cat sitting"
    assert first[2].character_id is None and first[2].motion is None
    # What went over the wire: the model, structured output with the schema, the in-context example.
    assert len(server.llm.requests) == 7
    story_request, scene_request = server.llm.requests[0]["body"], server.llm.requests[1]["body"]
    assert server.llm.requests[0]["path"] == "/v1/chat/completions"
    assert story_request["model"] == "recorded"
    assert story_request["response_format"]["type"] == "json_schema"
    assert scene_request["response_format"]["json_schema"]["schema"] == json_schema(ScenePlanAnswer)
    assert scene_request["response_format"]["json_schema"]["strict"] is True
    assert [m["role"] for m in scene_request["messages"]] == ["system", "user", "assistant", "user"]
    assert json.loads(scene_request["messages"][2]["content"]) == SCENE_EXAMPLE_ANSWER
    request = json.loads(scene_request["messages"][3]["content"])
    assert request["scene"] == STORY_EXAMPLE_ANSWER["scenes"][0]["scene"]
    assert {c["token"] for c in request["characters"]} == {"[v1]", "[v2]"}


def test_fenced_json_with_prose_is_read(server, story):
    server.llm.queue("Sure! Here is the plan:\n```json\n" + GOOD_SCENE + "\n```\nLet me know if you want changes.")
    planner = planner_for(server)
    scene = planner.plan_scene(story, "s2")
    assert scene.background == "a village lane at dawn" and len(server.llm.requests) == 1
    assert any("text around it" in str(r) for r in planner.last_repairs)


def test_truncated_json_is_asked_again_with_the_problem(server, story):
    truncated = GOOD_SCENE[: len(GOOD_SCENE) // 2]
    server.llm.queue(Reply(truncated, finish_reason="length"), GOOD_SCENE)
    scene = planner_for(server).plan_scene(story, "s1")
    assert len(scene.keyframes) == NUM_KEYFRAMES
    retry = server.llm.requests[1]["body"]["messages"]
    # The cut-off answer is never sent back (it would fill the context window again); what was wrong is.
    assert all(m["content"] != truncated for m in retry) and retry[-2]["role"] == "user"
    assert "cut off" in retry[-1]["content"] and "not valid JSON" in retry[-1]["content"]


def test_a_story_plan_cut_off_after_a_whole_draft_is_the_plan_kept(server):
    """The server's finish reason reaches the parser: a whole 5-scene draft before the plan the server cut was
    taken silently; the cut plan's whole scenes are kept, said so."""
    draft = {"title": "Draft", "scenes": [dict(s, scene="Draft: " + s["scene"]) for s in STORY_EXAMPLE_ANSWER["scenes"]][:5]}
    final = json.dumps(STORY_EXAMPLE_ANSWER)
    cut = final[:final.rindex('{"scene"')]
    server.llm.queue(Reply("A draft:\n" + json.dumps(draft) + "\nThe plan:\n" + cut, finish_reason="length"))
    planner = planner_for(server)
    outline = planner.plan_outline("a delivery", CHARACTERS)
    whole = len(STORY_EXAMPLE_ANSWER["scenes"]) - 1
    assert [s.scene for s in outline.scenes] == [s["scene"] for s in STORY_EXAMPLE_ANSWER["scenes"][:whole]]
    assert any(f"cut off after {whole} whole scenes" in str(r) for r in planner.last_repairs)
    assert len(server.llm.requests) == 1


def test_truncated_every_time_fails_with_the_raw_answers(server, story):
    truncated = GOOD_SCENE[:700]
    server.llm.queue(*[truncated] * 3)
    with pytest.raises(PlanningError) as caught:
        planner_for(server, max_attempts=3).plan_scene(story, "s1")
    assert caught.value.raw == truncated and caught.value.attempts == [truncated] * 3
    assert "no usable plan of scene 's1' in 3 attempts" in str(caught.value)
    assert "cut off" in str(caught.value)


@pytest.mark.parametrize("count", [4, 5, 7, 9])
def test_wrong_keyframe_count_is_repaired(server, story, count):
    answer = scene_answer()
    frames = answer["keyframes"]
    answer["keyframes"] = (frames * 2)[:count]
    server.llm.queue(json.dumps(answer))
    planner = planner_for(server)
    scene = planner.plan_scene(story, "s1")
    assert [k.index for k in scene.keyframes] == list(range(NUM_KEYFRAMES))
    assert scene.keyframes[min(count, NUM_KEYFRAMES) - 1].entities[0].box == pytest.approx(frames[min(count, NUM_KEYFRAMES) - 1]["entities"][0]["box"])
    assert planner.last_repairs and len(server.llm.requests) == 1


def test_out_of_range_boxes_are_clamped_or_dropped(server, story):
    answer = scene_answer()
    answer["keyframes"][0]["entities"][0]["box"] = [-0.2, 0.3, 0.4, 1.3]
    answer["keyframes"][1]["entities"][0]["box"] = [0.6, 0.9, 0.2, 0.3]  # inverted
    answer["keyframes"][2]["entities"][2]["box"] = [1.2, 0.0, 1.5, 0.5]  # no area left inside the frame
    server.llm.queue(json.dumps(answer))
    planner = planner_for(server)
    scene = planner.plan_scene(story, "s1")
    assert scene.keyframes[0].entities[0].box == (0.0, 0.3, 0.4, 1.0)
    assert scene.keyframes[1].entities[0].box == (0.2, 0.3, 0.6, 0.9)
    assert [e.name for e in scene.keyframes[2].entities] == ["Mira", "Pip"]
    assert len(planner.last_repairs) >= 4


def test_http_500_is_a_clear_error_and_the_story_is_unchanged(server, story):
    before = story.model_dump()
    server.llm.queue(Reply(status=500, body={"error": {"message": "model crashed", "type": "server_error"}}))
    with pytest.raises(PlanningError) as caught:
        replan_scene(story, "s3", planner_for(server))
    assert "HTTP 500" in str(caught.value) and "model crashed" in str(caught.value)
    assert caught.value.raw is None
    assert story.model_dump() == before


def test_timeout_is_a_clear_error_and_the_story_is_unchanged(server, story):
    before = story.model_dump()
    server.llm.queue(Reply(GOOD_SCENE, delay=1.5))
    with pytest.raises(PlanningError) as caught:
        replan_story(story, planner_for(server, first_token_timeout=0.4))
    assert "sent nothing of the story plan for 0.4 s (the first-token timeout" in str(caught.value)
    assert story.model_dump() == before


def test_the_timeout_is_per_piece_of_a_streamed_answer(server, story):
    """A slow answer that keeps coming is waited for (11 pieces 0.3 s apart: 3 s in all, well past the 1 s
    limit between pieces); one that stops is ended by the limit between pieces, named as such."""
    server.llm.chunk = len(GOOD_SCENE) // 10
    server.llm.queue(Reply(GOOD_SCENE, chunk_delay=0.3), Reply(GOOD_SCENE, chunk_delay=2.0))
    planner = planner_for(server, timeout=1.0)
    assert planner.plan_scene(story, "s1").background == "a village lane at dawn"
    with pytest.raises(PlanningError) as caught:
        planner.plan_scene(story, "s2")
    message = str(caught.value)
    assert "stopped sending the plan of scene 's2' for 1 s after" in message
    assert "(the timeout between pieces of an answer)" in message and "DREAMRUNNER_LLM_TIMEOUT" in message
    assert len(server.llm.requests) == 2  # no hidden retry of a timeout


def test_unreachable_server_is_a_clear_error(story):
    planner = LLMPlanner(PlannerSettings(base_url="http://127.0.0.1:9/v1", timeout=2, http_retries=0))
    with pytest.raises(PlanningError, match="cannot reach the LLM"):
        planner.plan_scene(story, "s1")


def test_failure_after_some_scenes_leaves_the_story_unchanged(server, story):
    before = story.model_dump()
    server.llm.queue(json.dumps({**STORY_EXAMPLE_ANSWER}), GOOD_SCENE, GOOD_SCENE, "I cannot do that.", "nope", "no")
    with pytest.raises(PlanningError) as caught:
        replan_story(story, planner_for(server))
    assert caught.value.attempts == ["I cannot do that.", "nope", "no"]
    assert story.model_dump() == before


def test_server_without_structured_output_falls_back_to_json_mode(server, story):
    refusal = {"error": {"message": "response_format json_schema is not supported by this server", "type": "invalid_request_error"}}
    server.llm.queue(Reply(status=400, body=refusal), GOOD_SCENE, GOOD_SCENE)
    planner = planner_for(server)
    planner.plan_scene(story, "s1")
    planner.plan_scene(story, "s2")
    formats = [r["body"].get("response_format", {}).get("type") for r in server.llm.requests]
    assert formats == ["json_schema", "json_object", "json_object"]


def test_other_bad_requests_do_not_fall_back(server, story):
    server.llm.queue(Reply(status=401, body={"error": {"message": "invalid api key"}}))
    with pytest.raises(PlanningError, match="HTTP 401.*invalid api key"):
        planner_for(server).plan_scene(story, "s1")
    assert len(server.llm.requests) == 1


@pytest.mark.parametrize("count, wanted, change", [(4, None, "split scene"), (9, None, "merged scenes"),
                                                    (5, 6, "split scene"), (7, 6, "merged scenes")])
def test_a_near_miss_scene_count_is_repaired_not_refused(server, count, wanted, change):
    """Reported: a good 4-scene story was refused three times ("expected exactly 5 scenes, got 4")."""
    answer = copy.deepcopy(STORY_EXAMPLE_ANSWER)
    answer["scenes"] = (answer["scenes"] * 2)[:count]
    server.llm.queue(json.dumps(answer))
    planner = planner_for(server)
    outline = planner.plan_outline("a delivery", CHARACTERS, num_scenes=wanted)
    assert len(outline.scenes) == (wanted or (5 if count < 5 else 8))
    assert len(server.llm.requests) == 1
    assert any(change in str(r) for r in planner.history)
    told = " ".join(s.narration for s in outline.scenes)
    assert all(s["narration"] in told for s in answer["scenes"])  # nothing the LLM wrote is lost


def test_a_far_miss_scene_count_is_asked_again_with_feedback(server):
    two = copy.deepcopy(STORY_EXAMPLE_ANSWER)
    two["scenes"] = two["scenes"][:2]
    server.llm.queue(json.dumps(two), STORY_ANSWER)
    outline = planner_for(server).plan_outline("a delivery", CHARACTERS, num_scenes=6)
    assert len(outline.scenes) == 6
    assert "expected exactly 6 scenes, got 2" in server.llm.requests[1]["body"]["messages"][-1]["content"]


def test_single_prompt_mode_uses_the_scene_level_prompt(server):
    server.llm.queue(GOOD_SCENE)
    story = planner_for(server).plan_prompt("Mira walks down a village lane while Pip watches", CHARACTERS)
    assert len(story.scenes) == 1 and story.scenes[0].motions == ["walking"]
    assert story.scenes[0].keyframes[0].entities[0].character_id == "mira"
    assert len(server.llm.requests) == 1


def test_settings_from_environment_and_planner_choice(monkeypatch):
    assert PlannerSettings.from_env({}).llm_configured is False
    assert isinstance(get_planner(PlannerSettings.from_env({})), OfflinePlanner)
    settings = PlannerSettings.from_env({"OPENAI_BASE_URL": "http://localhost:11434/v1", "DREAMRUNNER_LLM_MODEL": "llama3.1",
                                         "OPENAI_API_KEY": ""})
    assert (settings.base_url, settings.model, settings.api_key) == ("http://localhost:11434/v1", "llama3.1", None)
    planner = get_planner(settings)
    assert isinstance(planner, LLMPlanner) and planner.settings.model == "llama3.1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert isinstance(get_planner(), LLMPlanner)
    with pytest.raises(PlanningError, match="timeout"):
        PlannerSettings.from_env({"DREAMRUNNER_LLM_TIMEOUT": "soon"})


def test_a_model_refusing_the_temperature_is_asked_without_it(server, story):
    refusal = {"error": {"message": "Unsupported value: 'temperature' does not support 0.7 with this model."}}
    server.llm.queue(Reply(status=400, body=refusal), GOOD_SCENE)
    planner_for(server).plan_scene(story, "s1")
    assert ["temperature" in r["body"] for r in server.llm.requests] == [True, False]


def test_a_plan_without_entities_is_asked_again(server, story):
    empty = json.dumps({"background": "a lane", "keyframes": [{"entities": []}] * 6})
    server.llm.queue(empty, GOOD_SCENE)
    scene = planner_for(server).plan_scene(story, "s1")
    assert scene.keyframes[0].entities
    assert "places no entity" not in server.llm.requests[1]["body"]["messages"][-1]["content"]
    assert "no keyframe has an entity" in server.llm.requests[1]["body"]["messages"][-1]["content"]


def test_a_scene_with_nothing_to_plan_from_is_refused(server, story):
    data = story.model_dump()
    data["scenes"][0].update(description="", narration="", motions=[])
    blank = Story.model_validate(data)
    for planner in (planner_for(server), OfflinePlanner()):
        with pytest.raises(PlanningError, match="nothing|no description, narration or motions"):
            planner.plan_scene(blank, "s1")
    assert server.llm.requests == []


def test_the_api_key_is_not_shown():
    settings = PlannerSettings(api_key="sk-secret-value", base_url="http://localhost:1/v1")
    assert "sk-secret" not in repr(settings) and "sk-secret" not in settings.describe()


def test_the_environment_key_is_only_sent_to_the_configured_or_allow_listed_endpoints():
    from dreamrunner.planning import settings_for_caller

    env = {"OPENAI_API_KEY": "sk-env", "DREAMRUNNER_LLM_ALLOWED_URLS": "http://gpu-box:8000/v1, http://other/v1"}
    # No OPENAI_BASE_URL: the key belongs to OpenAI's API (and the allow-listed servers).
    assert settings_for_caller("", "", "", env).api_key == "sk-env"
    assert settings_for_caller("https://API.openai.com/v1/", "", "", env).api_key == "sk-env"
    chosen = settings_for_caller("http://gpu-box:8000/v1/", "", "m", env)
    assert (chosen.base_url, chosen.api_key, chosen.model) == ("http://gpu-box:8000/v1/", "sk-env", "m")
    with pytest.raises(PlanningError, match="type an API key for it"):
        settings_for_caller("http://attacker.example/v1", "", "", env)
    typed = settings_for_caller("http://attacker.example/v1", "sk-typed", "", env)
    assert typed.api_key == "sk-typed"
    # With OPENAI_BASE_URL set, OpenAI's own URL is not a destination of the key any more.
    local = {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}
    assert settings_for_caller("http://127.0.0.1:11434/v1", None, None, local).api_key == "sk-env"
    with pytest.raises(PlanningError, match=r"server's LLM endpoint \(http://127.0.0.1:11434/v1\)"):
        settings_for_caller("https://api.openai.com/v1", None, None, local)
    # No key in the environment: nothing to leak, a typed keyless URL (a local server) is fine.
    assert settings_for_caller("http://127.0.0.1:8080/v1", "", "", {}).api_key is None


# ---------------------------------------------------------------- reported answers (issue 13)

def test_a_scene_answered_in_pixels_keeps_its_character_and_motion(server, story):
    """Reported: pixels of the 720x480 frame made the sun full-frame and dropped the only character (and the
    scene's only motion) from all 6 keyframes. The whole answer's scale is recognised and rescaled."""
    keyframes = [{"entities": [
        {"name": "sun", "motion": None, "description": "a bright sun", "box": [576, 24, 684, 120]},
        {"name": "Mira", "motion": "walking", "description": "A young witch walking",
         "box": [72 + 72 * k, 192, 216 + 72 * k, 456]},
    ]} for k in range(NUM_KEYFRAMES)]
    story.scenes[0].description = story.scenes[0].narration = "Mira walks down the village lane at sunrise."
    server.llm.queue(json.dumps({"background": "a village lane", "keyframes": keyframes}))
    planner = planner_for(server)
    scene = planner.plan_scene(story, "s1")
    assert len(server.llm.requests) == 1
    for k, keyframe in enumerate(scene.keyframes):
        sun, mira = keyframe.entities
        assert sun.box == pytest.approx((0.8, 0.05, 0.95, 0.25))
        assert mira.box == pytest.approx((0.1 + 0.1 * k, 0.4, 0.3 + 0.1 * k, 0.95))
        assert (mira.character_id, mira.motion) == ("mira", "walking")
    assert ["scene 's1': the boxes were in pixels of the 720x480 frame (values up to 684); divided x by 720 and "
            "y by 480 to normalize them"] == [str(r) for r in planner.last_repairs if "pixels" in str(r)]


def test_pixels_are_pixels_of_the_storys_frame(server, story):
    story.settings.video = story.settings.video.model_copy(update={"width": 480, "height": 320})
    answer = scene_answer()
    for keyframe in answer["keyframes"]:
        for entity in keyframe["entities"]:
            x0, y0, x1, y1 = entity["box"]
            entity["box"] = [x0 * 480, y0 * 320, x1 * 480, y1 * 320]
    server.llm.queue(json.dumps(answer))
    scene = planner_for(server).plan_scene(story, "s1")
    assert scene.keyframes[0].entities[1].box == pytest.approx((0.75, 0.7, 0.88, 0.9))


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1" + "0" * 400])
def test_a_box_that_is_not_a_finite_number_is_asked_again(server, story, value):
    bad = GOOD_SCENE.replace("0.75", value, 1)
    server.llm.queue(bad, GOOD_SCENE)
    scene = planner_for(server).plan_scene(story, "s1")
    assert scene.keyframes[0].entities[1].box == (0.75, 0.7, 0.88, 0.9)
    feedback = server.llm.requests[1]["body"]["messages"][-1]["content"]
    assert "keyframe 1, entity 2 ('Pip'): box holds" in feedback and "not a finite number" in feedback


def test_mixed_scales_are_sent_back_to_the_llm(server, story):
    answer = scene_answer()
    answer["keyframes"][3]["entities"][0]["box"] = [40, 30, 60, 90]
    server.llm.queue(json.dumps(answer), GOOD_SCENE)
    planner_for(server).plan_scene(story, "s1")
    assert "the boxes mix scales" in server.llm.requests[1]["body"]["messages"][-1]["content"]


def test_plans_after_prose_with_brackets_are_used_at_once(server):
    """Reported: 'boxes are [x0, y0, x1, y1]: ...' before valid JSON was refused 3 times; plan made no project."""
    prose = "Sure. The boxes are [x0, y0, x1, y1]: left, top, right, bottom.\n"
    server.llm.queue(prose + STORY_ANSWER, *[prose + GOOD_SCENE] * 6)
    story = planner_for(server).plan_story("a witch's first delivery", CHARACTERS, num_scenes=6)
    assert len(story.scenes) == 6 and len(server.llm.requests) == 7
    assert all(scene.keyframes[0].entities[0].character_id == "mira" for scene in story.scenes)
