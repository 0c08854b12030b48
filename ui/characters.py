"""Characters and their reference images: validated, copied into the project's media folder."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from dreamrunner.errors import DreamRunnerError
from dreamrunner.media import DEFAULT_BACKGROUND, load_reference_image
from dreamrunner.project import Project
from dreamrunner.story import Character, Story

CHARACTER_COLUMNS = ["id", "name", "token", "description"]


class CharacterError(DreamRunnerError):
    pass


def character_rows(story: Story) -> list[list]:
    return [[c.id, c.name, c.token, c.description] for c in story.characters]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "character"


def add_character(story: Story, name: str, description: str = "") -> Character:
    name = (name or "").strip()
    if not name:
        raise CharacterError("give the new character a name")
    ids = {c.id for c in story.characters}
    tokens = {c.token for c in story.characters}
    base, number = _slug(name), 2
    character_id = base
    while character_id in ids:
        character_id, number = f"{base}_{number}", number + 1
    token_number = 1
    while f"[v{token_number}]" in tokens:
        token_number += 1
    character = Character(id=character_id, name=name, token=f"[v{token_number}]", description=description.strip())
    story.characters = [*story.characters, character]
    return character


def apply_character_rows(story: Story, rows: list[list]) -> list[str]:
    """Names, tokens and descriptions edited in the table (ids are fixed: entities and priors refer to them)."""
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    by_id = {c.id: c for c in story.characters}
    if sorted(str(r[0]).strip() for r in rows) != sorted(by_id):
        raise CharacterError("character ids cannot be changed or removed in the table; use 'Remove character'")
    changes = []
    for row in rows:
        character = by_id[str(row[0]).strip()]
        for field, value in zip(("name", "token", "description"), row[1:4]):
            value = str(value if value is not None else "").strip()
            if getattr(character, field) == value:
                continue
            try:
                setattr(character, field, value)
            except ValueError as error:
                message = error.errors()[0]["msg"] if hasattr(error, "errors") else str(error)
                raise CharacterError(f"character {character.id!r}, {field}: {message}") from None
            changes.append(f"{character.id}.{field}")
    tokens = [c.token for c in story.characters]
    if len(set(tokens)) != len(tokens):
        raise CharacterError("two characters share a token; each needs its own, e.g. [v1], [v2]")
    return changes


def remove_character(story: Story, character_id: str) -> None:
    used = [f"{s.id} keyframe {k.index + 1}" for s in story.scenes for k in s.keyframes
            if any(e.character_id == character_id for e in k.entities)]
    if used:
        raise CharacterError(f"character {character_id!r} is bound to entities ({', '.join(used[:4])}"
                             f"{', ...' if len(used) > 4 else ''}); unbind them in the storyboard first")
    if any(p.kind == "subject" and p.target == character_id for p in story.priors):
        raise CharacterError(f"character {character_id!r} has a trained subject prior; remove the prior first")
    story.characters = [c for c in story.characters if c.id != character_id]


def check_image(path: Path, background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """A reference image as the picture it shows, refusing what is not a usable picture of a character
    (the library's rules and loader, `dreamrunner.media.load_reference_image`, which the CLI uses too)."""
    return load_reference_image(path, background)


def add_reference_images(project: Project, character_id: str, paths: list[str | Path]) -> list[str]:
    """Validate every image first, then copy all of them as PNGs into media/characters/ (all or nothing)."""
    character = project.story.character(character_id)
    images = [check_image(Path(p), project.story.settings.reference_background) for p in paths]
    if not images:
        raise CharacterError("choose one or more image files to add")
    folder = project.media / "characters"
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    number = len(character.reference_images) + 1
    for image in images:
        while (target := folder / f"{character.id}_{number}.png").exists():
            number += 1
        image.save(target)
        added.append(project.relative(target))
    character.reference_images = [*character.reference_images, *added]
    return added
