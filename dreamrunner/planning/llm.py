"""The LLM planner: the paper's dual-level planning against any OpenAI-compatible chat-completions server
(OpenAI, Ollama, vLLM, llama.cpp's server, llama-cpp-python's server, LM Studio) or a GGUF model run in this
process (llama-cpp-python, the `local-llm` extra).

Each level is one conversation: the system prompt, one worked example, the request. What small local
servers need is handled here, once for every request:
- the `response_format` a server takes is found by stepping down (JSON schema, JSON mode with the schema,
  JSON mode, plain text + the tolerant parser) when the server's error names the format, whatever its HTTP
  status, and remembered per server (base URL + model) for the process; when the server cannot enforce the
  schema it is sent inside the prompt;
- every request has a `max_tokens` bound and fits the server's context window (asked from the server:
  llama.cpp `/props`, vLLM `/v1/models`, Ollama `/api/show`; else the setting), counted conservatively;
- answers are streamed: progress (characters received, which scene) goes to `progress`, `cancel` stops
  mid-answer, and the timeouts are per piece (`first_token_timeout`, then `timeout` between pieces);
- an unusable answer is sent back with what was wrong (bounded by `max_attempts`), a cut-off answer never;
  a scene plan with problems that matter for rendering (see `checks.py`) is sent back once, then repaired
  here; every retry and repair goes to `note` as it happens.
The openai client makes no retries of its own: ours are reported. Planners return new objects.
"""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from ..jobs import Cancelled, Progress
from ..story import Character, Scene, Story
from ..validation import Repair
from .base import Planner, PlanningError, check_num_scenes, scene_to_plan
from .checks import repair_for_rendering, rendering_problems
from .parsing import parse_scene_answer, parse_story_answer
from .prompts import feedback_message, scene_messages, story_messages
from .schema import ScenePlanAnswer, StoryOutline, json_schema, response_format
from .settings import PlannerSettings

if TYPE_CHECKING:
    import openai

T = TypeVar("T")
#: The formats tried in order when `response_format` is "auto"; "json_object_schema" is JSON mode with the
#: schema beside it, which llama-cpp-python's server enforces (its json_schema type is refused).
FORMAT_LADDER = ("json_schema", "json_object_schema", "json_object", "text")
ENFORCED = {"json_schema"}  # formats whose schema the server is known to enforce: no schema in the prompt
CHARS_PER_TOKEN = 2.5  # conservative: JSON with digits is ~2-3 characters a token for Qwen/Llama tokenizers
DEFAULT_CONTEXT = 4096  # a server that does not say its context window (Ollama's default)
MIN_ANSWER_TOKENS = 256
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "'text'", "schema", "grammar")
_CONTEXT_NUMBER = re.compile(r"(?:context(?: window| length| size)?|n_ctx)\D{0,30}?(\d{3,8})", re.I)

# What each server takes, learned once per process: (base URL, model) -> format / context window.
_server_lock = threading.Lock()
_formats: dict[tuple[str, str], str] = {}
_contexts: dict[tuple[str, str], int] = {}


def approx_tokens(messages: Sequence[dict]) -> int:
    """A conservative token count of chat messages: characters / CHARS_PER_TOKEN plus a few per message."""
    return sum(math.ceil(len(str(m.get("content") or "")) / CHARS_PER_TOKEN) + 8 for m in messages)


class _Stop(Exception):
    """Raised in the reading thread when the waiting side gave up on the stream."""


class LLMPlanner(Planner):
    name = "llm"

    def __init__(self, settings: PlannerSettings | None = None, client: openai.OpenAI | None = None):
        self.settings = settings or PlannerSettings.from_env()
        self.backend = _InProcess(self.settings) if self.settings.gguf else _Remote(self.settings, client)
        self.server = self.backend.key
        with _server_lock:
            known = _formats.get(self.server)
        self.format = (self.settings.response_format if self.settings.response_format != "auto"
                       else known or FORMAT_LADDER[0])
        # Some models (reasoning models) refuse any temperature but their own; then it is left out.
        self.send_temperature = True
        #: Repairs made to the last accepted answer.
        self.last_repairs: list[Repair] = []
        #: Every retry and repair since the planner was made, in order, for the UI or CLI to list.
        self.history: list[Repair] = []
        #: Called with each retry and repair as it happens (the CLI prints them, the editor shows them).
        self.note: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}  # what -> characters received, for progress
        self._done = 0
        self._total = 1

    # ------------------------------------------------------------ the two levels

    def plan_outline(self, topic: str, characters: Sequence[Character], num_scenes: int | None = None) -> StoryOutline:
        check_num_scenes(num_scenes)
        if not topic.strip():
            raise PlanningError("the topic is empty")
        self._done, self._total = 0, 1
        return self._ask(story_messages(topic, characters, num_scenes), StoryOutline,
                         lambda raw, cut_off: parse_story_answer(raw, num_scenes, cut_off=cut_off), "story plan",
                         self.settings.story_max_tokens)

    def plan_scene(self, story: Story, scene_id: str) -> Scene:
        scene = scene_to_plan(story, scene_id)
        frame = (story.settings.video.width, story.settings.video.height)  # for boxes answered in pixels
        checked = _Checked(scene, story.characters)

        def parse(raw: str, cut_off: bool) -> tuple[Scene, list[Repair]]:  # a whole scene plan before a cut is one
            return checked(*parse_scene_answer(raw, scene, story.characters, frame))

        try:
            result = self._ask(scene_messages(scene, story.characters, story.topic, story), ScenePlanAnswer, parse,
                               f"plan of scene {scene_id!r}", self.settings.scene_max_tokens)
        except PlanningError:
            if checked.fallback is None:
                raise
            result = checked.fallback  # the answer whose only problems are the ones repaired below
            self.last_repairs = list(checked.fallback_repairs)
            self._record([Repair(f"scene {scene_id!r}", "no better answer came; took the first one and repaired it"),
                          *checked.fallback_repairs])
        repaired, repairs = repair_for_rendering(result, story.characters)
        self._record(repairs)
        self.last_repairs += repairs
        return repaired

    def plan_scenes(self, story: Story, scene_ids: Sequence[str],
                    on_scene: Callable[[Scene], None] | None = None) -> list[Scene]:
        """Scene plans, `settings.parallel` at a time; each goes to `on_scene` (in this thread) when done."""
        self._done, self._total = 0, len(scene_ids)
        if self.settings.parallel <= 1 or len(scene_ids) <= 1:
            def counted(scene: Scene) -> None:
                self._done += 1
                if on_scene is not None:
                    on_scene(scene)

            return super().plan_scenes(story, scene_ids, counted)
        finished: dict[str, Scene] = {}
        with ThreadPoolExecutor(self.settings.parallel, thread_name_prefix="scene-plan") as pool:
            pending = {pool.submit(self.plan_scene, story, scene_id): scene_id for scene_id in scene_ids}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        scene_id = pending.pop(future)
                        finished[scene_id] = future.result()
                        self._done += 1
                        if on_scene is not None:
                            on_scene(finished[scene_id])
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return [finished[scene_id] for scene_id in scene_ids]

    # ------------------------------------------------------------ the conversation

    def _ask(self, messages: list[dict], answer_model: type, parse: Callable[[str, bool], tuple[T, list[Repair]]],
             what: str, max_tokens: int) -> T:
        """The parsed answer: `parse(raw, cut_off)` (cut_off: the server stopped it at `max_tokens`), asked again
        with its problems until usable, up to `max_attempts` answers; else PlanningError with every answer."""
        attempts: list[str] = []
        problems: list[str] = []
        extra: list[dict] = []
        for attempt in range(self.settings.max_attempts):
            if attempt:
                shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                self._record([Repair(what, f"asked again (attempt {attempt + 1} of {self.settings.max_attempts}): "
                                           f"{shown}")])
            raw, cut_off = self._complete(messages, extra, answer_model, what, max_tokens)
            attempts.append(raw)
            try:
                result, repairs = parse(raw, cut_off)
            except PlanningError as error:
                problems = error.problems or [str(error)]
                if cut_off:
                    problems = [f"the answer was cut off at the {max_tokens}-token limit", *problems]
                # A cut-off answer is never sent back: it would fill the context window again.
                extra = [feedback_message(problems, cut_off)] if cut_off else [
                    {"role": "assistant", "content": raw}, feedback_message(problems, cut_off)]
                continue
            self.last_repairs = list(repairs)
            self._record(repairs)
            return result
        summary = "\n".join(f"  - {p}" for p in problems)
        raise PlanningError(
            f"the LLM ({self.settings.describe()}) gave no usable {what} in {len(attempts)} "
            f"attempt{'s' * (len(attempts) != 1)}; the last answer's problems:\n{summary}",
            raw=attempts[-1] if attempts else None, attempts=attempts, problems=problems)

    def _record(self, repairs: Sequence[Repair]) -> None:
        with self._lock:
            self.history.extend(repairs)
        if self.note is not None:
            for repair in repairs:
                self.note(str(repair))

    def _fit(self, messages: list[dict], extra: list[dict], max_tokens: int, what: str) -> tuple[list[dict], int]:
        """The messages to send and the answer's token bound, inside the server's context window: the
        feedback turn, then the worked example, are left out when the whole would not fit."""
        context = self._context()
        candidates = [messages + extra]
        if len(extra) == 2:  # [answer, feedback]: the feedback alone still says what was wrong
            candidates.append(messages + extra[-1:])
        if len(messages) == 4:
            candidates.append([messages[0], messages[3]] + extra[-1:])
        for candidate in candidates:
            room = context - approx_tokens(candidate) - 32
            if room >= min(MIN_ANSWER_TOKENS * 4, max_tokens):
                return candidate, min(max_tokens, room)
        prompt = approx_tokens(candidates[-1])
        raise PlanningError(
            f"the {what} request (about {prompt} tokens) leaves no room for an answer in the context window of "
            f"{context} tokens of {self.settings.describe()}; use a server with a larger context "
            "(llama.cpp: --ctx-size; set DREAMRUNNER_LLM_CONTEXT to it when the server does not say it)")

    def _context(self) -> int:
        with _server_lock:
            known = _contexts.get(self.server)
        if self.settings.context_tokens is not None:
            return min(self.settings.context_tokens, known or self.settings.context_tokens)
        if known is None:
            known = self.backend.context_window() or DEFAULT_CONTEXT
            with _server_lock:
                _contexts.setdefault(self.server, known)
        return known

    def _with_schema(self, messages: list[dict], answer_model: type) -> list[dict]:
        if self.format in ENFORCED:
            return messages
        # The server may not enforce the schema: it goes in the system prompt too.
        schema = json.dumps(json_schema(answer_model), separators=(",", ":"))
        return [dict(messages[0], content=f"{messages[0]['content']}\nThe answer's JSON schema: {schema}"),
                *messages[1:]]

    def _request(self, messages: list[dict], answer_model: type, max_tokens: int) -> dict:
        request: dict[str, Any] = {"model": self.settings.model, "messages": messages, "max_tokens": max_tokens}
        if self.send_temperature:
            request["temperature"] = self.settings.temperature
        fmt = response_format(answer_model, self.format)
        if fmt is not None:
            request["response_format"] = fmt
        return request

    def _complete(self, messages: list[dict], extra: list[dict], answer_model: type, what: str,
                  max_tokens: int) -> tuple[str, bool]:
        """One streamed chat completion -> (content, cut off by the token limit)."""
        retries, shrunk = 0, False
        while True:
            sent, bound = self._fit(self._with_schema(messages, answer_model), extra, max_tokens, what)
            request = self._request(sent, answer_model, bound)
            try:
                return self._stream(request, what)
            except _ServerError as error:
                if error.status is not None and self._falls_back(error):
                    continue
                if error.context is not None and not shrunk:
                    # The server names its window: learn it (a little less when our count was too low).
                    shrunk, context = True, min(error.context, int(self._context() * 0.85))
                    with _server_lock:
                        _contexts[self.server] = context
                    self._record([Repair(what, f"the server refused the request as too long for its context window "
                                               f"({error.context} tokens); asked again within {context} tokens")])
                    continue
                if error.retryable and retries < self.settings.http_retries:
                    retries += 1
                    self._record([Repair(what, f"retry {retries} of {self.settings.http_retries} after: {error}")])
                    time.sleep(1.0)
                    continue
                raise PlanningError(f"{error} ({what} request, {self.settings.describe()})") from None

    def _falls_back(self, error: _ServerError) -> bool:
        """A server that refuses `response_format` (its error names the format, whatever the status: llama-cpp-
        python answers HTTP 500 "Input should be 'text' or 'json_object'") is asked with the next format of
        the ladder, remembered for the server. A model that refuses the temperature is asked without it."""
        text = error.text.lower()
        if "temperature" in text and self.send_temperature and error.status in (400, 422):
            self.send_temperature = False
            return True
        if self.settings.response_format != "auto" or self.format == FORMAT_LADDER[-1]:
            return False
        if error.context is not None or not any(word in text for word in _FORMAT_WORDS):
            return False
        refused = self.format
        self.format = FORMAT_LADDER[FORMAT_LADDER.index(refused) + 1]
        with _server_lock:
            _formats[self.server] = self.format
        self._record([Repair("server", f"it does not take response_format {refused} (HTTP {error.status}: "
                                       f"{' '.join(error.text.split())[:160]}); using {self.format}")])
        return True

    # ------------------------------------------------------------ streaming with per-piece timeouts

    def _stream(self, request: dict, what: str) -> tuple[str, bool]:
        pieces: queue.Queue = queue.Queue()
        stop = threading.Event()
        handle: dict[str, Any] = {}

        def read() -> None:
            try:
                for text, finish in self.backend.stream(request, handle):
                    if stop.is_set():
                        raise _Stop
                    pieces.put(("piece", text, finish))
                pieces.put(("end", None, None))
            except _Stop:
                pass
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                pieces.put(("error", error, None))
            finally:
                self.backend.close(handle)

        reader = threading.Thread(target=read, name="llm-stream", daemon=True)
        started = last = time.monotonic()
        reader.start()
        parts: list[str] = []
        received, finish_reason, first = 0, None, True
        shown = 0.0
        try:
            while True:
                limit = self.settings.first_token_timeout if first else self.settings.timeout
                try:
                    kind, value, finish = pieces.get(timeout=0.2)
                except queue.Empty:
                    self._check_cancel()
                    if time.monotonic() - last > limit:
                        raise PlanningError(self._timeout_message(what, first, limit, received, started)) from None
                    continue
                if kind == "error":
                    error = self.backend.error(value)
                    if isinstance(error, (_ServerError, PlanningError, Cancelled)):
                        raise error
                    raise PlanningError(f"the LLM request for the {what} failed: {error}") from error
                if kind == "end":
                    break
                first, last = False, time.monotonic()
                if value:
                    parts.append(value)
                    received += len(value)
                finish_reason = finish or finish_reason
                if last - shown >= 0.5:
                    shown = last
                    self._progress(what, received)
                self._check_cancel()
        finally:
            stop.set()
            self.backend.close(handle)
        with self._lock:
            self._received.pop(what, None)
        return "".join(parts), finish_reason == "length"

    def _timeout_message(self, what: str, first: bool, limit: float, received: int, started: float) -> str:
        waited = time.monotonic() - started
        if first:
            return (f"the LLM ({self.settings.describe()}) sent nothing of the {what} for {limit:g} s (the first-"
                    f"token timeout: reading the prompt); raise DREAMRUNNER_LLM_FIRST_TOKEN_TIMEOUT or use a "
                    "faster model")
        return (f"the LLM ({self.settings.describe()}) stopped sending the {what} for {limit:g} s after "
                f"{received} characters in {waited:.0f} s (the timeout between pieces of an answer); raise "
                "DREAMRUNNER_LLM_TIMEOUT or use a faster model")

    def _progress(self, what: str, received: int) -> None:
        with self._lock:
            if received:
                self._received[what] = received
            else:
                self._received.pop(what, None)
            busy = ", ".join(f"{name}: {count:,} characters" for name, count in self._received.items())
        if self.progress is not None:
            self.progress(Progress("plan", self._done, self._total, busy or f"waiting for the {what}"))

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.cancelled:
            raise Cancelled("planning cancelled by the user; the plans finished so far are kept")


class _Checked:
    """A scene answer's parse step plus the checks that matter for rendering: the first answer with such
    problems goes back to the LLM once (kept as the fallback); after that they are repaired locally."""

    def __init__(self, scene: Scene, characters: Sequence[Character]):
        self.scene, self.characters = scene, characters
        self.sent_back = False
        self.fallback: Scene | None = None
        self.fallback_repairs: list[Repair] = []

    def __call__(self, planned: Scene, repairs: list[Repair]) -> tuple[Scene, list[Repair]]:
        problems = rendering_problems(planned, self.characters)
        if problems and not self.sent_back:
            self.sent_back = True
            self.fallback, self.fallback_repairs = planned, repairs
            raise PlanningError("the scene plan has problems for rendering", problems=problems)
        return planned, repairs


class _ServerError(Exception):
    """A failed request, as the planner handles it: HTTP status (None: no answer), the server's words,
    the context window it names (if any) and whether asking again may help."""

    def __init__(self, message: str, status: int | None = None, text: str = "", retryable: bool = False):
        super().__init__(message)
        self.status, self.text, self.retryable = status, text, retryable
        match = _CONTEXT_NUMBER.search(text) if status is not None and 400 <= status < 600 else None
        self.context = int(match.group(1)) if match and ("exceed" in text.lower() or "maximum" in text.lower()) else None


class _Remote:
    """An OpenAI-compatible server through the openai client (no client retries: ours are reported)."""

    def __init__(self, settings: PlannerSettings, client: openai.OpenAI | None):
        import httpx
        import openai  # imported here: it takes most of a second, and the offline path never needs it

        self.settings = settings
        self.key = (settings.base_url or "openai", settings.model)
        # The watchdog in LLMPlanner._stream enforces the real limits; this one only ends a dead socket.
        timeout = httpx.Timeout(settings.first_token_timeout + settings.timeout, connect=30.0)
        self.client = client or openai.OpenAI(
            # Local servers (Ollama, llama.cpp) take any key; the client insists on one.
            api_key=settings.api_key or "not-needed", base_url=settings.base_url, timeout=timeout, max_retries=0)

    def stream(self, request: dict, handle: dict) -> Iterator[tuple[str, str | None]]:
        stream = self.client.chat.completions.create(**request, stream=True)
        handle["stream"] = stream
        for chunk in stream:
            choices = getattr(chunk, "choices", None) or []
            if not choices:
                continue
            delta = choices[0].delta
            # Reasoning models stream their thoughts apart from the content: they count as progress only.
            text = getattr(delta, "content", None) or ""
            thinking = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
            yield (text if text or not thinking else ""), choices[0].finish_reason

    def close(self, handle: dict) -> None:
        stream = handle.pop("stream", None)
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing an already broken connection
                pass

    def error(self, error: BaseException) -> BaseException:
        import openai

        where = self.settings.describe()
        if isinstance(error, openai.APIStatusError):
            text = _error_text(error)
            return _ServerError(f"the LLM server ({where}) answered HTTP {error.status_code}: {text}",
                                error.status_code, text, retryable=error.status_code in (429, 502, 503, 504))
        if isinstance(error, openai.APITimeoutError):
            return _ServerError(f"the connection to the LLM ({where}) timed out", retryable=True)
        if isinstance(error, openai.APIConnectionError):
            return _ServerError(f"cannot reach the LLM ({where}): {error}", retryable=True)
        if isinstance(error, openai.OpenAIError):
            return _ServerError(f"the LLM request failed: {error}")
        return error

    def context_window(self) -> int | None:
        """The context window the server says it has: llama.cpp's /props, vLLM's /v1/models (max_model_len),
        Ollama's /api/show (the model's length, at most Ollama's default window of 4096 unless set)."""
        import httpx

        base = (self.settings.base_url or "").rstrip("/")
        if not base:
            return None
        root = base[:-3] if base.endswith("/v1") else base
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        try:
            with httpx.Client(timeout=5.0, headers=headers) as http:
                props = _json_or_none(http.get(f"{root}/props"))
                if isinstance(props, dict):
                    settings = props.get("default_generation_settings") or {}
                    n_ctx = props.get("n_ctx") or settings.get("n_ctx")
                    if isinstance(n_ctx, int) and n_ctx > 0:
                        return n_ctx
                models = _json_or_none(http.get(f"{base}/models"))
                for model in (models or {}).get("data", []) if isinstance(models, dict) else []:
                    if isinstance(model, dict) and model.get("id") == self.settings.model \
                            and isinstance(model.get("max_model_len"), int):
                        return model["max_model_len"]
                show = _json_or_none(http.post(f"{root}/api/show", json={"model": self.settings.model}))
                info = show.get("model_info", {}) if isinstance(show, dict) else {}
                lengths = [v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)]
                if lengths:
                    return min(lengths[0], DEFAULT_CONTEXT)
        except httpx.HTTPError:
            return None
        return None


def _json_or_none(response: Any) -> Any:
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


class _InProcess:
    """A GGUF model run in this process by llama-cpp-python (the `local-llm` extra), with the schema
    enforced by its grammar-constrained decoding (response_format json_object + schema)."""

    _models: dict[str, Any] = {}
    _load_lock = threading.Lock()

    def __init__(self, settings: PlannerSettings):
        try:
            import llama_cpp
        except ImportError:
            raise PlanningError("--llm-gguf needs llama-cpp-python, which is not installed: pip install "
                                "'.[local-llm]' (or pip install llama-cpp-python)") from None
        from pathlib import Path

        path = Path(settings.gguf).expanduser()
        if not path.is_file():
            raise PlanningError(f"the GGUF model file {path} does not exist")
        self.settings = settings
        self.key = (f"gguf:{path.resolve()}", settings.model)
        with self._load_lock:
            if str(path) not in self._models:
                try:
                    self._models[str(path)] = llama_cpp.Llama(
                        model_path=str(path), n_ctx=settings.context_tokens or 8192, verbose=False)
                except (ValueError, RuntimeError) as error:
                    raise PlanningError(f"llama-cpp-python cannot load {path}: {error}") from None
        self.llama = self._models[str(path)]
        self.lock = threading.Lock()  # one model answers one request at a time

    def stream(self, request: dict, handle: dict) -> Iterator[tuple[str, str | None]]:
        fmt = request.get("response_format") or {"type": "text"}
        if fmt.get("type") == "json_schema":  # its own form: JSON mode with the schema beside it
            fmt = {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
        with self.lock:
            chunks = self.llama.create_chat_completion(
                messages=request["messages"], response_format=fmt, max_tokens=request["max_tokens"],
                temperature=request.get("temperature", 0.7), stream=True)
            handle["chunks"] = chunks
            for chunk in chunks:
                choice = chunk["choices"][0]
                yield choice.get("delta", {}).get("content") or "", choice.get("finish_reason")

    def close(self, handle: dict) -> None:
        handle.pop("chunks", None)  # the generator ends in its own thread (LLMPlanner._stream stops it)

    def error(self, error: BaseException) -> BaseException:
        if isinstance(error, ValueError):
            text = str(error)
            return _ServerError(f"llama-cpp-python refused the request: {text}", 400, text)
        return error

    def context_window(self) -> int | None:
        return int(self.llama.n_ctx())


def _error_text(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body.get("detail", body))
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:500]
    return str(error.message or error)[:500]
