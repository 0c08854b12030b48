"""The offline planner: deterministic story and scene plans from templates, with no network and no weights.

It is the default when no LLM is configured, so the whole app works out of the box. Story level: the
topic picks a setting (keywords -> place, background, typical motions) and a story arc of 5-8 beats
(arrival, discovery, journey, challenge, ...), each beat giving every character a motion from
`MOTION_VOCABULARY`. Scene level: characters stand in lanes across the frame, sized by pose, and their
boxes follow their motion's movement pattern over the 6 keyframes (travel sideways, rise when flying,
bounce when jumping, sway in place, converge when hugging). Overlapping characters get one unified
caption, as the paper asks of its LLM. The same inputs and seed always give the same plan; another seed
gives another variant (what a "re-plan" button wants).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..story import NUM_KEYFRAMES, Character, Entity, KeyFrame, Scene, Story
from .base import MAX_SCENES, MIN_SCENES, Planner, PlanningError, check_num_scenes, scene_to_plan, short_title
from .parsing import bind_characters
from .schema import SceneOutline, StoryOutline


@dataclass(frozen=True)
class MotionSpec:
    """A motion and how its entity's box moves: travel (sideways), fly (sideways and up), jump (bounce),
    climb (up), gesture (sways in place), together (moves toward the others), still, lie (lying down)."""

    phrase: str
    kind: str

    @property
    def moves(self) -> bool:
        return self.kind not in ("still", "lie")


_KINDS = {
    "travel": ["walking", "running", "riding a bicycle", "skateboarding", "swimming", "driving a car", "skiing",
               "crawling", "chasing", "rowing a boat", "riding a horse", "marching"],
    "fly": ["flying", "floating", "gliding"],
    "jump": ["jumping", "hopping"],
    "climb": ["climbing"],
    "gesture": ["waving", "dancing", "clapping", "pointing", "juggling", "playing guitar", "cooking", "painting",
                "stirring a pot", "throwing a ball", "kicking a ball", "stretching", "bowing", "turning around",
                "looking around", "talking", "laughing", "singing", "writing", "eating", "digging", "fishing"],
    "together": ["hugging", "shaking hands", "high-fiving"],
    "still": ["standing", "sitting", "reading a book", "meditating"],
    "lie": ["sleeping", "lying down"],
}
MOTIONS: dict[str, MotionSpec] = {p: MotionSpec(p, kind) for kind, phrases in _KINDS.items() for p in phrases}
#: Every motion the offline planner uses; retrieval uses them as catalog queries too.
MOTION_VOCABULARY: tuple[str, ...] = tuple(MOTIONS)


@dataclass(frozen=True)
class Setting:
    keywords: tuple[str, ...]
    place: str  # "a quiet forest clearing"
    background: str  # the background prompt
    travel: str  # the typical way of getting around here
    activity: str  # the typical thing to do here
    preposition: str = "in"  # "in a forest", "on a beach"

    @property
    def located(self) -> str:
        return f"{self.preposition} {self.place}"


SETTINGS: tuple[Setting, ...] = (
    Setting(("forest", "wood", "woods", "jungle", "tree", "trees", "elf", "fairy"), "a quiet forest clearing",
            "a sunlit forest clearing with tall pine trees and ferns", "walking", "climbing"),
    Setting(("beach", "sea", "ocean", "island", "surf", "pirate", "shell", "sand"), "a sandy beach",
            "a sandy beach with gentle waves under a bright blue sky", "running", "swimming", "on"),
    Setting(("city", "street", "town", "downtown", "traffic", "taxi", "bus"), "a busy city street",
            "a busy city street with shop fronts and a wide sidewalk", "walking", "skateboarding"),
    Setting(("kitchen", "cook", "cooking", "bake", "baking", "cake", "bakery", "chef", "soup", "pie"),
            "a cozy kitchen", "a cozy kitchen with wooden counters and copper pots", "walking", "cooking"),
    Setting(("space", "star", "stars", "moon", "planet", "rocket", "astronaut", "alien", "galaxy", "mars"),
            "the surface of the moon", "a grey lunar landscape under a black sky full of stars", "floating", "jumping", "on"),
    Setting(("castle", "king", "queen", "princess", "prince", "knight", "dragon", "kingdom", "royal"),
            "a castle courtyard", "a stone castle courtyard with banners and towers", "marching", "bowing"),
    Setting(("school", "class", "classroom", "teacher", "student", "lesson", "exam", "homework"), "a bright classroom",
            "a bright classroom with desks, a chalkboard and large windows", "walking", "writing"),
    Setting(("mountain", "mountains", "hike", "hiking", "peak", "snow", "ski", "winter", "ice"), "a snowy mountain slope",
            "a snowy mountain slope with pine trees under a pale sky", "skiing", "climbing", "on"),
    Setting(("farm", "barn", "cow", "horse", "tractor", "harvest", "chicken", "sheep"), "a farmyard",
            "a farmyard with a red barn, a wooden fence and hay bales", "riding a horse", "digging"),
    Setting(("garden", "flower", "flowers", "bee", "butterfly", "plant", "seed"), "a flower garden",
            "a blooming flower garden with a stone path", "walking", "digging"),
    Setting(("park", "playground", "picnic", "ball", "soccer", "football", "game"), "a green park",
            "a green park with trees, a pond and a winding path", "running", "kicking a ball"),
    Setting(("desert", "camel", "pyramid", "dune", "dunes", "oasis"), "golden desert dunes",
            "golden sand dunes under a hot cloudless sky", "walking", "climbing", "on"),
    Setting(("library", "book", "books", "reading", "story", "poem", "writer"), "an old library",
            "an old library with tall wooden bookshelves and warm lamps", "walking", "reading a book"),
    Setting(("river", "lake", "boat", "fish", "fishing", "pond", "canoe"), "a calm lakeshore",
            "a calm lake with a wooden dock and hills behind it", "rowing a boat", "fishing", "on"),
    Setting(("music", "concert", "band", "song", "sing", "dance", "stage", "guitar", "festival"), "a festival stage",
            "an outdoor festival stage with colorful lights", "dancing", "playing guitar", "on"),
    Setting(("robot", "lab", "science", "invention", "inventor", "machine", "experiment", "workshop"), "a cluttered workshop",
            "a cluttered workshop with workbenches, tools and glowing screens", "walking", "painting"),
    Setting(("sky", "bird", "birds", "witch", "broom", "cloud", "clouds", "kite", "balloon", "fly"), "the open sky",
            "a wide blue sky with soft white clouds above rolling hills", "flying", "gliding"),
    Setting(("home", "house", "room", "bedroom", "family", "birthday", "party", "sofa"),
            "a cozy living room", "a cozy living room with a sofa, a rug and a window", "walking", "playing guitar"),
)
DEFAULT_SETTING = Setting((), "a sunny meadow", "a sunny meadow with rolling green hills and wildflowers",
                          "walking", "jumping")


@dataclass(frozen=True)
class Beat:
    """One step of the story arc: what happens, the narration, and the motions characters draw from."""

    scene: str
    narration: str
    motions: tuple[str, ...]  # vocabulary phrases, or "{travel}" / "{activity}" from the setting


ARC: tuple[Beat, ...] = (
    Beat("{names} arrive{s} at {place}.", "{topic}. It begins as {names} arrive{s} at {place}.",
         ("{travel}",)),
    Beat("{names} look{s} around {place}.", "{names} look{s} around, taking in {place}.",
         ("looking around", "waving", "pointing")),
    Beat("{first} discovers something unexpected.", "Then {first} notices something that changes everything.",
         ("pointing", "jumping", "turning around")),
    Beat("{names} set{s} off across {place}.", "Determined, {names} set{s} off across {place}.",
         ("{travel}", "running", "{travel}")),
    Beat("{names} face{s} a challenge.", "The way grows hard, and {names} must push on.",
         ("{activity}", "climbing", "{activity}")),
    Beat("{names} find{s} new courage.", "{names} gather{s} all the courage there is and keep{s} going.",
         ("hugging", "shaking hands", "clapping")),
    Beat("{names} celebrate{s} the success.", "At last {names} succeed{s}, and joy fills {place}.",
         ("dancing", "jumping", "clapping")),
    Beat("{names} rest{s} as the day ends.", "As the day ends, {names} rest{s}, already dreaming of the next adventure.",
         ("sitting", "waving", "sleeping")),
)

GROUND = 0.92  # where feet stand (normalized y of a standing entity's bottom edge)
ROW = 6  # characters side by side; more stand in rows farther back (higher in the frame, smaller)
# (size scale, ground line) stagings a seed picks from: middle distance, farther back, nearer the camera.
_STAGING = ((1.0, GROUND), (0.85, 0.86), (1.1, 0.97))


def _digest(*parts: object) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.casefold()))


def setting_for(text: str) -> Setting:
    """The setting whose keywords the text mentions most (ties: the first listed)."""
    words = _words(text)
    best, hits = DEFAULT_SETTING, 0
    for setting in SETTINGS:
        count = len(words & set(setting.keywords))
        if count > hits:
            best, hits = setting, count
    return best


def motion_spec(motion: str) -> MotionSpec:
    """A motion text (maybe a user's own words) -> how it moves: exact vocabulary phrase, else the first
    vocabulary phrase whose verb it contains, else an in-place gesture."""
    text = motion.strip().casefold()
    if text in MOTIONS:
        return MOTIONS[text]
    words = _words(text)
    for spec in MOTIONS.values():
        verb = spec.phrase.split()[0]
        if verb in words or verb.removesuffix("ing") in words:
            return MotionSpec(motion, spec.kind)
    for stem, kind in (("fly", "fly"), ("walk", "travel"), ("run", "travel"), ("jump", "jump"), ("sleep", "lie"),
                       ("sit", "still"), ("swim", "travel"), ("climb", "climb"), ("hug", "together")):
        if stem in text:
            return MotionSpec(motion, kind)
    return MotionSpec(motion, "gesture")


def _stems(phrase: str) -> set[str]:
    """Word forms of a phrase's verb: "running" -> running, run, runs; "dancing" -> dance, dances."""
    verb = phrase.split()[0]
    if not verb.endswith("ing"):
        return {verb, verb + "s"}
    base = verb[:-3]
    forms = {verb, base, base + "s", base + "e", base + "es"}
    if base.endswith("y"):
        forms.add(base[:-1] + "ies")
    if len(base) > 2 and base[-1] == base[-2]:
        forms |= {base[:-1], base[:-1] + "s"}
    return forms


def motions_in(text: str) -> list[str]:
    """Vocabulary motions a free text mentions, in order of appearance ("a dog runs" -> ["running"])."""
    words = re.findall(r"[a-z]+", text.casefold())
    found: list[tuple[int, str]] = []
    for phrase in MOTIONS:
        forms = _stems(phrase)
        position = next((i for i, w in enumerate(words) if w in forms), None)
        if position is not None:
            found.append((position, phrase))
    return list(dict.fromkeys(phrase for _, phrase in sorted(found)))


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
    name = "offline"

    def __init__(self, seed: int = 0):
        self.seed = seed

    # ------------------------------------------------------------ story level

    def plan_outline(self, topic: str, characters: Sequence[Character], num_scenes: int | None = None) -> StoryOutline:
        check_num_scenes(num_scenes)
        topic = " ".join(topic.split())
        if not topic:
            raise PlanningError("the topic is empty")
        if not characters:
            raise PlanningError("the offline planner needs at least one character")
        count = num_scenes or MIN_SCENES + _digest(topic) % (MAX_SCENES - MIN_SCENES + 1)
        setting = setting_for(topic)
        names = [c.name for c in characters]
        fill = {"names": _join(names), "s": "s" if len(names) == 1 else "", "first": names[0],
                "place": setting.place, "topic": topic[0].upper() + topic[1:].rstrip(".")}
        if count == 1:
            picks = [0]
        else:
            picks = [round(i * (len(ARC) - 1) / (count - 1)) for i in range(count)]
        scenes = []
        for position, beat_index in enumerate(picks):
            beat = ARC[beat_index]
            chosen = []
            for j, character in enumerate(characters):
                motion = beat.motions[(j + self.seed + position) % len(beat.motions)]
                motion = motion.format(travel=setting.travel, activity=setting.activity)
                chosen.append((character.name, motion))
            together = [m for _, m in chosen if MOTIONS[m].kind == "together"]
            if together:
                # Hugging takes two: everyone in the scene shares it; alone, a character waves instead.
                shared = together[0] if len(characters) > 1 else "waving"
                chosen = [(name, shared) for name, _ in chosen]
            actions = " ".join(f"{name} is {motion}." for name, motion in chosen)
            scenes.append(SceneOutline(
                scene=f"{beat.scene.format(**fill)} {actions}",
                motions=list(dict.fromkeys(m for _, m in chosen)),
                narration=beat.narration.format(**fill),
            ))
        return StoryOutline(title=short_title(fill["topic"]), scenes=scenes)

    # ------------------------------------------------------------ scene level

    def plan_scene(self, story: Story, scene_id: str) -> Scene:
        scene = scene_to_plan(story, scene_id)
        position = [s.id for s in story.scenes].index(scene_id)
        text = f"{scene.description} {scene.narration}"
        setting = setting_for(f"{story.topic} {text}")
        cast = self._cast(scene, story.characters)
        # The seed varies the staging: who stands where, how near the camera, which way travellers go.
        rng = random.Random(_digest(scene.id, scene.description, self.seed))
        shift = rng.randrange(len(cast)) if self.seed else 0
        cast = cast[shift:] + cast[:shift]
        direction = 1 if (position + self.seed) % 2 == 0 else -1
        scale, ground = rng.choice(_STAGING) if self.seed else _STAGING[0]
        frames: list[list[Entity]] = [[] for _ in range(NUM_KEYFRAMES)]
        for lane, (who, spec) in enumerate(cast):
            boxes = self._track(spec, lane, len(cast), direction, scale, ground)
            if isinstance(who, Character):
                name, character_id, caption = who.name, who.id, f"{subject_phrase(who)} {spec.phrase}"
            else:
                name, character_id, caption = who[0], None, f"{who[1]} {spec.phrase}"
            caption = f"{caption[0].upper()}{caption[1:]} {setting.located}"
            for k, box in enumerate(boxes):
                frames[k].append(Entity(name=name, character_id=character_id, motion=spec.phrase,
                                        description=caption, box=box))
        keyframes = [KeyFrame(index=k, entities=_unify_overlaps(entities, setting.located))
                     for k, entities in enumerate(frames)]
        planned = scene.model_copy(update={"background": setting.background, "keyframes": keyframes,
                                           "user_edited": []})
        return bind_characters(Scene.model_validate(planned.model_dump()), story.characters)

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
               ground: float = GROUND) -> list[tuple[float, float, float, float]]:
        """The box of one entity on each keyframe, inside the frame for any number of lanes."""
        rows = -(-lanes // ROW)
        row, lane = divmod(lane, ROW)
        lanes = min(ROW, lanes - row * ROW)
        if row:
            # Rows behind the first stand higher up the frame and smaller, as farther from the camera.
            ground -= 0.4 * row / (rows - 1)
            scale *= max(0.8 ** row, 0.35)
        width = min({1: 0.26, 2: 0.22}.get(lanes, 0.18), 0.95 / lanes) * scale
        height = {1: 0.62, 2: 0.58}.get(lanes, 0.52) * scale
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


def _subject_from(text: str, motion: str) -> tuple[str, str]:
    """(name, phrase) of what performs `motion` in a prompt: "A dog runs on the beach" -> ("dog", "a dog")."""
    forms = _stems(motion)
    words = text.split()
    for i, word in enumerate(words):
        if re.sub(r"[^a-z]", "", word.casefold()) in forms and i:
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
