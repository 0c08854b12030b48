"""Project folders: `project.json` (the story, with a schema version), its backup, and media beside it.

    my-story/
      project.json        the current story
      project.json.bak    the story as it was before the last save
      media/              reference images, approved clips, priors, renders (relative paths only)

A save writes a temporary file, fsyncs it and renames it over `project.json`, so a crash at any point
leaves either the old or the new project, never a torn one.

Several writers (the editor, CLI commands, two processes) may change one project. Each save holds an advisory
lock (`filelock`, `.project.json.lock`) and checks the file's `revision` against the one this writer loaded;
over a newer revision it merges both writers' changes (`dreamrunner.revisions`) and refuses, naming what both
changed, when they touch the same thing. A save never silently overwrites another writer's work.
The hidden temporaries a killed save leaves behind are removed by the next load or save.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from .errors import DreamRunnerError
from .files import remove_stale_temporaries, write_text_atomic
from .revisions import merge_values
from .story import Story
from .validation import StoryValidationError, validate_story

SCHEMA_VERSION = 1
PROJECT_FILE = "project.json"
BACKUP_FILE = "project.json.bak"
LOCK_FILE = ".project.json.lock"
MEDIA_DIR = "media"
FORMAT = "dreamrunner-studio"
# Seconds a save waits for another writer's save to finish before giving up with a message.
LOCK_TIMEOUT = 30.0


class ProjectError(DreamRunnerError):
    pass


class ProjectConflict(ProjectError):
    """Another writer saved changes to the same parts of the story since this one loaded it."""

    def __init__(self, folder: Path, places: list[str], theirs_revision: int):
        self.places = places
        shown = ", ".join(places[:6]) + (f" and {len(places) - 6} more" if len(places) > 6 else "")
        super().__init__(
            f"{folder / PROJECT_FILE} was changed by another writer (now revision {theirs_revision}) in the same "
            f"places as this change: {shown}. Nothing was saved; reload the project to see their version "
            f"and make the change again.")


def dump_story(story: Story, revision: int = 1) -> str:
    payload = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "revision": revision,
               "story": story.model_dump(mode="json")}
    # allow_nan=False: bare Infinity/NaN is not JSON; validation (finite numbers, story.Checked) stops them first.
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def parse_project(text: str | bytes, source: str = PROJECT_FILE) -> Story:
    """A project file's text (or its raw bytes, read as UTF-8) -> the validated story; `ProjectError` or
    `StoryValidationError` naming what is wrong."""
    return read_project(text, source)[0]


def read_project(text: str | bytes, source: str = PROJECT_FILE) -> tuple[Story, int]:
    """The story of a project file's text and its revision (0 for files written before revisions)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProjectError(f"{source} is not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
                               "save it as UTF-8") from None
    try:
        payload = json.loads(text.removeprefix("\ufeff"))  # editors on Windows write a byte-order mark
    except json.JSONDecodeError as error:
        raise ProjectError(f"{source} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None
    except RecursionError:
        raise ProjectError(f"{source} is nested too deeply to be a project") from None
    except ValueError:  # Python reads no integer of more than 4300 digits
        raise ProjectError(f"{source} holds a number with more than 4300 digits") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ProjectError(f"{source} is not a DreamRunner Studio project (no \"format\": \"{FORMAT}\")")
    version = payload.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):  # true is an int to Python, not a version
        raise ProjectError(f"{source} has no integer schema_version")
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"{source} was saved by a newer DreamRunner Studio (schema version {version}); this version reads "
            f"schema version {SCHEMA_VERSION}. Upgrade DreamRunner Studio to open it."
        )
    if version < SCHEMA_VERSION:
        raise ProjectError(
            f"{source} uses schema version {version}, older than this version's {SCHEMA_VERSION}, and no migration "
            f"from it exists. Open it with the DreamRunner Studio release that wrote it and re-export the plan."
        )
    revision = payload.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise ProjectError(f"{source} has a revision that is not a whole number: {revision!r}")
    return validate_story(payload.get("story")), revision


def _remove_orphans(folder: Path) -> None:
    """Remove the temporaries of saves that were killed before their rename (see files.remove_stale_temporaries)."""
    for name in (PROJECT_FILE, BACKUP_FILE):
        remove_stale_temporaries(folder / name)


class Project:
    """A story bound to its folder on disk.

    `revision` is the file revision this story was loaded from or last saved as (None: not saved yet);
    `base` is the story as it was then, which a save over a newer revision merges against.
    """

    def __init__(self, folder: str | os.PathLike, story: Story, revision: int | None = None):
        self.folder = Path(folder)
        self.story = story
        self.revision = revision
        self.base = story.model_copy(deep=True) if revision is not None else None
        self._stamp: tuple | None = None

    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    @property
    def media(self) -> Path:
        return self.folder / MEDIA_DIR

    @classmethod
    def create(cls, folder: str | os.PathLike, story: Story, overwrite: bool = False) -> Project:
        """Make a new project folder. An existing project there is refused, or replaced with `overwrite`
        (its story stays in project.json.bak)."""
        project = cls(folder, story)
        project.folder.mkdir(parents=True, exist_ok=True)
        project.media.mkdir(exist_ok=True)
        with project._locked():
            current = project._read_disk()
            if current is not None and not overwrite:
                raise ProjectError(f"{project.folder} already holds a project; open it instead")
            project._write(current, 1 if current is None else current[1] + 1)
        return project

    @classmethod
    def load(cls, folder: str | os.PathLike, from_backup: bool = False) -> Project:
        folder = Path(folder)
        path = folder / (BACKUP_FILE if from_backup else PROJECT_FILE)
        if not path.is_file():
            raise ProjectError(f"no project at {folder}: {path.name} not found")
        _remove_orphans(folder)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ProjectError(f"cannot read {path}: {error}") from None
        story, revision = read_project(data, str(path))
        if from_backup:
            # A backup opened to be kept: saving it must replace whatever project.json holds now.
            current = Project._disk_revision(folder)
            revision = current if current is not None else 0
        project = cls(folder, story, revision)
        project._stamp = project._disk_stamp()
        return project

    # -- saving: lock, revision check, merge ---------------------------------------------------------

    def save(self) -> None:
        """Write the story as the next revision of project.json, keeping the previous file as project.json.bak.

        Raises ProjectConflict (nothing written) when another writer saved changes to the same places since
        this story was loaded; their changes elsewhere are merged into `self.story` and saved with it.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        _remove_orphans(self.folder)
        with self._locked():
            current = self._read_disk()
            if current is not None and current[1] != self.revision:
                self.story = self._merged(current[0], current[1])
            if current is not None and current[0] == self.story:
                self._adopt(current[1])
                return
            self._write(current, 1 if current is None else current[1] + 1)

    def refresh(self) -> bool:
        """Take in what other writers saved since this story was loaded (merged with unsaved changes here).

        Returns True when the story changed; raises ProjectConflict when both changed the same places."""
        stamp = self._disk_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        with self._locked():
            current = self._read_disk()
        if current is None or current[1] == self.revision:
            self._stamp = stamp
            return False
        before = self.story
        # Unsaved changes here stay changes relative to the new base.
        self.story = self._merged(current[0], current[1])
        self.revision, self.base, self._stamp = current[1], current[0], stamp
        return self.story != before

    def snapshot(self) -> Project:
        """A copy of this project for a job to read while the story goes on being edited; it has no revision,
        so saving it is refused (jobs hand results back instead, docs/architecture.md)."""
        return Project(self.folder, self.story.model_copy(deep=True))

    @contextmanager
    def edit(self, save: bool = True) -> Iterator[Project]:
        """One change to the story (`dreamrunner.edits`): the whole story is checked afterwards; on any error it
        is put back as it was (a ProjectConflict on saving included); with `save`, a changed story is saved."""
        before = self.story.model_copy(deep=True)
        try:
            yield self
            validate_story(self.story.model_dump(mode="json"))  # cross references, which assignment does not check
            if save and self.story != before:
                self.save()
        except BaseException:
            self.story = before
            raise

    def _merged(self, theirs: Story, theirs_revision: int) -> Story:
        if self.base is None:
            # This writer never saw the file's story: everything it holds would overwrite theirs.
            raise ProjectConflict(self.folder, ["the whole story (this copy was not loaded from the file)"],
                                  theirs_revision)
        merged, conflicts = merge_values(self.base.model_dump(mode="json"), self.story.model_dump(mode="json"),
                                         theirs.model_dump(mode="json"))
        if conflicts:
            raise ProjectConflict(self.folder, conflicts, theirs_revision)
        try:
            return validate_story(merged)
        except StoryValidationError as error:
            raise ProjectConflict(self.folder, [f"the merged story is not valid: {error}"], theirs_revision) from None

    def _write(self, current: tuple[Story, int, str] | None, revision: int) -> None:
        if current is not None:
            write_text_atomic(self.folder / BACKUP_FILE, current[2])
        write_text_atomic(self.path, dump_story(self.story, revision))
        self._adopt(revision)

    def _adopt(self, revision: int) -> None:
        self.revision = revision
        self.base = self.story.model_copy(deep=True)
        self._stamp = self._disk_stamp()

    def _read_disk(self) -> tuple[Story, int, str] | None:
        if not self.path.is_file():
            return None
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise ProjectError(f"cannot read {self.path}: {error}") from None
        story, revision = read_project(data, str(self.path))
        return story, revision, data.decode("utf-8")

    @staticmethod
    def _disk_revision(folder: Path) -> int | None:
        try:
            return read_project((Path(folder) / PROJECT_FILE).read_bytes())[1]
        except (OSError, DreamRunnerError):
            return None

    def _disk_stamp(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = FileLock(str(self.folder / LOCK_FILE), timeout=LOCK_TIMEOUT)
        try:
            with lock:
                yield
        except Timeout:
            raise ProjectError(f"{self.folder} is being saved by another program for more than {LOCK_TIMEOUT:.0f} s; "
                               f"try again (lock file {LOCK_FILE})") from None

    def resolve(self, relative: str) -> Path:
        """The absolute path of a media path of the story, refusing any that leaves the folder (symlinks too)."""
        root = self.folder.resolve()
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            raise ProjectError(f"media path {relative!r} leads outside the project folder {root}")
        return target

    def relative(self, path: str | os.PathLike) -> str:
        """The project-relative form of a file inside the project folder."""
        target = Path(path).resolve()
        root = self.folder.resolve()
        if root not in target.parents:
            raise ProjectError(f"{path} is not inside the project folder {root}")
        return target.relative_to(root).as_posix()


def restore_backup(folder: str | os.PathLike) -> Project:
    """Make `project.json.bak` the project again, when `project.json` is damaged or was a mistake.

    The replaced `project.json` is kept beside it as `project.json.damaged-<YYYYmmdd-HHMMSS>` (nothing is
    deleted) and the backup stays, so the step can be undone by hand. Raises ProjectError, naming the
    problem, when the backup is missing or cannot be read as a project either.
    """
    folder = Path(folder)
    backup = Project.load(folder, from_backup=True)
    current = folder / PROJECT_FILE
    with backup._locked():
        # The revision only goes up: writers holding the damaged file's revision must merge, not overwrite.
        revision = read_project((folder / BACKUP_FILE).read_bytes())[1]
        if current.exists():
            found = re.search(rb'"revision"\s*:\s*(\d{1,18})', current.read_bytes())
            revision = max(revision, int(found.group(1)) if found else 0)
            os.replace(current, folder / f"{PROJECT_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        write_text_atomic(current, dump_story(backup.story, revision + 1))
    return Project.load(folder)


def load_story_file(path: str | os.PathLike) -> Any:
    """Read a project.json (or a folder holding one) and return its story."""
    path = Path(path)
    if path.is_dir():
        return Project.load(path).story
    if not path.is_file():
        raise ProjectError(f"{path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProjectError(f"cannot read {path}: {error}") from None
    return parse_project(data, str(path))
