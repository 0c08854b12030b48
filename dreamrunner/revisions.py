"""Three-way merge of story revisions, for two writers of one project (the editor and the CLI, two processes).

A writer remembers the story as it loaded it (the base). When it saves over a newer revision, its changes
(base -> ours) and the other writer's (base -> theirs) are merged on the story's JSON form: a value only one
side changed takes that side's value; lists of things with an identity (scenes, characters, priors, clips,
renders, keyframes) merge item by item; `user_edited` and reference images merge as sets. Anything both sides
changed differently is a conflict, reported with where it is; nothing is overwritten silently.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()

# How the items of a list are told apart, by the list's field name.
IDENTITY = {
    "characters": ("id",), "scenes": ("id",), "priors": ("id",), "keyframes": ("index",),
    "approved_clips": ("motion", "id"), "prior_bindings": ("prior_id",), "renders": ("path",),
}
# Lists whose order carries no meaning: merged as sets.
SETS = {"user_edited", "reference_images"}


def merge_values(base: Any, ours: Any, theirs: Any) -> tuple[Any, list[str]]:
    """Merge two changed copies of `base` (JSON-like data). Returns (merged, conflicts); each conflict names
    the place both sides changed differently, e.g. ``scenes[s2].narration`` (ours is kept there)."""
    conflicts: list[str] = []
    merged = _merge(base, ours, theirs, (), conflicts)
    return merged, conflicts


def _merge(base: Any, ours: Any, theirs: Any, where: tuple[str, ...], conflicts: list[str]) -> Any:
    if ours == theirs:
        return ours
    if _same(ours, base):
        return theirs
    if _same(theirs, base):
        return ours
    if isinstance(ours, dict) and isinstance(theirs, dict):
        base = base if isinstance(base, dict) else {}
        merged = {}
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            value = _merge(base.get(key, _MISSING), ours.get(key, _MISSING), theirs.get(key, _MISSING),
                           (*where, str(key)), conflicts)
            if value is not _MISSING:
                merged[key] = value
        return merged
    if all(isinstance(v, list) for v in (base, ours, theirs)):
        name = where[-1] if where else ""
        if name in SETS and all(isinstance(item, str) for item in (*base, *ours, *theirs)):
            removed = (set(base) - set(ours)) | (set(base) - set(theirs))
            order = [*ours, *(item for item in theirs if item not in ours)]
            return [item for item in order if item not in removed]
        if name in IDENTITY:
            keyed = _merge_keyed(base, ours, theirs, IDENTITY[name], where, conflicts)
            if keyed is not None:
                return keyed
        if len(base) == len(ours) == len(theirs) and all(isinstance(v, dict) for v in (*base, *ours, *theirs)):
            # The same things in the same places (a keyframe's entities): merge them position by position. Lists
            # of plain values (a box, the motions) are one value each: both changing one is a conflict.
            return [_merge(b, o, t, (*where[:-1], f"{name}[{i + 1}]"), conflicts)
                    for i, (b, o, t) in enumerate(zip(base, ours, theirs))]
    conflicts.append(_describe(where))
    return ours


def _same(value: Any, base: Any) -> bool:
    return value is base if base is _MISSING or value is _MISSING else value == base


def _merge_keyed(base: list, ours: list, theirs: list, keys: tuple[str, ...], where: tuple[str, ...],
                 conflicts: list[str]) -> list | None:
    def index(items: list) -> dict | None:
        if not all(isinstance(item, dict) for item in items):
            return None
        found = {tuple(item.get(k) for k in keys): item for item in items}
        return found if len(found) == len(items) else None

    b, o, t = index(base), index(ours), index(theirs)
    if b is None or o is None or t is None:
        return None
    name = where[-1]
    merged = []
    for ident in [*o, *(i for i in t if i not in o)]:
        label = f"{name}[{'/'.join(str(part) for part in ident)}]"
        value = _merge(b.get(ident, _MISSING), o.get(ident, _MISSING), t.get(ident, _MISSING),
                       (*where[:-1], label), conflicts)
        if value is not _MISSING:
            merged.append(value)
    return merged


def _describe(where: tuple[str, ...]) -> str:
    return ".".join(where) or "the whole story"
