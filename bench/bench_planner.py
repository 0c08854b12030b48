"""Time per story and success rate of `dreamrunner plan` with the LLM the environment names, over 8 topics.

Usage (an OpenAI-compatible server already running, e.g. llama-cpp-python's on loopback):
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 DREAMRUNNER_LLM_MODEL=qwen DREAMRUNNER_LLM_CONTEXT=8192 \\
        python bench/bench_planner.py --out /tmp/plans --results bench/results/planner.jsonl [--topics 0,1,2]
Each topic is one `dreamrunner plan --json` process; a line of JSON per topic goes to --results as it ends
(topic, seconds, exit code, scenes, retries, repairs, the error), and a summary is printed at the end.
--jobs N plans N topics at once (a GPU server that batches requests, e.g. `transformers serve
--continuous-batching`); each topic's seconds are then its own wall time while sharing the server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOPICS = [
    ("a lighthouse keeper and her dog weather a storm",
     ["Ada:an old lighthouse keeper in a yellow raincoat", "Rex:a shaggy brown dog"]),
    ("a robot learns to bake bread", ["Bolt:a small silver robot", "Nana:a grandmother in an apron"]),
    ("two friends race paper boats down a rainy street", ["Leo:a boy in a red coat", "Mia:a girl with a blue umbrella"]),
    ("a fox steals a picnic basket in the park", ["Rusty:a red fox", "Sam:a man in a striped shirt"]),
    ("an astronaut plants a garden on the moon", ["Kai:an astronaut in a white suit"]),
    ("a dragon and a knight become friends", ["Ember:a small green dragon", "Sir Tom:a knight in shining armor"]),
    ("a girl teaches her grandfather to skateboard", ["Zoe:a teenage girl with a helmet",
                                                      "Grandpa Joe:an old man with a gray beard"]),
    ("a cat chases a butterfly through a flower market", ["Luna:a white cat with a pink collar"]),
]


def run_topic(index: int, out: Path) -> dict:
    topic, cast = TOPICS[index]
    argv = [sys.executable, "-m", "dreamrunner", "--json", "plan", "--topic", topic, "--out", str(out / f"topic{index}"),
            "--force"]
    for member in cast:
        argv += ["--character", member]
    started = time.monotonic()
    process = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    events = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in events if e.get("event") == "warning"]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    results = [e for e in events if e.get("event") == "result"]
    return {"topic": topic, "seconds": round(seconds, 1), "exit": process.returncode,
            "scenes": results[0].get("scenes") if results else None,
            "retries": sum("asked again" in w for w in warnings),
            "repairs": sum("asked again" not in w for w in warnings),
            "warnings": warnings, "error": errors[0] if errors else (process.stderr[-500:] if process.returncode else None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the planned projects")
    parser.add_argument("--results", required=True, help="JSONL file the results are appended to")
    parser.add_argument("--topics", default=",".join(map(str, range(len(TOPICS)))), help="topic numbers, 0-based")
    parser.add_argument("--jobs", type=int, default=1, help="topics planned at once (default 1)")
    args = parser.parse_args()
    out, results = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    written = threading.Lock()

    def plan(index: int) -> None:
        row = run_topic(index, out)
        with written:
            rows.append(row)
            with results.open("a", encoding="utf-8") as file:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{row['topic']}: exit {row['exit']} in {row['seconds']} s, {row['scenes']} scenes, "
                  f"{row['retries']} retries, {row['repairs']} repairs", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(plan, (int(i) for i in args.topics.split(","))))
    done = [r for r in rows if r["exit"] == 0]
    mean = sum(r["seconds"] for r in done) / len(done) if done else float("nan")
    print(f"{len(done)} of {len(rows)} topics planned; {mean:.0f} s per planned story")
    return 0


if __name__ == "__main__":
    sys.exit(main())
