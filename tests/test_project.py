import json
import os
import re

import pytest

from dreamrunner import project as project_module
from dreamrunner.errors import DreamRunnerError
from dreamrunner.project import BACKUP_FILE, PROJECT_FILE, SCHEMA_VERSION, Project, ProjectError, load_story_file
from dreamrunner.validation import StoryValidationError, validate_story


@pytest.fixture
def story(simple_story_data):
    return validate_story(simple_story_data)


def test_save_and_load_round_trip_without_loss(tmp_path, story):
    story.scenes[0].keyframes[2].entities[0].mark_edited("box")
    story.settings.render.seed = 7
    Project.create(tmp_path / "p", story)
    loaded = Project.load(tmp_path / "p").story
    assert loaded == story
    assert loaded.scenes[0].keyframes[2].entities[0].user_edited == ["box"]
    payload = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    assert payload["schema_version"] == SCHEMA_VERSION


def test_save_keeps_the_previous_version_as_backup(tmp_path, story):
    project = Project.create(tmp_path, story)
    project.story.scenes[0].narration = "Changed."
    project.save()
    assert Project.load(tmp_path).story.scenes[0].narration == "Changed."
    assert Project.load(tmp_path, from_backup=True).story.scenes[0].narration == "The witch flies past the owl."


def test_a_crash_between_write_and_rename_leaves_the_previous_project(tmp_path, story, monkeypatch):
    project = Project.create(tmp_path, story)
    project.story.scenes[0].narration = "Never saved."
    real_replace = os.replace

    def crash_on_project_file(source, target):
        if str(target).endswith(PROJECT_FILE):
            raise OSError("simulated power loss before rename")
        real_replace(source, target)

    monkeypatch.setattr(project_module.os, "replace", crash_on_project_file)
    with pytest.raises(OSError, match="simulated power loss"):
        project.save()
    monkeypatch.undo()
    assert Project.load(tmp_path).story.scenes[0].narration == "The witch flies past the owl."
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file is left behind"


def test_a_crash_while_writing_the_temporary_file_leaves_the_previous_project(tmp_path, story, monkeypatch):
    project = Project.create(tmp_path, story)
    project.story.title = "Never saved"

    def crash(fd):
        raise OSError("simulated crash during fsync")

    monkeypatch.setattr(project_module.os, "fsync", crash)
    with pytest.raises(OSError):
        project.save()
    monkeypatch.undo()
    assert Project.load(tmp_path).story.title == "Night flight"


@pytest.mark.parametrize("version,message", [
    (SCHEMA_VERSION + 1, "saved by a newer DreamRunner Studio"),
    (0, "older than this version's"),
    ("1", "no integer schema_version"),
    (True, "no integer schema_version"),  # a bool is an int to Python, not a version
])
def test_other_schema_versions_give_a_clear_message(tmp_path, story, version, message):
    project = Project.create(tmp_path, story)
    payload = json.loads(project.path.read_text())
    payload["schema_version"] = version
    project.path.write_text(json.dumps(payload))
    with pytest.raises(ProjectError, match=message):
        Project.load(tmp_path)


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON \\(line 1, column 2\\)"),
    ('{"schema_version": 1}', "is not a DreamRunner Studio project"),
])
def test_broken_files_give_a_clear_message(tmp_path, text, message):
    (tmp_path / PROJECT_FILE).write_text(text)
    with pytest.raises(ProjectError, match=message):
        Project.load(tmp_path)


def test_missing_project(tmp_path):
    with pytest.raises(ProjectError, match="project.json not found"):
        Project.load(tmp_path / "nowhere")


def test_invalid_story_in_file_names_the_field(tmp_path, story):
    project = Project.create(tmp_path, story)
    payload = json.loads(project.path.read_text())
    payload["story"]["scenes"][0]["keyframes"][1]["entities"][0]["box"] = [0.9, 0.1, 0.1, 0.5]
    project.path.write_text(json.dumps(payload))
    with pytest.raises(StoryValidationError, match=r"keyframe 2, entity 1 \('witch'\), box: x0 = 0.9"):
        Project.load(tmp_path)


def test_paths_that_escape_the_project_are_refused(tmp_path, story):
    project = Project.create(tmp_path / "p", story)
    assert project.resolve("media/mira.png") == (tmp_path / "p" / "media" / "mira.png").resolve()
    with pytest.raises(ValueError, match="escapes the project folder"):
        project.story.characters[0].reference_images = ["../secret.png"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (project.media / "link").symlink_to(outside)
    with pytest.raises(ProjectError, match="leads outside the project folder"):
        project.resolve("media/link/x.png")
    assert project.relative(project.media / "a.png") == "media/a.png"
    with pytest.raises(ProjectError, match="not inside the project folder"):
        project.relative(outside / "a.png")


def test_saving_an_unchanged_story_does_not_touch_the_backup(tmp_path, story):
    project = Project.create(tmp_path, story)
    project.save()
    assert not (tmp_path / BACKUP_FILE).exists()


def test_saved_files_get_the_usual_permissions(tmp_path, story):
    umask = os.umask(0o022)
    try:
        project = Project.create(tmp_path, story)
    finally:
        os.umask(umask)
    assert project.path.stat().st_mode & 0o777 == 0o644


SAVE_LOOP = """
import sys
from dreamrunner.project import Project
project = Project.load(sys.argv[1])
padding = "x" * 400_000  # a large story: each write takes long enough to be killed in the middle
n = 0
while True:
    n += 1
    project.story.topic = f"{n} {padding}"
    project.save()
    print(n, flush=True)
"""


def _orphans(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".project.json") and p.name.endswith(".tmp"))


def test_temporaries_of_saves_killed_by_sigkill_are_removed_on_the_next_load_and_save(tmp_path, story):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    Project.create(tmp_path, story)
    env = {**os.environ, "PYTHONPATH": str(root)}
    # kill -9 writers at varying moments until one is caught mid-write (each new writer's load would
    # already remove the orphans of the one before, so stop at the first).
    for attempt in range(60):
        writer = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # it is saving now
        time.sleep(0.003 * (attempt % 11))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        if _orphans(tmp_path):
            break
    left = _orphans(tmp_path)
    assert left, "no save was caught mid-write; the test proves nothing"
    # Each name records its writer's pid, and those processes are gone.
    assert all(re.search(r"\.project\.json(\.bak)?\.\d+\.\w+\.tmp$", name) for name in left), left

    project = Project.load(tmp_path)  # still the last completed save
    assert project.story.topic.split()[0].isdigit()
    assert _orphans(tmp_path) == []

    # A save cleans up too, and a live writer's fresh temporary is left alone.
    (tmp_path / f".project.json.99999999.abcdefgh.tmp").write_text("dead pid")
    live = tmp_path / f".project.json.{os.getpid()}.abcdefgh.tmp"
    live.write_text("being written")
    old = tmp_path / ".project.json.bak.oldname1.tmp"  # no pid (an older version's name), older than an hour
    old.write_text("stale")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    unrelated = tmp_path / ".project.json.notes"
    unrelated.write_text("not ours")
    project.story.title = "saved again"
    project.save()
    assert _orphans(tmp_path) == [live.name]
    assert unrelated.exists() and Project.load(tmp_path).story.title == "saved again"


def test_restore_backup_keeps_the_damaged_file(tmp_path, story):
    from dreamrunner.project import restore_backup

    project = Project.create(tmp_path, story.model_copy(deep=True))
    project.story.title = "Second"
    project.save()
    (tmp_path / PROJECT_FILE).write_text('{"format": "dreamrunner-studio", "schema_ver')
    with pytest.raises(ProjectError, match="not valid JSON"):
        Project.load(tmp_path)
    restored = restore_backup(tmp_path)
    assert restored.story == story  # the story before the last save
    assert Project.load(tmp_path).story == story
    damaged = [p for p in tmp_path.iterdir() if p.name.startswith(f"{PROJECT_FILE}.damaged-")]
    assert len(damaged) == 1 and damaged[0].read_text().endswith("schema_ver")
    assert (tmp_path / BACKUP_FILE).is_file()
    (tmp_path / BACKUP_FILE).write_text("garbage")
    with pytest.raises(ProjectError, match="project.json.bak is not valid JSON"):
        restore_backup(tmp_path)


def _saved(tmp_path, story) -> str:
    return Project.create(tmp_path, story).path.read_text(encoding="utf-8")


@pytest.mark.parametrize("loader", [Project.load, lambda folder: load_story_file(folder / PROJECT_FILE)])
@pytest.mark.parametrize("content, message", [
    (lambda text: text.replace("Night flight", "Nuit d\u00e9j\u00e0").encode("latin-1"),
     "is not UTF-8|'utf-8' codec can't decode byte 0xe9"),
    (lambda text: b"[" * 200_000 + b"]" * 200_000, "is nested too deeply to be a project"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": 1' + "0" * 5000).encode(),
     "holds a number with more than 4300 digits"),
    (lambda text: text.replace('"media/mira.png"', '"media/mi\\u0000ra.png"').encode(),
     r"reference_images, 0: media path 'media/mi\\x00ra.png' contains the control character '\\x00'"),
    (lambda text: text.replace('"Night flight"', '"Night \\ud800 flight"').encode(),
     r"title: holds text that is not valid Unicode \(an unpaired surrogate"),
])
def test_hostile_project_files_are_named_errors(tmp_path, story, loader, content, message):
    (tmp_path / PROJECT_FILE).write_bytes(content(_saved(tmp_path, story)))
    with pytest.raises(DreamRunnerError, match=message):
        loader(tmp_path)


def test_a_byte_order_mark_is_read(tmp_path, story):
    (tmp_path / PROJECT_FILE).write_bytes(b"\xef\xbb\xbf" + _saved(tmp_path, story).encode())
    assert load_story_file(tmp_path / PROJECT_FILE) == story
