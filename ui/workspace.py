"""The editor's projects on disk: which one was open last, and one guarded place where every edit goes.

The app keeps a small state file (`$DREAMRUNNER_HOME/state.json`, default `~/.dreamrunner`) naming the
last project and the autosave choice, so a restarted app reopens that project. Every change to a story
goes through `Workspace.edit` (which calls `dreamrunner.edits` inside `Project.edit`): it serialises edits to
one project, first takes in what other writers (a CLI command, another app) saved meanwhile, rolls a failed
edit back (a bad value never half-applies) and saves right away when autosave is on. Jobs (render, train)
hand their results to a `Workspace.edit` of the live story; none saves a copy of its own.

Because every edit passes `Workspace.edit`, it also keeps each project's undo history: the story before and
after each edit (its own change only, before any merge with another writer's save), at most `HISTORY_LIMIT`
steps. Undo and redo are edits too: they apply the reverse (or the forward) change of a step to the story as
it is now with the three-way merge of `dreamrunner.revisions`, so what other writers or jobs changed since
stays, and a step whose places were changed again since is refused with those places named.

Folders chosen from the page (open, new, copy) must lie inside the workspace's roots: the projects
folder, the folders given with `app.py --project-root`, and the project opened at start. Anyone who can
reach the editor's port can call its handlers, so a page never names an arbitrary server folder.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from dreamrunner.files import ASSETS_DIR, remove_stale_temporaries, write_text_atomic
from dreamrunner.project import PROJECT_FILE, Project, ProjectConflict, ProjectError, restore_backup
from dreamrunner.revisions import merge_values
from dreamrunner.story import Story
from dreamrunner.validation import StoryValidationError, validate_story

HOME_ENV = "DREAMRUNNER_HOME"
STATE_FILE = "state.json"
DEMO_PROJECT = ASSETS_DIR / "demo"
HISTORY_LIMIT = 50  # undo steps kept per project


class UndoError(ProjectError):
    """Nothing to undo or redo, or the step's places were changed again since."""


@dataclass(frozen=True)
class Step:
    """One edit: what it was (in words) and the story's JSON form before and after it."""

    label: str
    before: dict
    after: dict
    # Edits made under one `join` key (one press of Plan story, whose plans are saved as they arrive) are
    # one step: undo takes them back together.
    join: str | None = None


@dataclass
class History:
    undo: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    redo: list = field(default_factory=list)


def describe_change(before: dict, after: dict, shown: int = 2) -> str:
    """Where two JSON forms of a story differ, in words: "scene 's1', keyframe 1, 'Pip': box"."""
    places: list[str] = []
    _differences(before, after, [], places)
    if not places:
        return "no change"
    text = "; ".join(places[:shown])
    return text + (f" and {len(places) - shown} more" if len(places) > shown else "")


def _differences(before, after, where: list[str], places: list[str]) -> None:
    if before == after:
        return
    name = where[-1] if where else ""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            if key != "user_edited":
                _differences(before.get(key), after.get(key), [*where, key], places)
        return
    if isinstance(before, list) and isinstance(after, list) and name in ("scenes", "characters", "keyframes",
                                                                         "entities"):
        label = {"scenes": "scene", "characters": "character", "keyframes": "keyframe", "entities": ""}[name]
        ident = {"scenes": "id", "characters": "id", "keyframes": "index", "entities": "name"}[name]
        olds = {item.get(ident): item for item in before if isinstance(item, dict)}
        news = {item.get(ident): item for item in after if isinstance(item, dict)}
        if name == "entities" and len(olds) == len(before) and len(news) == len(after) and olds.keys() != news.keys():
            places.append(", ".join(where[:-1] + ["entities"]))
            return
        if len(olds) != len(before) or len(news) != len(after) or (name != "entities" and olds.keys() != news.keys()):
            places.append(", ".join([*where[:-1], name]))
            return
        for key, item in news.items():
            shown = f"{label} {key + 1}" if name == "keyframes" else (f"{label} {key!r}".strip())
            _differences(olds.get(key), item, [*where[:-1], shown] if where else [shown], places)
        return
    places.append(", ".join([*where[:-1], name]) if where[:-1] else name or "the story")


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or "~/.dreamrunner").expanduser()


class AppState:
    """What the app remembers between runs (not part of any project)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.path = self.home / STATE_FILE

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, **values) -> None:
        data = {**self.read(), **values}
        self.home.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        write_text_atomic(self.path, json.dumps(data, indent=2))

    @property
    def last_project(self) -> Path | None:
        value = self.read().get("last_project")
        return Path(value) if isinstance(value, str) and value else None

    @property
    def autosave(self) -> bool:
        return bool(self.read().get("autosave", True))


@dataclass(frozen=True)
class StartupProblem:
    """The project the app should have opened at start could not be read; the demo is open instead."""

    folder: Path
    error: str
    backup_error: str | None  # None: project.json.bak reads as a project and can replace it


class Workspace:
    """The projects this app has open, shared by its browser sessions.

    `roots`: folders, besides `<home>/projects`, under which the page may open, create or copy projects.
    """

    def __init__(self, home: Path | None = None, demo: Path = DEMO_PROJECT,
                 roots: list[str | os.PathLike] | tuple = ()):
        self.home = Path(home) if home is not None else default_home()
        self.state = AppState(self.home)
        self.projects_dir = self.home / "projects"
        self.roots = [self.projects_dir.resolve()]
        for root in roots:
            self.add_root(root)
        self.demo = demo
        self._projects: dict[Path, Project] = {}
        self.conflicts: dict[Path, str] = {}  # open projects whose unsaved changes clash with a newer save
        self._locks: dict[Path, threading.RLock] = {}
        self._histories: dict[Path, History] = {}
        self._guard = threading.Lock()

    # -- where the page may go -----------------------------------------------------------------------

    def add_root(self, folder: str | os.PathLike) -> Path:
        """Let the page use `folder` and everything under it (called at start, never for a folder a page named)."""
        folder = Path(folder).expanduser().resolve()
        if not self.is_allowed(folder):
            self.roots.append(folder)
        return folder

    def is_allowed(self, folder: str | os.PathLike) -> bool:
        folder = Path(folder).expanduser().resolve()
        return any(folder == root or root in folder.parents for root in self.roots)

    def check_allowed(self, folder: str | os.PathLike) -> Path:
        """The resolved folder (symlinks followed), or ProjectError when it is outside every root or is a root
        itself (a project there would hold every other project of that root)."""
        resolved = Path(folder).expanduser().resolve()
        if resolved in self.roots:
            raise ProjectError(f"{resolved} is the folder projects are kept in; choose a folder inside it")
        if not self.is_allowed(resolved):
            roots = ", ".join(str(root) for root in self.roots)
            raise ProjectError(f"{resolved} is outside the folders this editor may use ({roots}); choose a "
                               f"folder under one of them, or restart app.py with --project-root "
                               f"{resolved.parent} to allow that place")
        return resolved

    def start(self, requested: str | os.PathLike | None = None) -> tuple[Path, StartupProblem | None]:
        """Open the project to show first (see `startup_folder`) and make its folder a root.

        A damaged project does not stop the app: the demo opens instead, and the problem is returned
        (with whether `project.json.bak` can replace it) for the page to show.
        """
        folder = self.add_root(self.startup_folder(requested))
        try:
            self.open(folder)
            return folder, None
        except ProjectError as error:
            try:
                Project.load(folder, from_backup=True)
                backup_error = None
            except ProjectError as backup:
                backup_error = str(backup)
            problem = StartupProblem(folder, str(error), backup_error)
        demo = self.install_demo()
        self.open(demo)
        # The damaged project stays the last one, so the next start offers its backup again.
        self.state.update(last_project=str(folder))
        return demo, problem

    def restore_backup(self, folder: str | os.PathLike) -> Project:
        """Replace a damaged project.json by its backup (dreamrunner.project.restore_backup) and open it."""
        folder = self.check_allowed(folder)
        with self._lock(folder):
            self._projects.pop(folder, None)
            self._histories.pop(folder, None)
            restore_backup(folder)
        return self.open(folder)

    # -- which project -------------------------------------------------------------------------------

    def startup_folder(self, requested: str | os.PathLike | None = None) -> Path:
        """The project to show first: the requested folder, else the last one opened, else a copy of the demo."""
        if requested is not None:
            folder = Path(requested).expanduser().resolve()
            if not (folder / PROJECT_FILE).is_file():
                self.create(folder, Story(title=folder.name))
            return folder
        last = self.state.last_project
        if last is not None and (last / PROJECT_FILE).is_file():
            return last
        return self.install_demo()

    def install_demo(self, name: str = "demo") -> Path:
        """Copy the demo story from dreamrunner/assets/ into the projects folder (the repository copy stays untouched)."""
        folder = self.projects_dir / name
        if not (folder / PROJECT_FILE).is_file():
            if not (self.demo / PROJECT_FILE).is_file():
                raise ProjectError(f"the demo project is missing: {self.demo / PROJECT_FILE} not found")
            shutil.copytree(self.demo, folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        return folder.resolve()

    def known_projects(self) -> list[str]:
        found = []
        if self.projects_dir.is_dir():
            found = [str(p.parent.resolve()) for p in sorted(self.projects_dir.glob(f"*/{PROJECT_FILE}"))]
        last = self.state.last_project
        if last is not None and str(last) not in found and (last / PROJECT_FILE).is_file():
            found.insert(0, str(last))
        return found

    def resolve_folder(self, text: str) -> Path:
        """A folder typed by the user: absolute, or a name under the projects folder; inside the roots."""
        text = (text or "").strip()
        if not text:
            raise ProjectError("type a project folder (a path, or a name under " f"{self.projects_dir})")
        path = Path(text).expanduser()
        return self.check_allowed(path if path.is_absolute() else self.projects_dir / path)

    # -- loading and saving --------------------------------------------------------------------------

    def _lock(self, folder: Path) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(folder, threading.RLock())

    def open(self, folder: str | os.PathLike) -> Project:
        """The project held for this folder, with what other writers saved since it was read taken in."""
        folder = Path(folder).resolve()
        with self._lock(folder):
            project = self._projects.get(folder)
            if project is None:
                project = Project.load(folder)
                self._projects[folder] = project
            else:
                try:
                    project.refresh()
                    self.conflicts.pop(folder, None)
                except ProjectConflict as conflict:
                    # Unsaved changes here clash with another writer's save: keep showing (and keeping) them;
                    # the page says so, and Save, Revert to saved or Save a copy resolve it.
                    self.conflicts[folder] = str(conflict)
        if self.state.last_project != folder:
            self.state.update(last_project=str(folder))
        return project

    def reload(self, folder: str | os.PathLike) -> Project:
        """Read the folder again from disk, dropping unsaved edits."""
        folder = Path(folder).resolve()
        with self._lock(folder):
            self._projects.pop(folder, None)
            return self.open(folder)

    def create(self, folder: str | os.PathLike, story: Story, overwrite: bool = False) -> Project:
        folder = Path(folder).resolve()
        with self._lock(folder):
            project = Project.create(folder, story, overwrite=overwrite)
            self._projects[folder] = project
            self._histories.pop(folder, None)
        self.state.update(last_project=str(folder))
        return project

    def copy_to(self, source: str | os.PathLike, target: str | os.PathLike) -> Project:
        """Save a copy of a project (its story as edited now, and its media) in a new folder, and open it."""
        source, target = Path(source).resolve(), Path(target).resolve()
        if (target / PROJECT_FILE).exists():
            raise ProjectError(f"{target} already holds a project; choose another folder")
        if target == source or source in target.parents:
            raise ProjectError(f"{target} is inside the project being copied; choose a folder outside it")
        project = self.open(source)
        with self._lock(source):
            if project.media.is_dir():
                shutil.copytree(project.media, target / "media", dirs_exist_ok=True)
            story = project.story.model_copy(deep=True)
        return self.create(target, story)

    def is_dirty(self, folder: str | os.PathLike) -> bool:
        """Whether the story has changes not saved yet (autosave off)."""
        project = self._projects.get(Path(folder).resolve())
        return project is not None and project.story != project.base

    def save(self, folder: str | os.PathLike) -> Project:
        folder = Path(folder).resolve()
        with self._lock(folder):
            project = self.open(folder)
            try:
                project.save()
            except OSError as error:
                raise ProjectError(f"could not save {project.path}: {error}") from None
            return project

    def set_autosave(self, enabled: bool) -> None:
        self.state.update(autosave=bool(enabled))

    @contextmanager
    def edit(self, folder: str | os.PathLike, record: bool = True, join: str | None = None) -> Iterator[Project]:
        """Change a project's story (through `dreamrunner.edits`); on any error the story is put back as it was.

        A save over another writer's newer revision merges both, or raises ProjectConflict (naming what both
        changed) with this edit rolled back. A change is recorded as an undo step named by what it changed
        (`describe_change`), unless `record` is False (undo and redo themselves); an edit with the `join` key of
        the last step extends that step (`join`: e.g. one job's commits, which undo takes back as one)."""
        folder = Path(folder).resolve()
        with self._lock(folder):
            project = self.open(folder)
            with project.edit(save=self.state.autosave):
                before = project.story.model_dump(mode="json")
                yield project
                # This edit's own change, taken before a save merges in what another writer saved.
                after = project.story.model_dump(mode="json")
            if record and after != before:
                history = self.history(folder)
                last = history.undo[-1] if history.undo else None
                if join is not None and last is not None and last.join == join:
                    history.undo[-1] = Step(describe_change(last.before, after), last.before, after, join)
                else:
                    history.undo.append(Step(describe_change(before, after), before, after, join))
                history.redo.clear()

    # -- undo and redo -------------------------------------------------------------------------------

    def history(self, folder: str | os.PathLike) -> History:
        folder = Path(folder).resolve()
        with self._guard:
            return self._histories.setdefault(folder, History())

    def undo(self, folder: str | os.PathLike) -> Step:
        """Take back the last edit (see the module notes); returns it. UndoError when there is none or it
        cannot be taken back; the story is then unchanged."""
        return self._replay(folder, undo=True)

    def redo(self, folder: str | os.PathLike) -> Step:
        """Make the last undone edit again; returns it. UndoError as for `undo`."""
        return self._replay(folder, undo=False)

    def _replay(self, folder: str | os.PathLike, undo: bool) -> Step:
        folder = Path(folder).resolve()
        word = "undo" if undo else "redo"
        with self._lock(folder):
            history = self.history(folder)
            source, target = (history.undo, history.redo) if undo else (history.redo, history.undo)
            if not source:
                raise UndoError(f"there is nothing to {word} in {folder.name}")
            step = source[-1]
            start, goal = (step.after, step.before) if undo else (step.before, step.after)
            with self.edit(folder, record=False) as project:
                merged, conflicts = merge_values(start, project.story.model_dump(mode="json"), goal)
                try:
                    story = validate_story(merged) if not conflicts else None
                except StoryValidationError as error:
                    conflicts = [str(error)]
                if conflicts:
                    shown = ", ".join(conflicts[:4]) + (" ..." if len(conflicts) > 4 else "")
                    raise UndoError(f"cannot {word} {step.label}: it was changed again since ({shown}); "
                                    f"change it by hand instead")
                project.story = story
            source.pop()
            target.append(step)
            return step
