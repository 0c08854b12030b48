"""Which planner to use: an OpenAI-compatible LLM when one is configured, else the offline planner."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .base import PlanningError

DEFAULT_MODEL = "gpt-4o"  # the paper's planner


class PlannerSettings(BaseModel):
    """How to reach the LLM. Any OpenAI-compatible chat-completions server works (OpenAI, Ollama, vLLM,
    llama.cpp server): set `base_url` to its `/v1` endpoint."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)  # never shown in logs or reprs
    model: str = DEFAULT_MODEL
    timeout: float = Field(default=120.0, gt=0, description="seconds to wait for one answer")
    max_attempts: int = Field(default=3, ge=1, le=10, description="answers asked for per plan, the first included")
    # "auto" asks for a JSON schema (structured output) and falls back to JSON mode, then to a plain
    # prompt, when the server refuses it; the fallback is remembered for the planner's lifetime.
    response_format: Literal["auto", "json_schema", "json_object", "text"] = "auto"
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    http_retries: int = Field(default=1, ge=0, le=5, description="retries of timeouts, 5xx and 429 by the openai client")

    @property
    def llm_configured(self) -> bool:
        return bool(self.api_key or self.base_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlannerSettings:
        """OPENAI_API_KEY, OPENAI_BASE_URL, DREAMRUNNER_LLM_MODEL (and DREAMRUNNER_LLM_TIMEOUT,
        DREAMRUNNER_LLM_RESPONSE_FORMAT). Unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for key, name in (("api_key", "OPENAI_API_KEY"), ("base_url", "OPENAI_BASE_URL"),
                          ("model", "DREAMRUNNER_LLM_MODEL"), ("timeout", "DREAMRUNNER_LLM_TIMEOUT"),
                          ("response_format", "DREAMRUNNER_LLM_RESPONSE_FORMAT")):
            if env.get(name, "").strip():
                values[key] = env[name].strip()
        try:
            return cls(**values)
        except ValidationError as error:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
            raise PlanningError("the LLM settings from the environment are not valid: " + "; ".join(problems)) from None

    def describe(self) -> str:
        where = self.base_url or "the OpenAI API"
        return f"model {self.model!r} at {where}"


def get_planner(settings: PlannerSettings | None = None):
    """The LLM planner when an LLM is configured (API key or base URL), else the offline planner."""
    from .llm import LLMPlanner
    from .offline import OfflinePlanner

    settings = PlannerSettings.from_env() if settings is None else settings
    return LLMPlanner(settings) if settings.llm_configured else OfflinePlanner()
