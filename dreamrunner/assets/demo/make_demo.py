"""Writes the demo project the editor opens on a fresh machine: `dreamrunner/assets/demo/project.json` and small
drawn character images in `dreamrunner/assets/demo/media/characters/`.

    python dreamrunner/assets/demo/make_demo.py

The story is written out here as data (a dual-level plan: scenes with narration and motions, each with a
background and 6 keyframes of entity boxes), so the demo needs no planner, LLM or weights. The character
images are simple drawings made with Pillow: enough to exercise reference-image handling, and honest
about being drawings.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from dreamrunner.project import BACKUP_FILE, Project  # noqa: E402
from dreamrunner.story import Character, Entity, KeyFrame, Scene, Story, StorySettings  # noqa: E402


def draw_owl(path: Path, tint: int) -> None:
    image = Image.new("RGB", (160, 160), (222 - tint, 236, 250))
    draw = ImageDraw.Draw(image)
    draw.ellipse((35, 30, 125, 140), fill=(139, 94, 60))  # body
    draw.ellipse((55, 75, 105, 135), fill=(222, 190, 150))  # belly
    for x in (48, 82):  # eyes
        draw.ellipse((x, 42, x + 30, 72), fill="white")
        draw.ellipse((x + 9, 51, x + 21, 63), fill="black")
    draw.polygon([(80, 70), (72, 82), (88, 82)], fill=(240, 170, 30))  # beak
    draw.polygon([(40, 38), (50, 15), (60, 36)], fill=(110, 70, 45))  # ear tufts
    draw.polygon([(100, 36), (110, 15), (120, 38)], fill=(110, 70, 45))
    image.save(path, optimize=True)


def draw_fox(path: Path, tint: int) -> None:
    image = Image.new("RGB", (160, 160), (236, 245 - tint, 226))
    draw = ImageDraw.Draw(image)
    draw.polygon([(30, 40), (55, 10), (70, 50)], fill=(214, 98, 30))  # ears
    draw.polygon([(90, 50), (105, 10), (130, 40)], fill=(214, 98, 30))
    draw.ellipse((30, 35, 130, 125), fill=(224, 110, 40))  # head
    draw.polygon([(45, 90), (80, 145), (115, 90)], fill="white")  # muzzle
    draw.ellipse((74, 132, 86, 144), fill="black")  # nose
    for x in (55, 90):
        draw.ellipse((x, 65, x + 14, 79), fill="black")
    image.save(path, optimize=True)


def track(name, character_id, motion, description, start, end, size=(0.22, 0.4), y=0.45):
    """An entity moving in a straight line across the 6 keyframes (x of its box centre from start to end)."""
    width, height = size
    frames = []
    for k in range(6):
        cx = start + (end - start) * k / 5
        box = (round(max(cx - width / 2, 0.0), 3), round(y, 3), round(min(cx + width / 2, 1.0), 3),
               round(min(y + height, 1.0), 3))
        frames.append(Entity(name=name, character_id=character_id, motion=motion, description=description, box=box))
    return frames


def still(name, description, box):
    return [Entity(name=name, description=description, box=box) for _ in range(6)]


def scene(scene_id, description, narration, motions, background, *tracks):
    keyframes = [KeyFrame(index=k, entities=[t[k] for t in tracks]) for k in range(6)]
    return Scene(id=scene_id, description=description, narration=narration, motions=motions,
                 background=background, keyframes=keyframes)


def build_story() -> Story:
    pip = Character(id="pip", name="Pip", token="[v1]", description="a small brown owl with big round eyes",
                    reference_images=["media/characters/pip_1.png", "media/characters/pip_2.png"])
    rusty = Character(id="rusty", name="Rusty", token="[v2]", description="a young red fox with a white muzzle",
                      reference_images=["media/characters/rusty_1.png", "media/characters/rusty_2.png"])
    owl, fox = "[v1] Pip the owl", "[v2] Rusty the fox"
    scenes = [
        scene("s1", "Pip wakes up in the old oak", "At dusk, Pip the owl stretches her wings in the old oak tree.",
              ["stretching wings"], "a huge old oak tree at dusk, warm orange sky",
              track("Pip", "pip", "stretching wings", f"{owl} stretching her wings on a branch", 0.5, 0.5,
                    (0.3, 0.35), 0.2),
              still("oak branch", "a thick mossy oak branch", (0.1, 0.5, 0.9, 0.62))),
        scene("s2", "Rusty runs through the meadow", "Down below, Rusty the fox runs across the meadow.",
              ["running"], "a meadow of tall grass and wildflowers at dusk",
              track("Rusty", "rusty", "running", f"{fox} running through tall grass", 0.15, 0.85, (0.28, 0.35), 0.5)),
        scene("s3", "Pip flies down to Rusty", "Pip glides down and lands beside her friend.",
              ["flying", "sitting"], "the edge of the meadow beside a stream, first stars in the sky",
              track("Pip", "pip", "flying", f"{owl} gliding down with open wings", 0.2, 0.62, (0.24, 0.3), 0.15),
              track("Rusty", "rusty", "sitting", f"{fox} sitting and looking up", 0.3, 0.3, (0.25, 0.38), 0.5)),
        scene("s4", "The friends watch the stars", "Together they watch the stars come out over the stream.",
              ["sitting", "sitting"], "a calm stream under a starry night sky",
              track("Pip", "pip", "sitting", f"{owl} sitting on a rock, looking at the sky", 0.35, 0.35,
                    (0.2, 0.3), 0.45),
              track("Rusty", "rusty", "sitting", f"{fox} sitting beside the owl", 0.62, 0.62, (0.26, 0.4), 0.45)),
    ]
    # Few sampling and training steps: the demo is meant to run through on a CPU with the tiny backend;
    # raise them (Render and Priors tabs) for real CogVideoX weights.
    settings = StorySettings.model_validate({"render": {"steps": 10}, "prior": {"max_steps": 20}})
    return Story(title="Pip and Rusty", topic="An owl and a fox become friends at dusk", characters=[pip, rusty],
                 scenes=scenes, settings=settings)


def main() -> None:
    media = HERE / "media" / "characters"
    if media.exists():
        shutil.rmtree(media)
    media.mkdir(parents=True)
    draw_owl(media / "pip_1.png", 0)
    draw_owl(media / "pip_2.png", 30)
    draw_fox(media / "rusty_1.png", 0)
    draw_fox(media / "rusty_2.png", 30)
    Project.create(HERE, build_story(), overwrite=True)
    (HERE / BACKUP_FILE).unlink(missing_ok=True)  # the demo ships one story, not its previous version
    print(f"wrote {HERE / 'project.json'}")


if __name__ == "__main__":
    main()
