"""Settings of this machine, not of any story: memory preset, quantization, compilation, model folders, Ray.

They live in `<home>/machine.json` (home: $DREAMRUNNER_HOME, else ~/.dreamrunner, the editor's home too),
because they describe the GPU and disk a render runs on: a project copied to a colleague's 80 GB machine
must not bring along the offloading a 24 GB card needed, nor a folder path that exists only here. The editor
writes the file (Render tab, "This machine"); the CLI reads it as the default of --memory, --quantize,
--compile and --model-path, and an option given on the command line wins for that command only. The Ray
setting is the editor's alone: a CLI command uses Ray only when given `--ray`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .backends.memory import COMPILE_DEFAULT
from .errors import DreamRunnerError
from .files import remove_stale_temporaries, write_text_atomic

HOME_ENV = "DREAMRUNNER_HOME"
MACHINE_FILE = "machine.json"


class MachineSettingsError(DreamRunnerError):
    """machine.json exists but does not hold valid settings."""


class MachineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory: Literal["auto", "none", "vae-tiling", "model", "group"] = "auto"
    quantize: Literal["none", "int8wo", "fp8wo"] = "none"
    compile: Literal["off", "gpu", "always"] = COMPILE_DEFAULT
    # backend name -> local diffusers folder or hub id (else $DREAMRUNNER_COGVIDEOX_2B / _5B, else the hub id)
    model_paths: dict[str, str] = {}
    # The editor's render and training jobs as tasks on Ray (dreamrunner.distributed, docs/scaling.md): off, a
    # local Ray over this machine's GPUs (the CLI's `--ray`), or the cluster at `ray_address` (`--ray ADDRESS`).
    ray: Literal["off", "local", "cluster"] = "off"
    ray_address: str = ""  # host:port or ray://host:10001; kept while Ray is off


def home() -> Path:
    """The app's folder of this user: $DREAMRUNNER_HOME, else ~/.dreamrunner."""
    return Path(os.environ.get(HOME_ENV) or "~/.dreamrunner").expanduser()


def settings_path() -> Path:
    return home() / MACHINE_FILE


def read_machine_settings(path: Path | None = None) -> MachineSettings:
    """The stored settings (defaults when the file does not exist). Raises MachineSettingsError naming the
    file and the field for a file that is not valid JSON or holds an unknown value."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return MachineSettings()
    except (OSError, UnicodeDecodeError) as error:
        raise MachineSettingsError(f"{path}: cannot be read ({error})") from None
    try:
        return MachineSettings.model_validate(json.loads(text))
    except ValidationError as error:
        raise MachineSettingsError(f"{path}: not valid machine settings ({_first_problem(error)}); fix or delete "
                                   f"the file (the defaults are then used)") from None
    except ValueError as error:
        raise MachineSettingsError(f"{path}: not valid machine settings (not JSON: {error}); fix or delete "
                                   f"the file (the defaults are then used)") from None


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "the settings"
    return f"{where}: {problem['msg']}, got {problem.get('input')!r}"


def write_machine_settings(settings: MachineSettings, path: Path | None = None) -> Path:
    """Store the settings atomically; returns the file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    write_text_atomic(path, settings.model_dump_json(indent=2) + "\n")
    return path


def update_machine_settings(path: Path | None = None, **values) -> MachineSettings:
    """Change some settings (validated) and store them; returns the new settings."""
    current = read_machine_settings(path)
    try:
        settings = MachineSettings.model_validate({**current.model_dump(), **values})
    except ValidationError as error:
        raise MachineSettingsError(_first_problem(error)) from None
    write_machine_settings(settings, path)
    return settings
