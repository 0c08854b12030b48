"""The animatic draws each entity's box where the plan puts it, frame by frame."""

import json
import logging
import sys
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from render_helpers import moving_scene

from dreamrunner.rendering import overlay
from dreamrunner.rendering.animatic import BACKGROUND_COLOR, entity_colors, render_animatic
from dreamrunner.plan_format import parse_plan
from dreamrunner.story import VideoSettings

FIXTURES = Path(__file__).parent / "fixtures" / "dreamrunner_plans"

VIDEO = VideoSettings(num_frames=17, fps=8, height=240, width=320)


def pixel(frame: np.ndarray, x: float, y: float) -> tuple[int, ...]:
    return tuple(int(v) for v in frame[int(y * VIDEO.height), int(x * VIDEO.width)])


def test_boxes_sit_where_the_plan_puts_them():
    scene = moving_scene("s", "A cat walks under an owl.", start_x=0.05, end_x=0.55)
    frames = render_animatic(scene, VIDEO)
    assert frames.shape == (17, 240, 320, 3) and frames.dtype == np.uint8
    colors = entity_colors(scene)
    assert colors["cat", 0] != colors["owl", 0]
    for t in (0, 3, 5, 8, 13, 16):
        # 17 frames at 8 fps last 2 s: keyframe k owns the frames in (k/3, (k+1)/3] s, and the box holds there.
        keyframe = 0 if t == 0 else math.ceil(t / 8 * 3 - 1e-9) - 1
        x0 = 0.05 + 0.1 * keyframe
        assert pixel(frames[t], x0 + 0.2, 0.6) == colors["cat", 0], f"frame {t}: cat box centre"
        assert pixel(frames[t], 0.825, 0.2) == colors["owl", 0], f"frame {t}: owl box centre"
        # Just outside the cat's box, on both sides, is background.
        if x0 > 0.03:
            assert pixel(frames[t], x0 - 0.02, 0.6) == BACKGROUND_COLOR, f"frame {t}: left of the cat"
        assert pixel(frames[t], x0 + 0.42, 0.6) == BACKGROUND_COLOR, f"frame {t}: right of the cat"
    # Where the cat ends up is empty on the first frame: the box moves.
    assert pixel(frames[0], 0.9, 0.8) == BACKGROUND_COLOR
    assert pixel(frames[16], 0.9, 0.8) == colors["cat", 0]


def test_narration_and_background_caption_are_drawn():
    scene = moving_scene("s", "A cat walks under an owl.")
    with_text = render_animatic(scene, VIDEO)
    silent = render_animatic(scene.model_copy(update={"narration": ""}), VIDEO)
    top = slice(0, VIDEO.height // 10)
    assert (with_text[:, top] != silent[:, top]).any()
    bottom = with_text[0, -VIDEO.height // 12:]
    assert (bottom != BACKGROUND_COLOR).any(axis=-1).sum() > 50  # the background caption's pixels


def test_published_plan_boxes_on_keyframe_frames():
    """A plan of the paper's own (both entities named "none"): on the frames where keyframes land, each box
    centre has its entity's colour, and the two entities differ."""
    line = (FIXTURES / "3_spatial_relationships.jsonl").read_text().splitlines()[0]
    scene, _ = parse_plan(json.loads(line)[1], "0001")
    video = VideoSettings(num_frames=41, fps=8, height=144, width=224)  # keyframe k owns frames from 8k
    frames = render_animatic(scene, video)
    colors = entity_colors(scene)
    assert len(set(colors.values())) == 2
    for keyframe in scene.keyframes:
        frame = frames[8 * keyframe.index]
        for ordinal, entity in enumerate(keyframe.entities):
            x0, y0, x1, y1 = entity.box
            later = keyframe.entities[ordinal + 1:]  # drawn on top; all named "none", so ordinal = position
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if any(b.box[0] <= cx <= b.box[2] and b.box[1] <= cy <= b.box[3] for b in later):
                continue
            got = tuple(int(v) for v in frame[int(cy * video.height), int(cx * video.width)])
            assert got == colors[(entity.name, ordinal)], f"keyframe {keyframe.index + 1}, entity {ordinal + 1}"


# -- Text in any script (issue 13): drawn from a Unicode TrueType font, not OpenCV's ASCII-only Hershey fonts --

# The second round's scripts were drawn as boxes (tofu) with no warning: Arabic, Hebrew, Devanagari, Thai, emoji.
REPORTED = "مرحبا يا ميرا — שלום עולם 😀🦊 नमस्ते สวัสดี"
UNICODE = ["Café crème — naïve Zoë", "小猫在森林里散步", REPORTED, "Ωμέγα Жук 한글"]
MISSING = "\ue000"  # a private-use code point: no font has it, so it draws the font's missing-glyph box


def glyphs(text: str, size: int = 32) -> np.ndarray:
    """`text` as the overlay draws it (every face of the chain), as a coverage mask."""
    return overlay._coverage(text, size, False, "la")[3]


def test_the_overlay_font_has_every_character():
    assert overlay.font_face() is not None, "the overlay font package (requirements.txt) is not installed"
    missing, question = glyphs(MISSING), glyphs("?")
    assert missing.any()  # the box is drawn, so "differs from it" means something
    for text in UNICODE:
        for char in sorted(c for c in set(text) - {" "} if not unicodedata.category(c).startswith("M")):
            drawn = glyphs(char)
            assert drawn.any(), f"{char!r} draws nothing"
            assert drawn.shape != missing.shape or not np.array_equal(drawn, missing), f"{char!r} is the box"
            assert char == "?" or not np.array_equal(drawn, question), f"{char!r} is drawn as '?'"


@pytest.mark.parametrize("text", UNICODE)
def test_animatic_draws_accents_and_chinese_as_written(text):
    def narration(narration):
        """The narration line as drawn, cropped to its pixels (so that where it is centred does not matter)."""
        rows = render_animatic(moving_scene("s", narration), VIDEO)[0, : VIDEO.height // 10]
        ys, xs = np.nonzero((rows != BACKGROUND_COLOR).any(axis=-1))
        return rows[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]

    drawn = narration(text)
    for stand_in in ("?", MISSING):
        if stand_in == "?" and any(unicodedata.category(c).startswith("M") for c in text):
            continue  # marks replaced by "?" are not the same text: shaping differs anyway
        replaced = narration("".join(c if c.isascii() else stand_in for c in text))
        assert drawn.shape != replaced.shape or not np.array_equal(drawn, replaced), f"drawn as {stand_in!r}"


@pytest.fixture
def fresh_font_caches():
    caches = (overlay.font_face, overlay.font_chain, overlay._face_of, overlay._fonts, overlay.text_length,
              overlay.wrap_text, overlay._coverage)
    for cache in caches:
        cache.cache_clear()
    overlay._warned.clear()
    yield
    for cache in caches:
        cache.cache_clear()
    overlay._warned.clear()


def test_without_the_font_package_text_falls_back_with_a_warning(monkeypatch, caplog, fresh_font_caches):
    monkeypatch.setitem(sys.modules, "noto_cjk_sans_otc", None)  # import fails as if not installed
    scene = moving_scene("s", "A cat walks under an owl.")
    with caplog.at_level(logging.WARNING, logger=overlay.__name__):
        with_text = render_animatic(scene, VIDEO)
    assert overlay.font_face() is None
    assert "of the noto-cjk-sans-otc package is missing" in caplog.text
    silent = render_animatic(scene.model_copy(update={"narration": ""}), VIDEO)
    top = slice(0, VIDEO.height // 10)
    assert (with_text[:, top] != silent[:, top]).any()  # Pillow's default font still draws Latin


def test_with_subtitles_below_the_narration_is_left_out_and_the_bottom_is_free():
    """An export with burned subtitles: the subtitles carry the narration, along the bottom."""
    scene = moving_scene("s", "A cat walks under an owl.")
    frames = render_animatic(scene, VIDEO, subtitles_below=True)
    assert (frames == render_animatic(scene.model_copy(update={"narration": ""}), VIDEO, subtitles_below=True)).all()
    bottom = slice(VIDEO.height * 3 // 4, VIDEO.height)
    other_caption = render_animatic(scene.model_copy(update={"background": "x"}), VIDEO, subtitles_below=True)
    assert (frames[:, bottom] == other_caption[:, bottom]).all(), "no caption text at the bottom"
    assert (frames[:, : VIDEO.height // 8] != other_caption[:, : VIDEO.height // 8]).any(), "the caption is on top"


@pytest.mark.parametrize("char, family", [
    ("é", "Noto Sans CJK SC"), ("中", "Noto Sans CJK SC"), ("ع", "Noto Sans Arabic"), ("ש", "Noto Sans Hebrew Light"),
    ("क", "Noto Sans Devanagari"), ("ก", "Noto Sans Thai"), ("😀", "Noto Emoji"), ("\u2652", "Noto Sans Symbols"),
])
def test_each_character_is_drawn_in_the_first_face_that_has_it(char, family):
    ((face, run),) = overlay.font_runs(char)
    assert run == char and overlay.family_name(overlay.font_chain()[face]) == family
    # Marks, spaces and joiners stay in the run of the character before them, for shaping.
    runs = overlay.font_runs("नमस्ते दुनिया")
    assert [overlay.family_name(overlay.font_chain()[f]) for f, _ in runs] == ["Noto Sans Devanagari"]


def test_characters_no_font_has_are_named_in_a_warning(caplog, fresh_font_caches):
    with caplog.at_level(logging.WARNING, logger=overlay.__name__):
        frames = render_animatic(moving_scene("s", f"a {MISSING} b"), VIDEO)
    assert "no installed font draws '\\ue000' (U+E000 unnamed): they show as boxes" in caplog.text
    assert frames[0, : VIDEO.height // 10].any()


def test_a_200000_character_narration_wraps_only_what_fits(monkeypatch):
    """A 200k-character narration took 12-16 s per animatic: every word was measured and wrapped."""
    measured = []
    length = overlay.text_length.__wrapped__
    for text in ("word " * 40_000, "中" * 100_000):
        expected = overlay.wrap_text(text[:2000], 600, 20)[0]
        overlay.wrap_text.cache_clear()
        monkeypatch.setattr(overlay, "text_length", lambda text, size: measured.append(text) or length(text, size))
        lines = overlay.fit_lines(text, 600, 20, 2)
        monkeypatch.undo()
        assert len(lines) == 2 and lines[0] == expected and lines[1].endswith(overlay.ELLIPSIS)
        assert all(length(line, 20) <= 600 for line in lines)
    assert len(measured) < 1_000 and sum(map(len, measured)) < 100_000  # not 40,000 words
    overlay.wrap_text.cache_clear()
    short = "a short narration"
    assert overlay.fit_lines(short, 600, 20, 2) == (short,)
