"""The pipeline stages the editor drives, imported when first used.

Heavy stages (rendering, priors: torch and diffusers) load on the first job, not at app start. A stage
missing from this installation is reported by name instead of breaking the page.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from dreamrunner.errors import DreamRunnerError

STAGES = {
    "planning": "dreamrunner.planning",
    "retrieval": "dreamrunner.retrieval",
    "priors": "dreamrunner.priors",
    "rendering": "dreamrunner.rendering",
    "export": "dreamrunner.export",
}


class StageUnavailable(DreamRunnerError):
    pass


def available(stage: str) -> bool:
    try:
        return importlib.util.find_spec(STAGES[stage]) is not None
    except ImportError:
        return False


def load(stage: str):
    try:
        return importlib.import_module(STAGES[stage])
    except ImportError as error:
        raise StageUnavailable(f"the {stage} stage ({STAGES[stage]}) is not available in this installation: "
                               f"{error}") from None


def planning_defaults() -> dict:
    """What the planner settings show first: the LLM when the environment configures one."""
    url = os.environ.get("OPENAI_BASE_URL", "").strip()
    configured = bool(url or os.environ.get("OPENAI_API_KEY", "").strip())
    return {"kind": "llm" if configured else "offline", "base_url": url,
            "model": os.environ.get("DREAMRUNNER_LLM_MODEL", "").strip() or "gpt-4o"}


def make_planner(kind: str, base_url: str, model: str, api_key: str, seed: int = 0):
    """The planner the Story tab's settings describe. The key falls back to OPENAI_API_KEY only for the
    server's own endpoints (dreamrunner.planning.settings_for_caller): a page is not trusted with it.
    `seed` picks the offline planner's variant (an LLM varies by its sampling temperature)."""
    planning = load("planning")
    if kind != "llm":
        return planning.OfflinePlanner(seed=int(seed))
    settings = planning.settings_for_caller(base_url, api_key, model)
    if not settings.llm_configured:
        raise StageUnavailable("the LLM planner needs a base URL or an API key (or choose the offline planner)")
    return planning.get_planner(settings)
