"""Export: animatic fallback, crossfade, subtitles (sidecars, track and burned in), manifest, CLI, failures."""

import html
import json

import av
import imageio_ffmpeg
import numpy as np
import pytest
from render_helpers import moving_scene, three_scene_story

from dreamrunner.cli import main
from dreamrunner.export import ExportError, export_story
from dreamrunner.jobs import Cancelled, CancelToken
from dreamrunner.project import Project
from dreamrunner.rendering.animatic import render_animatic
from dreamrunner.rendering.overlay import load_font
from dreamrunner.story import RenderResult, VideoSettings
from dreamrunner.subtitles import srt_time
from dreamrunner.video_io import read_video, write_video

VIDEO = VideoSettings(num_frames=9, fps=8, height=160, width=224)


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "story", three_scene_story(VIDEO))


def test_animatic_export_matches_the_plan(project, tmp_path):
    result = export_story(project, tmp_path / "story.mp4", prefer="animatic")
    frames = read_video(result.video)
    assert frames.shape == (27, 160, 224, 3)
    expected = render_animatic(project.story.scenes[1], VIDEO)
    # Scene 2 occupies frames 9..17; H.264 is lossy, so compare on average.
    assert np.abs(frames[9:18].astype(int) - expected.astype(int)).mean() < 4
    manifest = json.loads(result.manifest.read_text())
    assert manifest["contains_noise"] is False and manifest["noise_label"] is None
    assert [(s["start_frame"], s["num_frames"], s["source"]) for s in manifest["scenes"]] == [
        (0, 9, "animatic"), (9, 9, "animatic"), (18, 9, "animatic")]


def test_crossfade_overlaps_scenes_and_cues_change_mid_fade(project, tmp_path):
    result = export_story(project, tmp_path / "story.mp4", crossfade_frames=2, prefer="animatic")
    assert result.num_frames == 27 - 2 * 2
    with av.open(str(result.video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 23
    # Scene 2 starts at frame 7; the cue boundary is mid-fade, at frame 8 = 1.000 s.
    assert [s.start_frame for s in result.scenes] == [0, 7, 14]
    assert "00:00:00,000 --> 00:00:01,000" in result.subtitles.read_text()
    assert "00:00:01,000 --> 00:00:01,875" in result.subtitles.read_text()
    frames = read_video(result.video)
    first, second = (render_animatic(s, VIDEO) for s in project.story.scenes[:2])
    blend = first[7].astype(float) * 2 / 3 + second[0].astype(float) / 3
    assert np.abs(frames[7].astype(float) - blend).mean() < 4  # the first crossfade frame is a blend
    with pytest.raises(ExportError, match="too few for a 9-frame crossfade"):
        export_story(project, tmp_path / "bad.mp4", crossfade_frames=9, prefer="animatic")


def test_burned_subtitles_draw_the_narration(project, tmp_path):
    plain = read_video(export_story(project, tmp_path / "plain.mp4", prefer="animatic").video)
    burned = read_video(export_story(project, tmp_path / "burned.mp4", burn_subtitles=True, prefer="animatic").video)
    assert plain.shape == burned.shape
    bottom = slice(int(VIDEO.height * 0.75), None)
    changed = np.abs(burned[:, bottom].astype(int) - plain[:, bottom].astype(int)).max(axis=-1) > 60
    assert changed.reshape(len(changed), -1).any(axis=1).all()  # text on every frame's lower quarter


def test_bad_output_and_empty_story(project, tmp_path):
    with pytest.raises(ExportError, match="must be an .mp4"):
        export_story(project, tmp_path / "story.avi")
    project.story.scenes = []
    with pytest.raises(ExportError, match="no scenes"):
        export_story(project, tmp_path / "story.mp4")


def test_srt_time_format():
    assert srt_time(0) == "00:00:00,000" and srt_time(3725.5) == "01:02:05,500"


def test_cli_render_one_scene_then_export(tmp_path, capsys):
    Project.create(tmp_path / "story", three_scene_story())
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--backend", "tiny"]) == 0
    out = capsys.readouterr()
    assert "s2 seed 42: rendered media/renders/s2/" in out.out and "noise" in out.err
    assert main(["export", str(tmp_path / "story"), "--out", str(tmp_path / "story.mp4")]) == 0
    assert "27 frames, 96x64, 8 fps, 3.38 s" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "story.json").read_text())
    assert [s["source"] for s in manifest["scenes"]] == ["animatic", "render", "animatic"]
    assert manifest["contains_noise"] is True
    assert main(["choose", str(tmp_path / "story"), "--scene", "2", "--seed", "5"]) == 1
    assert "no render with seed 5" in capsys.readouterr().err
    # The stock path is another cache key: the scene renders again. --scene takes an id as well as a number.
    assert main(["render", str(tmp_path / "story"), "--scene", "s2", "--region-control", "stock"]) == 0
    assert "s2 seed 42: rendered" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "story"), "--scene", "s9"]) == 1
    assert "the story has no scene 's9'; give an id (s1, s2, s3) or a number 1-3" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--variants", "65"]) == 2
    assert "render settings, variants: Input should be less than or equal to 64" in capsys.readouterr().err


def test_written_videos_get_the_usual_permissions(tmp_path):
    import os

    import numpy as np

    from dreamrunner.video_io import write_video

    umask = os.umask(0o022)
    try:
        path = write_video(tmp_path / "clip.mp4", [np.zeros((64, 96, 3), np.uint8)] * 3, fps=8)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# -- Text handed to renderers (issue 13): cue text is literal in every output, paths are never filter syntax --

TEXT_VIDEO = VideoSettings(num_frames=9, fps=8, height=240, width=640)
REFERENCE = "closed for winter"
TRICKY = ["{closed for winter}", "{\\an8}Top of the hill", "a < b > c", "Café crème — naïve Zoë", "小猫在森林里散步",
          "back\\slash \\N stays & <b>not bold</b>"]


def black_render_project(folder, narrations, video=TEXT_VIDEO) -> Project:
    """A saved project whose scenes all have a chosen render that is plain black, so that whatever the export
    draws on the frames is the subtitles."""
    story = three_scene_story(video)
    story.scenes = [moving_scene(f"s{number}", text) for number, text in enumerate(narrations, 1)]
    project = Project.create(folder, story)
    black = [np.zeros((video.height, video.width, 3), np.uint8)] * video.num_frames
    for scene in project.story.scenes:
        path = f"media/renders/{scene.id}/black.mp4"
        write_video(project.resolve(path), black, video.fps)
        scene.renders = [RenderResult(seed=0, path=path, cache_key="black", backend="test")]
        scene.chosen_render = 0
    project.save()
    return project


def ink(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the bright (text) pixels of a frame."""
    return np.nonzero(frame.max(axis=-1) > 128)


def test_burned_cues_show_their_text_literally(tmp_path):
    """libass reads `{...}` as a style override and `{\\an8}` as a position: burned, each cue must show its
    text as written, at the bottom. The width of each burned cue, relative to a plain one, is compared with
    the same ratio in the same font drawn by Pillow (which reads no markup)."""
    narrations = [REFERENCE, *TRICKY]
    project = black_render_project(tmp_path / "story", narrations)
    frames = read_video(export_story(project, tmp_path / "story.mp4", burn_subtitles=True).video)
    font = load_font(64)

    def drawn_width(text):
        left, _, right, _ = font.getbbox(text)
        return right - left

    widths = {}
    for number, text in enumerate(narrations):
        rows, columns = ink(frames[number * TEXT_VIDEO.num_frames + TEXT_VIDEO.num_frames // 2])
        assert len(rows), f"cue {text!r} drew nothing"
        assert rows.min() > TEXT_VIDEO.height * 2 / 3, f"cue {text!r} is not at the bottom"
        widths[text] = columns.max() - columns.min() + 1
    for text in TRICKY:
        burned, expected = widths[text] / widths[REFERENCE], drawn_width(text) / drawn_width(REFERENCE)
        assert burned == pytest.approx(expected, rel=0.05), f"cue {text!r}: width ratio {burned:.3f}, text {expected:.3f}"


SCRIPTS = ["שלום עולם", "नमस्ते दुनिया", "สวัสดี", "مرحبا يا ميرا", "😀🦊 ok"]


def test_burned_subtitles_draw_every_script_in_the_overlays_faces(tmp_path):
    """libass was given the CJK face only: Hebrew, Devanagari, Thai, Arabic and emoji burned as boxes. Each cue
    must differ from a cue of as many missing-glyph boxes, and be as wide, relative to the reference, as the
    overlay (Pillow, the same faces) draws it."""
    from dreamrunner.rendering.overlay import text_length

    boxes = ["\ue000" * len(text) for text in SCRIPTS]
    narrations = [REFERENCE, *SCRIPTS, *boxes]
    project = black_render_project(tmp_path / "story", narrations)
    frames = read_video(export_story(project, tmp_path / "story.mp4", burn_subtitles=True).video)
    middle = [frames[n * TEXT_VIDEO.num_frames + TEXT_VIDEO.num_frames // 2] for n in range(len(narrations))]
    bright = [frame.max(axis=-1) > 128 for frame in middle]
    widths = [np.ptp(ink(frame)[1]) + 1 for frame in middle]
    for number, text in enumerate(SCRIPTS, 1):
        assert bright[number].any(), f"cue {text!r} drew nothing"
        assert not np.array_equal(bright[number], bright[number + len(SCRIPTS)]), f"cue {text!r} drew boxes"
        burned, expected = widths[number] / widths[0], text_length(text, 64) / text_length(REFERENCE, 64)
        assert burned == pytest.approx(expected, rel=0.1), f"cue {text!r}: width ratio {burned:.3f}, text {expected:.3f}"


def mp4_boxes(path) -> list[str]:
    """The top-level box types of an mp4, in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        boxes.append(kind)
        offset += size if size else len(data)
    return boxes


def test_export_embeds_a_subtitle_track_writes_webvtt_and_faststart(tmp_path):
    project = black_render_project(tmp_path / "story", [*TRICKY[:5], "", TRICKY[5]])
    result = export_story(project, tmp_path / "story.mp4")
    with av.open(str(result.video)) as container:
        (track,) = container.streams.subtitles
        assert track.codec_context.name == "mov_text"
        cues = []
        for packet in container.demux(track):
            payload = bytes(packet)
            if len(payload) > 2:  # a tx3g sample: 16-bit length, UTF-8 text; empty samples fill the gaps
                length = int.from_bytes(payload[:2], "big")
                cues.append((float(packet.pts * packet.time_base), payload[2:2 + length].decode("utf-8")))
    seconds = TEXT_VIDEO.num_frames / TEXT_VIDEO.fps
    narrated = [(n, text) for n, text in enumerate([*TRICKY[:5], "", TRICKY[5]]) if text]
    assert cues == [(pytest.approx(n * seconds, abs=0.01), text) for n, text in narrated]
    boxes = mp4_boxes(result.video)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart: the index first

    vtt = result.webvtt.read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n") and "a &lt; b &gt; c" in vtt and "&amp; &lt;b&gt;not bold&lt;/b&gt;" in vtt
    blocks = vtt.split("\n\n")[1:]
    assert [html.unescape(block.strip().split("\n")[1]) for block in blocks] == [text for _, text in narrated]
    assert "00:00:01.125 --> 00:00:02.250" in vtt
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["subtitles"] == {"path": "story.srt", "webvtt": "story.vtt", "burned_in": False}
    assert manifest["video"]["subtitle_track"] == "mov_text"


def test_burn_subtitles_into_a_folder_whose_name_is_filter_syntax(tmp_path, capsys):
    """The issue's case is `Mira's story`; commas, colons, semicolons and brackets are filter-graph syntax too."""
    for name in ("Mira's story", "Mira's story; part [1], take 2: a\\b"):
        folder = tmp_path / name
        black_render_project(folder / "project", ["Mira sets out."])
        assert main(["export", str(folder / "project"), "--out", str(folder / "story.mp4"), "--burn-subtitles"]) == 0
        assert "story.vtt" in capsys.readouterr().out
        frames = read_video(folder / "story.mp4")
        rows, _ = ink(frames[4])
        assert len(rows) and rows.min() > TEXT_VIDEO.height * 2 / 3  # the burned cue
        manifest = json.loads((folder / "story.json").read_text(encoding="utf-8"))
        assert manifest["subtitles"]["burned_in"] is True
        assert sorted(p.name for p in folder.iterdir()) == ["project", "story.json", "story.mp4", "story.srt",
                                                            "story.vtt"]


def test_a_failed_export_leaves_the_previous_one(tmp_path, monkeypatch):
    project = black_render_project(tmp_path / "story", ["One.", "Two.", "Three."])
    out = tmp_path / "exports" / "story.mp4"
    export_story(project, out)
    before = {path.name: path.read_bytes() for path in out.parent.iterdir()}
    assert sorted(before) == ["story.json", "story.mp4", "story.srt", "story.vtt"]
    project.story.scenes[0].narration = "Changed."

    # Cancelled after the first scene's frames are written.
    token = CancelToken()
    with pytest.raises(Cancelled):
        export_story(project, out, progress=lambda event: token.cancel(), cancel=token)
    assert {path.name: path.read_bytes() for path in out.parent.iterdir()} == before

    # ffmpeg writes the new video, then fails.
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\n"{imageio_ffmpeg.get_ffmpeg_exe()}" "$@"\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    with pytest.raises(ExportError, match="ffmpeg could not write the story video"):
        export_story(project, out, burn_subtitles=True)
    assert {path.name: path.read_bytes() for path in out.parent.iterdir()} == before


def test_the_subtitle_track_does_not_make_the_video_longer(tmp_path):
    """ASS times are centiseconds: 27 frames at 8 fps end at 3.375 s, and the track must not end at 3.38 s."""
    project = black_render_project(tmp_path / "story", ["One.", "Two.", "Three."])
    result = export_story(project, tmp_path / "story.mp4")
    with av.open(str(result.video)) as container:
        assert container.duration / av.time_base == pytest.approx(27 / 8)
