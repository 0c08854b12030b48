"""A writer process for the concurrency tests: `python story_writer.py FOLDER MODE NAME COUNT GO RESULT`.

Waits for the file GO (so two writers start together), then does COUNT load-change-save rounds on the project
in FOLDER and writes what happened to RESULT as JSON: per round, the revision saved or the conflict reported.
MODE "priors": each round registers its own prior (writers touch different things: every round must land);
MODE "title": each round sets the title (writers touch the same thing: a round lands or is refused).
"""

import json
import sys
import time
from pathlib import Path

from dreamrunner import edits
from dreamrunner.project import Project, ProjectConflict
from dreamrunner.story import Prior


def main(folder: str, mode: str, name: str, count: str, go: str, result: str) -> None:
    while not Path(go).exists():
        time.sleep(0.005)
    rounds = []
    for number in range(int(count)):
        project = Project.load(folder)
        try:
            with project.edit():
                if mode == "priors":
                    prior = Prior(id=f"{name}-{number}", kind="motion", target=f"{name} motion {number}",
                                  path=f"media/priors/{name}-{number}.safetensors")
                    edits.register_prior(project.story, prior, bind=False)
                else:
                    edits.set_story_fields(project.story, title=f"{name} {number}")
            rounds.append({"saved": project.revision})
        except ProjectConflict as conflict:
            rounds.append({"conflict": conflict.places})
    Path(result).write_text(json.dumps(rounds))


if __name__ == "__main__":
    main(*sys.argv[1:])
