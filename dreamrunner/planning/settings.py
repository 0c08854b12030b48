"""Which planner to use: an OpenAI-compatible LLM when one is configured, else the offline planner."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from ..story import Checked
from .base import PlanningError

DEFAULT_MODEL = "gpt-4o"  # the paper's planner
OPENAI_URL = "https://api.openai.com/v1"  # where the openai client goes when no base URL is set
# Base URLs, besides OPENAI_BASE_URL, that may receive the environment's OPENAI_API_KEY (comma or space separated).
ALLOWED_URLS_ENV = "DREAMRUNNER_LLM_ALLOWED_URLS"


class PlannerSettings(Checked):
    """How to reach the LLM. Any OpenAI-compatible chat-completions server works (OpenAI, Ollama, vLLM,
    llama.cpp server): set `base_url` to its `/v1` endpoint."""


    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)  # never shown in logs or reprs
    model: str = DEFAULT_MODEL
    # Timeouts are per piece of a streamed answer, not per answer: a CPU model writes a scene plan for minutes.
    timeout: float = Field(default=120.0, gt=0, description="seconds to wait for the next piece of a streamed answer")
    first_token_timeout: float = Field(default=600.0, gt=0, description=(
        "seconds to wait for the first piece of an answer (a CPU server reads the prompt first)"))
    max_attempts: int = Field(default=3, ge=1, le=10, description="answers asked for per plan, the first included")
    # "auto" asks for a JSON schema (structured output) and steps down (JSON mode with the schema, JSON mode,
    # a plain prompt) when the server refuses it; what a server takes is remembered per base URL and model.
    response_format: Literal["auto", "json_schema", "json_object", "text"] = "auto"
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    http_retries: int = Field(default=1, ge=0, le=5, description=(
        "our own retries (each one reported) after a connection error or HTTP 5xx/429; the client makes none"))
    story_max_tokens: int = Field(default=1536, ge=64, le=1_000_000, description="tokens one story-plan answer may use")
    scene_max_tokens: int = Field(default=2048, ge=64, le=1_000_000, description="tokens one scene-plan answer may use")
    context_tokens: int | None = Field(default=None, ge=512, le=10_000_000, description=(
        "the server's context window in tokens; None: asked from the server, else 4096"))
    parallel: int = Field(default=1, ge=1, le=16, description="scene plans asked for at once (1 suits local servers)")
    gguf: str | None = Field(default=None, description=(
        "a GGUF model file run in this process (llama-cpp-python, the local-llm extra) instead of a server"))

    @property
    def llm_configured(self) -> bool:
        return bool(self.api_key or self.base_url or self.gguf)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlannerSettings:
        """OPENAI_API_KEY, OPENAI_BASE_URL, DREAMRUNNER_LLM_MODEL (and DREAMRUNNER_LLM_TIMEOUT,
        DREAMRUNNER_LLM_FIRST_TOKEN_TIMEOUT, DREAMRUNNER_LLM_RESPONSE_FORMAT, DREAMRUNNER_LLM_CONTEXT,
        DREAMRUNNER_LLM_PARALLEL, DREAMRUNNER_LLM_GGUF). Unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for key, name in (("api_key", "OPENAI_API_KEY"), ("base_url", "OPENAI_BASE_URL"),
                          ("model", "DREAMRUNNER_LLM_MODEL"), ("timeout", "DREAMRUNNER_LLM_TIMEOUT"),
                          ("response_format", "DREAMRUNNER_LLM_RESPONSE_FORMAT"),
                          ("first_token_timeout", "DREAMRUNNER_LLM_FIRST_TOKEN_TIMEOUT"),
                          ("context_tokens", "DREAMRUNNER_LLM_CONTEXT"), ("parallel", "DREAMRUNNER_LLM_PARALLEL"),
                          ("gguf", "DREAMRUNNER_LLM_GGUF")):
            if env.get(name, "").strip():
                values[key] = env[name].strip()
        try:
            return cls(**values)
        except ValidationError as error:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
            raise PlanningError("the LLM settings from the environment are not valid: " + "; ".join(problems)) from None

    def describe(self) -> str:
        if self.gguf:
            return f"GGUF model {self.gguf} in this process"
        where = self.base_url or "the OpenAI API"
        return f"model {self.model!r} at {where}"


def _url_key(url: str) -> tuple[str, str, str]:
    """A base URL as compared for key sending: scheme and host case-insensitive, no trailing slash."""
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def key_destinations(environ: Mapping[str, str] | None = None) -> list[str]:
    """The base URLs the environment's API key may be sent to: OPENAI_BASE_URL (OpenAI's API when it is
    unset) and those listed in DREAMRUNNER_LLM_ALLOWED_URLS."""
    env = os.environ if environ is None else environ
    listed = [url for url in re.split(r"[,\s]+", env.get(ALLOWED_URLS_ENV, "")) if url]
    return [env.get("OPENAI_BASE_URL", "").strip() or OPENAI_URL, *listed]


def settings_for_caller(base_url: str | None, api_key: str | None, model: str | None,
                        environ: Mapping[str, str] | None = None) -> PlannerSettings:
    """Planner settings from values typed by someone the server's API key must not be handed to (an
    editor page: anyone who reaches the port), over the environment's settings.

    The environment's OPENAI_API_KEY goes only to a base URL in `key_destinations`. Another typed base
    URL needs a typed key; without one this raises PlanningError rather than send the server's key to
    an address the caller chose. Empty values keep the environment's.
    """
    env = PlannerSettings.from_env(environ)
    base_url, api_key, model = ((value or "").strip() or None for value in (base_url, api_key, model))
    if base_url is not None and api_key is None and env.api_key:
        allowed = {_url_key(url) for url in key_destinations(environ)}
        if _url_key(base_url) not in allowed:
            raise PlanningError(
                f"the base URL {base_url} is not the server's LLM endpoint ({key_destinations(environ)[0]}) nor "
                f"listed in {ALLOWED_URLS_ENV}: type an API key for it (the server's own key is only sent to "
                f"its configured endpoints), or clear the base URL to use the server's endpoint")
    values = {"base_url": base_url or env.base_url, "api_key": api_key or env.api_key, "model": model or env.model}
    return env.model_copy(update=values)


def get_planner(settings: PlannerSettings | None = None):
    """The LLM planner when an LLM is configured (API key or base URL), else the offline planner."""
    from .llm import LLMPlanner
    from .offline import OfflinePlanner

    settings = PlannerSettings.from_env() if settings is None else settings
    return LLMPlanner(settings) if settings.llm_configured else OfflinePlanner()
