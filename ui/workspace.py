"""The editor's projects on disk: which one was open last, and one guarded place where every edit goes.

The app keeps a small state file (`$DREAMRUNNER_HOME/state.json`, default `~/.dreamrunner`) naming the
last project and the autosave choice, so a restarted app reopens that project. Every change to a story
goes through `Workspace.edit` (which calls `dreamrunner.edits` inside `Project.edit`): it serialises edits to
one project, first takes in what other writers (a CLI command, another app) saved meanwhile, rolls a failed
edit back (a bad value never half-applies) and saves right away when autosave is on. Jobs (render, train)
hand their results to a `Workspace.edit` of the live story; none saves a copy of its own.

Folders chosen from the page (open, new, copy) must lie inside the workspace's roots: the projects
folder, the folders given with `app.py --project-root`, and the project opened at start. Anyone who can
reach the editor's port can call its handlers, so a page never names an arbitrary server folder.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dreamrunner.files import ASSETS_DIR, remove_stale_temporaries, write_text_atomic
from dreamrunner.project import PROJECT_FILE, Project, ProjectConflict, ProjectError, restore_backup
from dreamrunner.story import Story

HOME_ENV = "DREAMRUNNER_HOME"
STATE_FILE = "state.json"
DEMO_PROJECT = ASSETS_DIR / "demo"


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
    def edit(self, folder: str | os.PathLike) -> Iterator[Project]:
        """Change a project's story (through `dreamrunner.edits`); on any error the story is put back as it was.

        A save over another writer's newer revision merges both, or raises ProjectConflict (naming what both
        changed) with this edit rolled back."""
        folder = Path(folder).resolve()
        with self._lock(folder):
            project = self.open(folder)
            with project.edit(save=self.state.autosave):
                yield project
