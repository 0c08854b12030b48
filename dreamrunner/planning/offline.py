"""The built-in (offline) planner: topic-aware story and scene plans with no LLM and no network.

It is the default when no LLM is configured. Story level: the topic is read against a curated vocabulary
(`vocabulary.py`, data in `dreamrunner/assets/planning/vocabulary.json`) with the all-MiniLM-L6-v2 sentence
embeddings the project installs, plus literal words: its setting (places, backgrounds, objects), the weather
and time of day it names, the story arc its verbs call for ("weather a storm": calm, clouds gather, the storm
arrives, struggle, shelter, aftermath), and the motions its verbs name. Each character's description says
what kind of entity it is (a dog, a bird, a robot, a person, a fish, a car ...), and each beat's motions are
drawn from what that kind can do. Scene level: the setting's background with objects, weather and time of
day; characters stand in lanes across the frame, sized by pose and kind, and their boxes follow their
motion's movement pattern over the 6 keyframes (travel sideways, rise when flying, bounce when jumping, sway
in place, converge when hugging). Overlapping characters get one unified caption, as the paper asks of its
LLM. The same inputs and seed always give the same plan; another seed gives another variant (scene count,
motions, places, objects, time of day, staging).
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..story import NUM_KEYFRAMES, Character, Entity, KeyFrame, Scene, Story
from .base import MAX_SCENES, MIN_SCENES, Planner, PlanningError, check_num_scenes, scene_to_plan, short_title
from .parsing import bind_characters
from .schema import SceneOutline, StoryOutline
from .vocabulary import Beat, Matcher, Reading, Setting, default_matcher, stems_of, vocabulary


@dataclass(frozen=True)
class MotionSpec:
    """A motion and how its entity's box moves: travel (sideways), fly (sideways and up), jump (bounce),
    climb (up), gesture (sways in place), together (moves toward the others), still, lie (lying down)."""

    phrase: str
    kind: str

    @property
    def moves(self) -> bool:
        return self.kind not in ("still", "lie")


MOTIONS: dict[str, MotionSpec] = {p: MotionSpec(p, kind) for p, kind in vocabulary().motions.items()}
#: Every motion the offline planner uses; retrieval uses them as catalog queries too.
MOTION_VOCABULARY: tuple[str, ...] = tuple(MOTIONS)


GROUND = 0.92  # where feet stand (normalized y of a standing entity's bottom edge)
ROW = 6  # characters side by side; more stand in rows farther back (higher in the frame, smaller)
# (size scale, ground line) stagings a seed picks from: middle distance, farther back, nearer the camera.
_STAGING = ((1.0, GROUND), (0.85, 0.86), (1.1, 0.97))


def _digest(*parts: object) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def motions_in(text: str) -> list[str]:
    """Vocabulary motions a free text mentions, in order of appearance, by word stems: a motion's verb and
    its other content words ("a dog runs" -> ["running"]; "plays the guitar" -> ["playing guitar"])."""
    stems = stems_of(text)
    found: list[tuple[int, str]] = []
    for phrase in MOTIONS:
        verb, *rest = [s for w, s in zip(phrase.replace("-", " ").split(), stems_of(phrase))
                       if w not in ("a", "its", "around", "down")]
        if verb in stems and all(s in stems for s in rest):
            found.append((stems.index(verb), phrase))
    return list(dict.fromkeys(phrase for _, phrase in sorted(found)))


def motion_spec(motion: str) -> MotionSpec:
    """A motion text (maybe a user's own words) -> how it moves: exact vocabulary phrase, else the first
    vocabulary motion it names ("soaring through the air" moves like soaring), else an in-place gesture."""
    text = motion.strip().casefold()
    if text in MOTIONS:
        return MOTIONS[text]
    named = motions_in(text)
    return MotionSpec(motion, MOTIONS[named[0]].kind if named else "gesture")


# The longest topic an opening narration repeats, in words and in characters, a wide (CJK) one counting as 4
# (a language written without spaces has one "word"): about what one scene's clip (about 6 s) can say.
OPENING_WORDS, OPENING_CHARACTERS = 20, 140
# A sentence's own end, also inside a closing quote or bracket ('She said "let us fly."'), and CJK's.
_ENDS, _CLOSERS = ".!?…。！？", "\"')]}»”’」』）"
# Where a sentence may end: a Latin mark (and closers) before a space and a word that does not go on in lower
# case ('She shouted "Run!" at the fox' does), or a CJK mark not inside a quote.
_SENTENCE_END = re.compile(r"[.!?…][\"')\]}»”’」』）]*(?=\s+(?![a-z]))|[。！？](?![\"')\]}»”’」』）])")
# A word that ends in a period without ending a sentence: a title ("Dr. Owl"), one with a period inside ("U.S.A.",
# "e.g.") or a number ("1." of a list).
_ABBREVIATION = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|Prof|St|Mt|Jr|Sr|Capt|Lt|Col|Gen|Sgt|Rev|Fr|vs|etc|"
                           r"\w+(?:\.\w+)+|\d+)\.$")


def _spoken_length(text: str) -> int:
    return sum(4 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _first_sentence(text: str) -> str:
    """The topic's first sentence: up to the first sentence end that is not an abbreviation's period."""
    for end in _SENTENCE_END.finditer(text):
        sentence = text[:end.end()]
        if not _ABBREVIATION.search(sentence):
            return sentence
    return text


def _opening(topic: str) -> str | None:
    """What the first scene's narration says of the topic, as a sentence: the whole topic when short, else its
    first sentence when that is short; None for a long topic (a paragraph read aloud over one clip) or one
    with no letter or digit ("???")."""
    topic = " ".join(topic.split())
    for text in (topic, _first_sentence(topic)):
        text = text.strip().rstrip(",;:-–— ")
        if (not any(c.isalnum() for c in text) or len(text.split()) > OPENING_WORDS
                or _spoken_length(text) > OPENING_CHARACTERS):
            continue
        capital = text[0].upper()
        text = (capital if len(capital) == 1 else text[0]) + text[1:]  # "ß".upper() is "SS"
        last = text.rstrip(_CLOSERS)[-1:]
        if last in tuple(_ENDS):
            return text
        # Chinese and Japanese end a sentence with their own full stop (Korean with ".")
        return text + ("。" if unicodedata.name(last or " ", "").startswith(("CJK", "HIRAGANA", "KATAKANA")) else ".")
    return None


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def subject_phrase(character: Character) -> str:
    """"a young witch" -> "a [v1] young witch"; no description -> "[v1] Mira"."""
    description = character.description.strip().rstrip(".")
    if not description:
        return f"{character.token} {character.name}"
    match = re.match(r"(?i)(a|an|the)\s+", description)
    if match:
        return f"{match.group(1).lower()} {character.token} {description[match.end():]}"
    return f"{character.token} {description}"


class OfflinePlanner(Planner):
    """The built-in planner. `seed` picks the variant; `matcher` reads topics against the vocabulary (default:
    the shared MiniLM matcher, loaded on first use)."""

    name = "offline"

    def __init__(self, seed: int = 0, matcher: Matcher | None = None):
        self.seed = seed
        self._matcher = matcher

    @property
    def matcher(self) -> Matcher:
        if self._matcher is None:
            self._matcher = default_matcher()
        return self._matcher

    def _read(self, topic: str, characters: Sequence[Character]) -> Reading:
        return self.matcher.read(topic, tuple(c.description for c in characters if c.description.strip()))

    def kind_of(self, character: Character) -> str:
        """The entity kind ("dog", "bird", "robot", "person", ...) of a character, from its description, else
        its name."""
        return self.matcher.entity_kind(character.description.strip() or character.name)

    # ------------------------------------------------------------ story level

    def plan_outline(self, topic: str, characters: Sequence[Character], num_scenes: int | None = None) -> StoryOutline:
        check_num_scenes(num_scenes)
        topic = " ".join(topic.split())
        if not topic:
            raise PlanningError("the topic is empty")
        if not characters:
            raise PlanningError("the offline planner needs at least one character")
        vocab = self.matcher.vocabulary
        reading = self._read(topic, characters)
        setting, arc = reading.setting, reading.arc
        rng = random.Random(_digest(topic, self.seed))
        count = num_scenes or MIN_SCENES + rng.randrange(MAX_SCENES - MIN_SCENES + 1)
        story_time = reading.time or rng.choice(setting.times)
        story_weather = reading.weather or setting.weather
        # The weather an arc is about ("weather a storm"): the topic's, else a storm for the storm arc.
        arc_weather = reading.weather or ("storm" if arc.id == "weather" else story_weather)
        names = [c.name for c in characters]
        one = len(names) == 1
        kinds = [self.kind_of(c) for c in characters]
        opening = _opening(topic)
        picks = [0] if count == 1 else [round(i * (len(arc.beats) - 1) / (count - 1)) for i in range(count)]
        scenes = []
        for beat_index in picks:
            beat = arc.beats[beat_index]
            weather = {None: story_weather, "topic": arc_weather}.get(beat.weather, beat.weather)
            time = reading.time or beat.time or story_time
            fill = {"names": _join(names), "first": names[0], "place": rng.choice(setting.places),
                    "weather": vocab.weather[arc_weather].word if arc_weather else "storm",
                    "Topic": opening,
                    "s": "s" if one else "", "es": "es" if one else "", "ies": "ies" if one else "y"}
            conditions = [vocab.times[time].scene] + ([vocab.weather[weather].scene] if _shown(weather, time) else [])
            conditions_text = ", ".join(conditions)
            chosen = self._motions(beat, kinds, reading, rng)
            actions = " ".join(f"{name} is {motion}." for name, motion in zip(names, chosen))
            scenes.append(SceneOutline(
                scene=f"{beat.scene.format(**fill)} {conditions_text[0].upper()}{conditions_text[1:]}. {actions}",
                motions=list(dict.fromkeys(chosen)),
                narration=(beat.narration if opening else beat.narration.removeprefix("{Topic} ")).format(**fill),
            ))
        return StoryOutline(title=short_title(topic[0].upper() + topic[1:].rstrip(".")), scenes=scenes)

    def _motions(self, beat: Beat, kinds: Sequence[str], reading: Reading, rng: random.Random) -> list[str]:
        """Each character's motion in a beat: what its role asks for that the character's kind can do."""
        vocab = self.matcher.vocabulary
        chosen = []
        for kind_id in kinds:
            kind = vocab.entity_kinds[kind_id]
            allowed = set(kind.motions)
            if beat.role == "topic":
                named = [m for m in reading.motions if m in allowed]
                pool = named or [m for m in reading.setting.activities if m in allowed]
            elif beat.role in ("arrive", "travel"):
                # The topic's way of moving first ("a cat explores"), then the kind's own.
                moving = [m for m in reading.motions if MOTIONS[m].kind in ("travel", "fly") and m in allowed]
                pool = moving or [m for m in (*kind.travel, *vocab.roles[beat.role]) if m in allowed]
            else:
                role = vocab.roles[beat.role]
                if beat.role in ("work", "look", "challenge"):
                    # What one does in this setting comes first where the role allows it (building, in the snow).
                    role = (*(a for a in reading.setting.activities if a in role), *role)
                pool = [m for m in role if m in allowed]
            pool = list(dict.fromkeys(pool)) or list(kind.travel)
            chosen.append(pool[rng.randrange(min(len(pool), 3))])
        together = [m for m in chosen if MOTIONS[m].kind == "together"]
        if together:
            # A hug takes two: everyone who can shares the first one; alone, a character waves instead.
            shared = together[0] if len(together) > 1 else None
            for j, kind_id in enumerate(kinds):
                if MOTIONS[chosen[j]].kind == "together" or (shared and shared in vocab.entity_kinds[kind_id].motions):
                    fallback = "waving" if "waving" in vocab.entity_kinds[kind_id].motions else "looking around"
                    chosen[j] = shared or fallback
        return chosen

    # ------------------------------------------------------------ scene level

    def plan_scene(self, story: Story, scene_id: str) -> Scene:
        scene = scene_to_plan(story, scene_id)
        position = [s.id for s in story.scenes].index(scene_id)
        text = f"{scene.description} {scene.narration}"
        reading = self._read(story.topic or text, story.characters)
        setting, word = self.matcher.scene_setting(text, reading.setting)
        if setting is reading.setting and reading.setting_word:
            word = reading.setting_word  # the topic's word for the place ("summit") over a scene's ("mountain")
        cast = self._cast(scene, story.characters)
        # The seed varies the staging: who stands where, how near the camera, which way travellers go.
        rng = random.Random(_digest(scene.id, scene.description, self.seed))
        shift = rng.randrange(len(cast)) if self.seed else 0
        cast = cast[shift:] + cast[:shift]
        direction = 1 if (position + self.seed) % 2 == 0 else -1
        scale, ground = rng.choice(_STAGING) if self.seed else _STAGING[0]
        frames: list[list[Entity]] = [[] for _ in range(NUM_KEYFRAMES)]
        kinds = self.matcher.vocabulary.entity_kinds
        for lane, (who, spec) in enumerate(cast):
            if isinstance(who, Character):
                name, character_id, caption = who.name, who.id, f"{subject_phrase(who)} {spec.phrase}"
                kind = kinds[self.kind_of(who)]
            else:
                name, character_id, caption = who[0], None, f"{who[1]} {spec.phrase}"
                kind = kinds[self.matcher.entity_kind(who[1])]
            boxes = self._track(spec, lane, len(cast), direction, scale, ground, kind.size)
            caption = f"{caption[0].upper()}{caption[1:]} {setting.located}"
            for k, box in enumerate(boxes):
                frames[k].append(Entity(name=name, character_id=character_id, motion=spec.phrase,
                                        description=caption, box=box))
        keyframes = [KeyFrame(index=k, entities=_unify_overlaps(entities, setting.located))
                     for k, entities in enumerate(frames)]
        planned = scene.model_copy(update={"background": self._background(scene, setting, word, reading, rng),
                                           "keyframes": keyframes, "user_edited": []})
        return bind_characters(Scene.model_validate(planned.model_dump()), story.characters)

    def _background(self, scene: Scene, setting: Setting, word: str | None, reading: Reading,
                    rng: random.Random) -> str:
        """The setting's background with objects (the topic's first), weather and time of day; the scene's
        own words for weather and time win over the topic's, which win over the setting's usual ones.
        `word`: how the scene or topic names the setting ("lighthouse"); the background says it too."""
        vocab, matcher = self.matcher.vocabulary, self.matcher
        base = rng.choice(setting.backgrounds)
        named = list(reading.objects)
        if word and word not in base:
            named.insert(0, word)
        extra = [o for o in rng.sample(setting.objects, 2)
                 if not any(w in o for w in named) and o.split(" ", 1)[-1] not in base]
        named = [f"a {w}" for w in named]
        objects = list(dict.fromkeys(named + extra))[:3]
        weather = (matcher.condition(scene.description, vocab.weather) or matcher.condition(scene.narration, vocab.weather)
                   or reading.weather or setting.weather)
        time = (matcher.condition(scene.description, vocab.times) or matcher.condition(scene.narration, vocab.times)
                or reading.time or setting.times[0])
        parts = [base, f"with {_join(objects)}"] if objects else [base]
        if _shown(weather, time):
            condition = vocab.weather[weather]
            parts.append(condition.phrase if setting.weather else f"with {condition.word} outside the window")
        parts.append(vocab.times[time].phrase)
        return ", ".join(parts)

    def _cast(self, scene: Scene, characters: Sequence[Character]) -> list[tuple[Character | tuple[str, str], MotionSpec]]:
        """Who is in the scene (characters named in it, else all) and the motion each performs."""
        text = f"{scene.description} {scene.narration}".casefold()
        present = [c for c in characters if c.name.casefold() in text or c.token in text] or list(characters)
        motions = scene.motions or motions_in(text) or ["standing"]
        if not present:
            # A scene without characters (single-prompt mode): its subject is the prompt's words before the motion.
            return [(_subject_from(scene.description or scene.narration, motions[0]), motion_spec(motions[0]))]
        cast = []
        for j, character in enumerate(present):
            said = [m for m in motions if f"{character.name} is {m}".casefold() in text]
            cast.append((character, motion_spec(said[0] if said else motions[j % len(motions)])))
        return cast

    def _track(self, spec: MotionSpec, lane: int, lanes: int, direction: int, scale: float = 1.0,
               ground: float = GROUND, size: tuple[float, float] = (1.0, 1.0)) -> list[tuple[float, float, float, float]]:
        """The box of one entity on each keyframe, inside the frame for any number of lanes; `size` scales
        its width and height for its kind (a dog is lower than a person, a car wider)."""
        rows = -(-lanes // ROW)
        row, lane = divmod(lane, ROW)
        lanes = min(ROW, lanes - row * ROW)
        if row:
            # Rows behind the first stand higher up the frame and smaller, as farther from the camera.
            ground -= 0.4 * row / (rows - 1)
            scale *= max(0.8 ** row, 0.35)
        width = min({1: 0.26, 2: 0.22}.get(lanes, 0.18), 0.95 / lanes) * scale
        height = {1: 0.62, 2: 0.58}.get(lanes, 0.52) * scale
        width, height = min(width * size[0], 0.9 / lanes), min(height * size[1], 0.8)
        center = (lane + 0.5) / lanes
        # How far travellers go: all the same distance, so a group moves together and stays in its lane.
        reach = max(0.5 / lanes - width / 2 - 0.01, 0.0)
        t = [k / (NUM_KEYFRAMES - 1) for k in range(NUM_KEYFRAMES)]
        xs = [center] * NUM_KEYFRAMES
        bottoms = [ground] * NUM_KEYFRAMES
        if spec.kind == "still" and spec.phrase in ("sitting", "meditating", "reading a book"):
            height *= 0.75
        if spec.kind == "lie":
            width, height = min(0.9 / lanes, 0.36) * scale, 0.22 * scale
        if spec.kind in ("travel", "fly"):
            xs = [center + direction * reach * (2 * s - 1) for s in t]
        if spec.kind == "fly":
            width, height = width * 0.9, height * 0.6
            bottoms = [ground - 0.22 - 0.3 * s for s in t]
        if spec.kind == "jump":
            bottoms = [ground - h for h in (0.0, 0.16, 0.24, 0.16, 0.0, 0.12)]
        if spec.kind == "climb":
            bottoms = [ground - 0.3 * s for s in t]
        if spec.kind == "gesture":
            xs = [center + d for d in (0.0, 0.015, 0.0, -0.015, 0.0, 0.015)]
        if spec.kind == "together" and lanes > 1:
            # Everyone converges on the middle and steps a little toward the camera.
            meet = 0.5 + (lane - (lanes - 1) / 2) * width * 0.7
            xs = [center + (meet - center) * s for s in t]
            bottoms = [ground - 0.04 * (1 - s) for s in t]
        boxes = []
        for x, bottom in zip(xs, bottoms):
            bottom = min(max(bottom, height), 1.0)  # a flyer in a back row keeps its size at the top edge
            top = max(bottom - height, 0.0)
            x0, x1 = max(x - width / 2, 0.0), min(x + width / 2, 1.0)
            boxes.append(tuple(round(v, 4) for v in (x0, top, x1, bottom)))
        return boxes


def _shown(weather: str | None, time: str) -> bool:
    """Whether a scene's weather is said: not indoors (None), and fair weather goes unsaid at night."""
    return weather is not None and not (weather == "clear" and time == "night")


def _subject_from(text: str, motion: str) -> tuple[str, str]:
    """(name, phrase) of what performs `motion` in a prompt: "A dog runs on the beach" -> ("dog", "a dog")."""
    verb = stems_of(motion)[:1]
    words = text.split()
    for i, word in enumerate(words):
        if verb and stems_of(word) == verb and i:
            phrase = [w.strip(".,!?") for w in words[max(i - 4, 0):i] if w.casefold() not in ("is", "are")]
            name = [w for w in phrase if w.casefold() not in ("a", "an", "the")]
            if name:
                return " ".join(name[-2:]), " ".join(phrase)
    return "subject", "the subject"


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _unify_overlaps(entities: list[Entity], located: str) -> list[Entity]:
    """Overlapping entities share one unified caption (the paper's rule), so their regions do not fight."""
    groups: list[list[int]] = []
    for i in range(len(entities)):
        joined = [g for g in groups if any(_overlap(entities[i].box, entities[j].box) > 0.1 for j in g)]
        merged = [i] + [j for g in joined for j in g]
        groups = [g for g in groups if g not in joined] + [sorted(merged)]
    result = list(entities)
    for group in groups:
        if len(group) < 2:
            continue
        parts = [entities[i].description.removesuffix(f" {located}") for i in group]
        motions = {entities[i].motion for i in group}
        if len(motions) == 1:
            # "A [v1] witch hugging" + "A [v2] cat hugging" -> "A [v1] witch and a [v2] cat hugging"
            motion = motions.pop() or ""
            parts = [p.removesuffix(f" {motion}") for p in parts]
            suffix = f" {motion} {located}" if motion else f" {located}"
        else:
            suffix = f" {located}"
        caption = _join([parts[0]] + [p[0].lower() + p[1:] for p in parts[1:]]) + suffix
        for i in group:
            result[i] = entities[i].model_copy(update={"description": caption})
    return result
