"""Subtitle cues and the files they are written to: SubRip (.srt), WebVTT (.vtt) and ASS for ffmpeg.

A cue's text is literal: what the narration says is what the viewer reads. Each reader has its own syntax
("<b>" is markup in WebVTT, "{...}" a style override and "\\N" a line break in ASS), so each writer escapes
for the reader it feeds:

- WebVTT: `&`, `<` and `>` as character references (the WebVTT spec's escapes).
- ASS for libass, which draws burned-in subtitles: `{` and `}` as `\\{` and `\\}`, and a word joiner
  (U+2060, zero-width) after every backslash so that `\\N`, `\\h`, ... stay text. These are the escapes
  libass reads, and what mpv and ffmpeg's WebVTT decoder write.
- ASS for ffmpeg's own ASS parser, which feeds the mov_text track encoder and knows no escapes (it takes
  `\\{` as two characters): an empty override block `{\\}` after every `{` and every backslash, so that no
  `{\\...}`, `\\N` or `\\n` is left in the text; the parser drops the empty blocks, and the track's cues hold
  the text exactly.
- SubRip has no escapes and is written as is; the WebVTT file and the mp4's track carry every cue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # one line, literal


def cue_text(narration: str) -> str:
    """The one-line cue for a narration (runs of whitespace, line breaks included, become one space)."""
    return " ".join(narration.split())


def _clock(seconds: float, separator: str) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt_time(seconds: float) -> str:
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    return _clock(seconds, ".")


def ass_time(seconds: float) -> str:
    # ASS counts centiseconds. Rounding down keeps the last cue from ending after the video, which would
    # make the mp4 (its subtitle track) longer than its frames; every boundary moves the same way.
    centiseconds = math.floor(seconds * 100 + 1e-6)
    hours, rest = divmod(centiseconds, 360_000)
    minutes, rest = divmod(rest, 6_000)
    secs, cents = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{cents:02d}"


def format_srt(cues: list[Cue]) -> str:
    return "\n".join(f"{number}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n{cue.text}\n"
                     for number, cue in enumerate(cues, 1))


def format_webvtt(cues: list[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    for cue in cues:
        text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append(f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n{text}\n")
    return "\n".join(blocks)


_LIBASS_ESCAPES = {"\\": "\\" + WORD_JOINER, "{": "\\{", "}": "\\}"}
_FFMPEG_ASS_ESCAPES = {"\\": "\\{\\}", "{": "{{\\}"}


def format_ass(cues: list[Cue], width: int, height: int, font: str, reader: str,
               runs: Callable[[str], list[tuple[str, float, str]]] | None = None) -> str:
    """An ASS script of `cues` for a `width` x `height` video, white `font` text with a black outline at the
    bottom centre, escaped for `reader`: "libass" (burning in) or "ffmpeg" (the mov_text track encoder).
    `runs` (libass only): a cue's text -> (font family, size factor, run) pieces, each run then drawn in its
    family at the style's size times the factor with `\\fn` and `\\fs` overrides (the overlay's per-character
    font fallback, `dreamrunner.rendering.overlay.font_runs`)."""
    escapes = {"libass": _LIBASS_ESCAPES, "ffmpeg": _FFMPEG_ASS_ESCAPES}[reader]
    size = max(round(height / 16), 8)
    outline = max(round(height / 240), 1)
    lines = [
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}", "WrapStyle: 0",
        "ScaledBorderAndShadow: yes", "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
        "MarginR, MarginV, Encoding",
        f"Style: Default,{font},{size},&H00FFFFFF,&H000000FF,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,{outline},"
        f"0,2,{width // 40},{width // 40},{height // 24},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    for cue in cues:
        pieces = runs(cue.text) if runs is not None and reader == "libass" else [(font, 1.0, cue.text)]
        tagged = any(family != font for family, _, _ in pieces)
        text = "".join((f"{{\\fn{family}\\fs{size * factor:.4g}}}" if tagged else "")
                       + "".join(escapes.get(c, c) for c in run) for family, factor, run in pieces)
        lines.append(f"Dialogue: 0,{ass_time(cue.start)},{ass_time(cue.end)},Default,,0,0,0,,{text}")
    return "\n".join(lines) + "\n"
