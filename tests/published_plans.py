"""The paper's published scene plans (tests/fixtures/dreamrunner_plans), for tests."""

import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
PLAN_FILES = sorted((FIXTURES / "dreamrunner_plans").glob("*.jsonl"))


def fixture_plans() -> list[tuple[str, str]]:
    """All published plans as (id, plan string): 300 of them."""
    plans = []
    for path in PLAN_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            name, plan = json.loads(line)
            plans.append((f"{path.stem[:1]}-{Path(name).stem}", plan))
    return plans
