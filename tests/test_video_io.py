"""The one video reader (dreamrunner.video_io) and every path that reads clips through it: retrieval probing,
filters, sampling and cutting, motion-prior clips and the metrics. Real files made with ffmpeg, real PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dreamrunner.metrics import read_video as metrics_read_video
from dreamrunner.priors import PriorDataError, load_video_clip
from dreamrunner.retrieval import ClipFilter, materialise, probe, read_video_folder, sample_frames
from dreamrunner.video_io import (
    NoVideoStreamError,
    VideoFileError,
    count_frames,
    probe_video,
    read_video,
)
from media_files import audio_only_mp4, ffmpeg, ffmpeg_frames, red_mask, rotated_clip


@pytest.fixture(scope="module")
def phone_clip(tmp_path_factory):
    return rotated_clip(tmp_path_factory.mktemp("phone") / "phone.mp4")


def assert_upright(frame: np.ndarray) -> None:
    """The phone clip's red block sits bottom-left when shown upright (top-left in the coded picture)."""
    height, width = frame.shape[:2]
    assert height > width, f"frame is {width}x{height}, sideways"
    assert red_mask(frame[-height // 5:, : width // 5]).mean() > 0.9
    assert red_mask(frame[: height // 5, : width // 5]).mean() == 0.0


def test_a_rotated_phone_clip_is_probed_and_decoded_upright_everywhere(phone_clip, tmp_path):
    info = probe_video(phone_clip)
    assert (info.width, info.height, info.rotation, info.fps) == (360, 640, 90, 8.0)
    assert probe(phone_clip) == info  # retrieval's probe is the same reader
    frames = read_video(phone_clip)
    assert frames.shape == (count_frames(phone_clip), 640, 360, 3) == (16, 640, 360, 3)
    # Exactly what the ffmpeg command line (which autorotates) shows.
    assert np.array_equal(frames, ffmpeg_frames(phone_clip, 360, 640))
    assert_upright(frames[0])

    # Retrieval: the importer records the upright size, filters judge it, sampled frames (what detection,
    # tracking and CLIP re-ranking see) and the cut clip are upright.
    (phone_clip.parent / "phone.txt").write_text("a person waving")
    (record,) = read_video_folder(phone_clip.parent)
    assert (record.width, record.height) == (360, 640) and record.aspect == pytest.approx(0.5625)
    assert ClipFilter(max_aspect=1.0).check(record) is None
    assert "wider" in ClipFilter(max_aspect=0.5).check(record)
    assert "width 360 px" in ClipFilter(min_width=480).check(record)
    times, sampled = sample_frames(phone_clip, fps=4, max_side=320)
    assert len(times) == 8 and sampled[0].shape == (320, 180, 3)
    assert_upright(sampled[0])
    cut = materialise(phone_clip, tmp_path / "cut.mp4", 0.0, 1.0, fps=8)
    assert (probe(cut).width, probe(cut).height, probe(cut).rotation) == (360, 640, 0)
    assert_upright(read_video(cut, [0])[0])

    # Motion-prior training frames (cover + centre crop to the model's frame) and the metrics' frames.
    clip = load_video_clip(phone_clip, 3, 128, 72, 8)
    assert clip.shape == (3, 3, 128, 72)
    assert_upright(((clip[0].permute(1, 2, 0).numpy() + 1) * 127.5).round())
    assert_upright(metrics_read_video(phone_clip, [5])[0])


def test_frames_are_picked_by_index_and_resized_while_decoding(phone_clip):
    everything = read_video(phone_clip)
    picked = read_video(phone_clip, [3, 0, 3, 15])
    assert np.array_equal(picked, everything[[3, 0, 3, 15]])
    small = read_video(phone_clip, [0], max_side=64)
    assert small.shape == (1, 64, 36, 3)
    assert read_video(phone_clip, [0], cover=(50, 50)).shape == (1, 50, 50, 3)
    # Indices past the end (a frame count above what decodes) get the last frame rather than failing.
    assert np.array_equal(read_video(phone_clip, [15, 99])[1], everything[15])
    with pytest.raises(ValueError):
        read_video(phone_clip, [])


MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from dreamrunner.metrics import sample_indices
    from dreamrunner.metrics.evaluate import VideoSample
    from dreamrunner.priors import load_video_clip
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports kB)
    path = sys.argv[1]
    before = peak()
    clip = load_video_clip(path, 9, 60, 90, 0.6)  # 9 frames spread over the 400-frame clip
    after_clip = peak()
    sample = VideoSample("big", path)
    total = sample.frame_count()
    scored = sample.load_frames(sample_indices(total, 9))
    print(json.dumps({"before": before, "clip": after_clip, "metrics": peak(), "total": total,
                      "shapes": [list(clip.shape), list(scored.shape)]}))
""")


def test_sampling_a_long_1080p_clip_keeps_memory_bounded_by_the_output(tmp_path):
    path = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=1920x1080:r=25", "-frames:v", "400", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    root = Path(__file__).resolve().parents[1]  # this checkout's dreamrunner
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True,
                          check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    report = json.loads(done.stdout)
    assert report["total"] == 400 and report["shapes"] == [[9, 3, 60, 90], [9, 1080, 1920, 3]]
    # Every frame at full size would be 400 x 1920 x 1080 x 3 bytes = 2.4 GB (the loader once peaked at 5.2 GB).
    # The 9 kept frames are 56 MB at full size; decoder buffers come on top.
    assert report["clip"] - report["before"] < 300, report
    assert report["metrics"] - report["before"] < 300, report


def test_audio_only_and_undecodable_files_give_named_errors(tmp_path):
    audio = audio_only_mp4(tmp_path / "voice.mp4")
    for read in (probe_video, count_frames, read_video, sample_frames):
        with pytest.raises(NoVideoStreamError, match=r"voice\.mp4 has no video stream \(audio only\)"):
            read(audio)
    with pytest.raises(PriorDataError, match="voice.mp4") as error:
        load_video_clip(audio, 3, 16, 16, 8)
    assert isinstance(error.value.__cause__, NoVideoStreamError)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    for read in (probe_video, count_frames, read_video, sample_frames):
        with pytest.raises(VideoFileError, match="broken.mp4"):
            read(broken)
    with pytest.raises(VideoFileError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    # Retrieval leaves both out of a folder catalog, with the reason.
    for path in (audio, broken):
        path.with_suffix(".txt").write_text("a caption")
    skipped: list = []
    assert list(read_video_folder(tmp_path, skipped=skipped)) == []
    assert dict(skipped)["voice.mp4"].endswith("has no video stream (audio only)")


@pytest.mark.parametrize("display, size, rotation, mirrored", [
    (("-display_hflip",), (640, 360), 0, True),  # a front camera's mirror: was read rotated 180 degrees
    (("-display_vflip",), (640, 360), 0, True),
    (("-display_rotation", "180"), (640, 360), 180, False),
    (("-display_rotation", "90", "-display_hflip"), (360, 640), 270, True),
    (("-display_rotation", "270", "-display_hflip"), (360, 640), 90, True),
    (("-display_rotation", "90", "-display_vflip"), (360, 640), 90, True),
])
def test_mirrored_and_rotated_display_matrices_are_read_as_ffmpeg_shows_them(tmp_path, display, size, rotation,
                                                                            mirrored):
    path = rotated_clip(tmp_path / "clip.mp4", seconds=0.5, display=display)
    info = probe_video(path)
    assert ((info.width, info.height), info.rotation, info.mirrored) == (size, rotation, mirrored)
    frames = read_video(path)
    assert np.array_equal(frames, ffmpeg_frames(path, *size))
    assert np.array_equal(sample_frames(path, fps=8, max_side=640)[1][0], frames[0])


def test_the_same_frames_always_encode_to_the_same_file(tmp_path):
    """Reported: renders with the same seed differed from one to the next (max pixel difference 0/19/12) while the
    model gave identical frames: x264's lookahead read uninitialised memory. Heap churn between writes stands in
    for a render's allocations."""
    from dreamrunner.video_io import write_video

    rng = np.random.default_rng(0)
    frames = np.load(Path(__file__).parent / "fixtures" / "tiny_render_frames.npz")["frames"]  # a tiny-model render
    digests = set()
    for size in rng.integers(1_000, 300_000, 40):
        churn = [os.urandom(int(size) // (k + 1)) for k in range(20)]
        del churn
        write_video(tmp_path / "clip.mp4", frames, 8)
        digests.add((tmp_path / "clip.mp4").read_bytes())
    assert len(digests) == 1
