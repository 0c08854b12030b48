"""The story video: every scene's chosen render (or its animatic) stitched into one mp4, with subtitles.

Writes, beside each other:
    story.mp4    the scenes in order (H.264, the story's fps and frame size), optionally crossfaded
    story.srt    one cue per narrated scene, timed on the scene boundaries of story.mp4
    story.json   the manifest: what went into every second of the video (source, seed, backend, noise)

With a crossfade of k frames, consecutive scenes overlap by k frames (blended linearly) and the cue
boundary sits in the middle of the overlap. Narration can also be burned in with ffmpeg's subtitles
filter (libass, from imageio-ffmpeg's ffmpeg build). Scenes rendered from random weights (the tiny
backend) carry the noise label on their frames and `is_noise` in the manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from .backends import NOISE_LABEL
from .errors import DreamRunnerError
from .jobs import CancelToken, Progress, ProgressCallback
from .project import Project
from .rendering.animatic import render_animatic
from .rendering.overlay import label_frames
from .video_io import VideoWriter, read_video
from .story import Scene, Story


class ExportError(DreamRunnerError):
    pass


@dataclass
class ExportedScene:
    scene_id: str
    source: str  # "render" or "animatic"
    path: str | None  # project-relative clip, None for an animatic
    seed: int | None
    backend: str | None
    cache_key: str | None
    is_noise: bool
    start_frame: int  # first frame of this scene in the story video
    num_frames: int
    subtitle_start: float  # seconds
    subtitle_end: float
    narration: str


@dataclass
class ExportResult:
    video: Path
    subtitles: Path
    manifest: Path
    fps: int
    width: int
    height: int
    num_frames: int
    scenes: list[ExportedScene] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def scene_frames(project: Project, scene: Scene, prefer: str = "render") -> tuple[np.ndarray, dict]:
    """The frames export uses for a scene (its chosen render, else its animatic) and where they came from."""
    video = project.story.settings.video
    if prefer == "render" and scene.chosen_render is not None:
        render = scene.renders[scene.chosen_render]
        frames = read_video(project.resolve(render.path))
        if frames.shape[1:3] != (video.height, video.width):
            frames = np.stack([cv2.resize(f, (video.width, video.height), interpolation=cv2.INTER_AREA) for f in frames])
        if render.is_noise:
            frames = label_frames(frames, NOISE_LABEL)
        return frames, {"source": "render", "path": render.path, "seed": render.seed, "backend": render.backend,
                        "cache_key": render.cache_key, "is_noise": render.is_noise}
    return render_animatic(scene, video), {"source": "animatic", "path": None, "seed": None, "backend": None,
                                            "cache_key": None, "is_noise": False}


def srt_time(seconds: float) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def format_srt(scenes: list[ExportedScene]) -> str:
    cues = []
    for scene in scenes:
        text = " ".join(scene.narration.split())
        if text:
            cues.append(f"{len(cues) + 1}\n{srt_time(scene.subtitle_start)} --> {srt_time(scene.subtitle_end)}\n{text}\n")
    return "\n".join(cues)


def _burn_subtitles(video: Path, subtitles: Path) -> None:
    """Re-encode `video` in place with the subtitles drawn on it (ffmpeg's libass filter)."""
    import imageio_ffmpeg

    temporary = video.with_name(f".{video.stem}.burn.mp4")
    # The filter's argument is parsed by ffmpeg's filter-graph syntax: escape what it treats specially.
    escaped = str(subtitles.resolve()).replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video),
               "-vf", f"subtitles='{escaped}'", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
               "-pix_fmt", "yuv420p", str(temporary)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise ExportError(f"burning subtitles into {video.name} failed: {result.stderr.strip()[-500:]}")
    os.replace(temporary, video)


def export_story(
    project: Project,
    out: str | os.PathLike,
    *,
    crossfade_frames: int = 0,
    burn_subtitles: bool = False,
    prefer: str = "render",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExportResult:
    """Stitch the story into `out` (.mp4) and write `out`.srt and `out`.json beside it.

    prefer="render" uses each scene's chosen render and falls back to its animatic; "animatic" uses
    animatics only (the offline default before anything is rendered).
    """
    story: Story = project.story
    if not story.scenes:
        raise ExportError("the story has no scenes to export")
    if prefer not in ("render", "animatic"):
        raise ExportError(f"prefer must be 'render' or 'animatic', got {prefer!r}")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ExportError(f"the output must be an .mp4 file, got {out.name}")
    video = story.settings.video
    fps = video.fps
    if crossfade_frames < 0:
        raise ExportError("crossfade_frames cannot be negative")
    cancel = cancel or CancelToken()
    exported: list[ExportedScene] = []
    tail: np.ndarray | None = None  # the previous scene's last `crossfade_frames`, not yet written
    written = 0
    with VideoWriter(out, fps, video.width, video.height) as writer:
        for number, scene in enumerate(story.scenes):
            cancel.check()
            frames, source = scene_frames(project, scene, prefer)
            if crossfade_frames and len(frames) <= crossfade_frames:
                raise ExportError(f"scene {number + 1} ({scene.id!r}) has {len(frames)} frames, too few for a "
                                  f"{crossfade_frames}-frame crossfade")
            start = written
            if tail is not None:
                weights = (np.arange(1, crossfade_frames + 1) / (crossfade_frames + 1))[:, None, None, None]
                frames = frames.copy()
                frames[:crossfade_frames] = np.round(tail * (1 - weights) + frames[:crossfade_frames] * weights).astype(np.uint8)
            last = number == len(story.scenes) - 1
            keep = 0 if last or not crossfade_frames else crossfade_frames
            for frame in frames[: len(frames) - keep]:
                writer.write(frame)
            written += len(frames) - keep
            tail = frames[len(frames) - keep:] if keep else None
            exported.append(ExportedScene(scene_id=scene.id, start_frame=start, num_frames=len(frames),
                                          subtitle_start=0.0, subtitle_end=0.0, narration=scene.narration, **source))
            if progress:
                progress(Progress("export", number + 1, len(story.scenes), f"scene {number + 1} ({source['source']})"))
    # Cue boundaries: scene starts, moved to the middle of each crossfade.
    half = crossfade_frames / 2
    for i, scene in enumerate(exported):
        scene.subtitle_start = 0.0 if i == 0 else (scene.start_frame + half) / fps
        scene.subtitle_end = written / fps if i == len(exported) - 1 else (exported[i + 1].start_frame + half) / fps
    subtitles = out.with_suffix(".srt")
    subtitles.write_text(format_srt(exported), encoding="utf-8")
    if burn_subtitles and subtitles.read_text(encoding="utf-8").strip():
        _burn_subtitles(out, subtitles)
    result = ExportResult(video=out, subtitles=subtitles, manifest=out.with_suffix(".json"), fps=fps,
                          width=video.width, height=video.height, num_frames=written, scenes=exported)
    manifest = {
        "title": story.title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "video": {"path": out.name, "fps": fps, "width": video.width, "height": video.height,
                  "num_frames": written, "duration_s": result.duration, "crossfade_frames": crossfade_frames},
        "subtitles": {"path": subtitles.name, "burned_in": burn_subtitles},
        "contains_noise": any(s.is_noise for s in exported),
        "noise_label": NOISE_LABEL if any(s.is_noise for s in exported) else None,
        "scenes": [asdict(s) for s in exported],
    }
    result.manifest.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
