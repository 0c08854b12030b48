"""The Story tab's character table <-> dreamrunner.edits (which owns every change to characters)."""

from __future__ import annotations

from dreamrunner import edits
from dreamrunner.story import Story

from .board import page_change

CHARACTER_COLUMNS = ["id", "name", "token", "description"]


def character_rows(story: Story) -> list[list]:
    return [[c.id, c.name, c.token, c.description] for c in story.characters]


def apply_character_rows(story: Story, rows: list[list], shown: list[list] | None = None) -> list[str]:
    """Names, tokens and descriptions edited in the table (ids are fixed: entities and priors refer to them).

    With `shown` (the rows the table was given), only cells the user changed are applied, and a changed cell
    whose stored value is no longer the one shown is refused: another tab or program changed it meanwhile."""
    rows = [row for row in rows if any(str(cell).strip() for cell in row)]
    if sorted(str(r[0]).strip() for r in rows) != sorted(c.id for c in story.characters):
        raise edits.EditError("character ids cannot be changed or removed in the table; use 'Remove character'")
    before = {str(r[0]).strip(): r for r in shown or []}
    stored = {r[0]: r for r in character_rows(story)}
    changes = []
    for row in rows:
        character_id = str(row[0]).strip()
        fields = {}
        for column, field in enumerate(("name", "token", "description"), start=1):
            value = str(row[column] if row[column] is not None else "").strip()
            was = before[character_id][column] if character_id in before else None
            change = page_change(value, was, stored[character_id][column])
            if change == "unchanged":
                continue
            if change == "stale":
                raise edits.EditError(f"character {character_id!r}, {field}: changed elsewhere (another tab or "
                                      "program) since this page showed it; your change was not applied. The table "
                                      "now shows the current values.")
            fields[field] = value
        changes += [f"{character_id}.{f}" for f in edits.edit_character(story, character_id, **fields)]
    return changes
