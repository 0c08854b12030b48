"""The LLM planner: the paper's dual-level planning against any OpenAI-compatible chat-completions server.

Each level is one conversation: the system prompt, one worked example, the request. An answer that
cannot be used is sent back with what was wrong (bounded by `max_attempts`); a timeout or an HTTP error
ends planning at once with a clear `PlanningError`. Planners return new objects, so a failure leaves the
caller's story as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..story import Character, Scene, Story
from ..validation import Repair
from .base import Planner, PlanningError, check_num_scenes, scene_to_plan
from .parsing import parse_scene_answer, parse_story_answer
from .prompts import feedback_message, scene_messages, story_messages
from .schema import ScenePlanAnswer, StoryOutline, response_format
from .settings import PlannerSettings

if TYPE_CHECKING:
    import openai

T = TypeVar("T")
_FALLBACK = {"json_schema": "json_object", "json_object": "text"}


class LLMPlanner(Planner):
    name = "llm"

    def __init__(self, settings: PlannerSettings | None = None, client: openai.OpenAI | None = None):
        import openai  # imported here: it takes most of a second, and the offline path never needs it

        self.settings = settings or PlannerSettings.from_env()
        self.client = client or openai.OpenAI(
            # Local servers (Ollama, llama.cpp) take any key; the client insists on one.
            api_key=self.settings.api_key or "not-needed",
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.http_retries,
        )
        self.format = "json_schema" if self.settings.response_format == "auto" else self.settings.response_format
        # Some models (reasoning models) refuse any temperature but their own; then it is left out.
        self.send_temperature = True
        #: Repairs made to the last accepted answer, for the UI or CLI to list.
        self.last_repairs: list[Repair] = []

    # ------------------------------------------------------------ the two levels

    def plan_outline(self, topic: str, characters: Sequence[Character], num_scenes: int | None = None) -> StoryOutline:
        check_num_scenes(num_scenes)
        if not topic.strip():
            raise PlanningError("the topic is empty")
        return self._ask(story_messages(topic, characters, num_scenes), StoryOutline,
                         lambda raw: parse_story_answer(raw, num_scenes), "story plan")

    def plan_scene(self, story: Story, scene_id: str) -> Scene:
        scene = scene_to_plan(story, scene_id)
        frame = (story.settings.video.width, story.settings.video.height)  # for boxes answered in pixels
        return self._ask(scene_messages(scene, story.characters, story.topic), ScenePlanAnswer,
                         lambda raw: parse_scene_answer(raw, scene, story.characters, frame), f"plan of scene {scene_id!r}")

    # ------------------------------------------------------------ the conversation

    def _ask(self, messages: list[dict], answer_model: type, parse: Callable[[str], tuple[T, list[Repair]]],
             what: str) -> T:
        messages = list(messages)
        attempts: list[str] = []
        problems: list[str] = []
        for _ in range(self.settings.max_attempts):
            raw, cut_off = self._complete(messages, answer_model, what)
            attempts.append(raw)
            try:
                result, repairs = parse(raw)
            except PlanningError as error:
                problems = error.problems or [str(error)]
                messages += [{"role": "assistant", "content": raw}, feedback_message(problems, cut_off)]
                continue
            self.last_repairs = repairs
            return result
        summary = "\n".join(f"  - {p}" for p in problems)
        raise PlanningError(
            f"the LLM ({self.settings.describe()}) gave no usable {what} in {len(attempts)} "
            f"attempt{'s' * (len(attempts) != 1)}; the last answer's problems:\n{summary}",
            raw=attempts[-1] if attempts else None, attempts=attempts, problems=problems)

    def _complete(self, messages: list[dict], answer_model: type, what: str) -> tuple[str, bool]:
        """One chat completion -> (content, cut off by the length limit)."""
        import openai

        while True:
            request = {"model": self.settings.model, "messages": messages}
            if self.send_temperature:
                request["temperature"] = self.settings.temperature
            fmt = response_format(answer_model, self.format)
            if fmt is not None:
                request["response_format"] = fmt
            try:
                completion = self.client.chat.completions.create(**request)
            except openai.APITimeoutError:
                raise PlanningError(f"the LLM ({self.settings.describe()}) did not answer the {what} request within "
                                    f"{self.settings.timeout:g} s; raise the timeout (DREAMRUNNER_LLM_TIMEOUT) or use "
                                    "a faster model") from None
            except openai.APIConnectionError as error:
                raise PlanningError(f"cannot reach the LLM ({self.settings.describe()}): {error}") from None
            except openai.APIStatusError as error:
                if self._falls_back(error):
                    continue
                raise PlanningError(f"the LLM server ({self.settings.describe()}) answered HTTP {error.status_code} "
                                    f"to the {what} request: {_error_text(error)}") from None
            except openai.OpenAIError as error:
                raise PlanningError(f"the LLM request for the {what} failed: {error}") from None
            choices = getattr(completion, "choices", None) or []
            if not choices:
                raise PlanningError(f"the LLM server ({self.settings.describe()}) answered without any choice")
            choice = choices[0]
            content = getattr(choice.message, "content", None) or getattr(choice.message, "refusal", None) or ""
            return content, choice.finish_reason == "length"

    def _falls_back(self, error: openai.APIStatusError) -> bool:
        """Servers without structured output refuse `response_format` with a 400/422: step down once.
        A model that refuses the temperature is asked again without it."""
        if error.status_code not in (400, 404, 415, 422, 501):
            return False
        text = _error_text(error).lower()
        if "temperature" in text and self.send_temperature:
            self.send_temperature = False
            return True
        about_format = any(word in text for word in ("response_format", "json_schema", "schema", "json"))
        if self.settings.response_format != "auto" or self.format not in _FALLBACK or not about_format:
            return False
        self.format = _FALLBACK[self.format]
        return True


def _error_text(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:500]
    return str(error.message or error)[:500]
