"""The Story tab's character table <-> dreamrunner.edits (which owns every change to characters)."""

from __future__ import annotations

from dreamrunner import edits
from dreamrunner.story import Story

CHARACTER_COLUMNS = ["id", "name", "token", "description"]


def character_rows(story: Story) -> list[list]:
    return [[c.id, c.name, c.token, c.description] for c in story.characters]


def apply_character_rows(story: Story, rows: list[list]) -> list[str]:
    """Names, tokens and descriptions edited in the table (ids are fixed: entities and priors refer to them)."""
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if sorted(str(r[0]).strip() for r in rows) != sorted(c.id for c in story.characters):
        raise edits.EditError("character ids cannot be changed or removed in the table; use 'Remove character'")
    changes = []
    for row in rows:
        fields = dict(zip(("name", "token", "description"), row[1:4]))
        character_id = str(row[0]).strip()
        changes += [f"{character_id}.{f}" for f in edits.edit_character(story, character_id, **fields)]
    return changes
