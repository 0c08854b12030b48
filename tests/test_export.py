"""Export: animatic fallback, crossfade, subtitles (sidecar and burned in), manifest, CLI."""

import json

import av
import numpy as np
import pytest
from render_helpers import three_scene_story

from dreamrunner.cli import main
from dreamrunner.export import ExportError, export_story
from dreamrunner.subtitles import srt_time
from dreamrunner.project import Project
from dreamrunner.rendering.animatic import render_animatic
from dreamrunner.video_io import read_video
from dreamrunner.story import VideoSettings

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
    assert main(["choose", str(tmp_path / "story"), "--scene", "2", "--seed", "5"]) == 2
    assert "no render with seed 5" in capsys.readouterr().err
    # The stock path is another cache key: the scene renders again.
    assert main(["render", str(tmp_path / "story"), "--scene", "2", "--region-control", "stock"]) == 0
    assert "s2 seed 42: rendered" in capsys.readouterr().out


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
