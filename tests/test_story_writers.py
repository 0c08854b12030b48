"""Two writers of one project (real processes, real files): every change lands or is reported, none is lost
silently; the editor's autosave keeps what a CLI command saved; a render job commits to the live story."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamrunner import edits
from dreamrunner.project import Project, ProjectConflict
from dreamrunner.validation import validate_story
from ui.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).resolve().parent / "story_writer.py"
ROUNDS = 300


def run_writers(folder: Path, mode: str, tmp_path: Path) -> list[list[dict]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    go = tmp_path / f"go-{mode}"
    results = [tmp_path / f"{mode}-{name}.json" for name in ("a", "b")]
    writers = [subprocess.Popen([sys.executable, str(WRITER), str(folder), mode, name, str(ROUNDS), str(go), str(out)],
                                env=env, stderr=subprocess.PIPE, text=True)
               for name, out in zip(("a", "b"), results)]
    go.touch()
    for writer in writers:
        _, errors = writer.communicate(timeout=600)
        assert writer.returncode == 0, errors
    return [json.loads(path.read_text()) for path in results]


@pytest.fixture
def project(tmp_path, simple_story_data) -> Project:
    return Project.create(tmp_path / "story", validate_story(simple_story_data))


def test_two_processes_changing_different_things_lose_nothing(project, tmp_path):
    rounds = run_writers(project.folder, "priors", tmp_path)
    assert all("saved" in r for writer in rounds for r in writer), "different things never conflict"
    story = Project.load(project.folder).story
    assert sorted(p.id for p in story.priors) == sorted(f"{w}-{n}" for w in "ab" for n in range(ROUNDS))
    # Each save made its own revision: no save replaced another one's file.
    revisions = [r["saved"] for writer in rounds for r in writer]
    assert len(set(revisions)) == 2 * ROUNDS


def test_two_processes_changing_the_same_thing_are_told_so(project, tmp_path):
    rounds = run_writers(project.folder, "title", tmp_path)
    saved = [r["saved"] for writer in rounds for r in writer if "saved" in r]
    conflicts = [r["conflict"] for writer in rounds for r in writer if "conflict" in r]
    assert len(saved) + len(conflicts) == 2 * ROUNDS
    assert len(set(saved)) == len(saved), "two saves never claim one revision"
    assert all(places == ["title"] for places in conflicts), "a conflict names what both changed"
    # The file holds the title of the save with the highest revision.
    last = max((r["saved"], f"{name} {n}") for name, writer in zip("ab", rounds)
               for n, r in enumerate(writer) if "saved" in r)
    payload = json.loads((project.folder / "project.json").read_text())
    assert (payload["revision"], payload["story"]["title"]) == last


def test_a_save_merges_changes_to_different_things_and_refuses_the_same(project):
    page = Project.load(project.folder)
    cli = Project.load(project.folder)
    with cli.edit():
        edits.edit_scene(cli.story, "s1", narration="Told by the CLI.")
    with page.edit():
        edits.set_story_fields(page.story, title="Titled in the page")
    story = Project.load(project.folder).story
    assert (story.title, story.scenes[0].narration) == ("Titled in the page", "Told by the CLI.")
    assert page.story == story

    with cli.edit():  # cli's copy is older than the file: it merges too
        edits.edit_scene(cli.story, "s1", narration="Second words.")
    with pytest.raises(ProjectConflict, match=r"scenes\[s1\]\.narration") as refused:
        with page.edit():
            edits.edit_scene(page.story, "s1", narration="The page's words.")
    assert "Nothing was saved" in str(refused.value)
    assert page.story.scenes[0].narration == "Told by the CLI.", "the refused edit is rolled back"
    assert Project.load(project.folder).story.scenes[0].narration == "Second words."


def test_editor_autosave_after_a_cli_render_keeps_the_render(project, tmp_path):
    workspace = Workspace(home=tmp_path / "home")
    with workspace.edit(project.folder) as opened:  # the editor has the project open
        edits.set_setting(opened.story, "render.steps", 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cli = subprocess.run([sys.executable, "-m", "dreamrunner", "render", str(project.folder), "--backend", "tiny",
                          "--scene", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    rendered = Project.load(project.folder).story.scenes[0].renders
    assert len(rendered) == 1

    with workspace.edit(project.folder) as opened:  # an edit in the page, autosaved
        edits.set_story_fields(opened.story, title="Edited after the render")
    story = Project.load(project.folder).story
    assert story.title == "Edited after the render"
    assert story.scenes[0].renders == rendered and story.scenes[0].chosen_render == 0
    assert workspace.open(project.folder).story.scenes[0].renders == rendered, "the page shows the render too"


def test_a_damaged_or_foreign_revision_is_refused_by_name(project):
    path = project.folder / "project.json"
    payload = json.loads(path.read_text())
    payload["revision"] = "7"
    path.write_text(json.dumps(payload))
    with pytest.raises(Exception, match="revision that is not a whole number"):
        Project.load(project.folder)
