"""The story video: every scene's chosen render (or its animatic) stitched into one mp4, with subtitles.

Writes, beside each other:
    story.mp4    the scenes in order (H.264, the story's fps and frame size), optionally crossfaded, with the
                 narration as a subtitle track (mov_text) and its index at the front (faststart)
    story.srt    one cue per narrated scene, timed on the scene boundaries of story.mp4
    story.vtt    the same cues as WebVTT (what browsers, the editor's player included, read)
    story.json   the manifest: what went into every second of the video (source, seed, backend, noise)

With a crossfade of k frames, consecutive scenes overlap by k frames (blended linearly) and the cue
boundary sits in the middle of the overlap. Narration can also be burned in with ffmpeg's `ass` filter
(libass, from imageio-ffmpeg's ffmpeg build) in the overlay's faces. Scenes rendered from random weights (the
tiny backend) carry the noise label on their frames and `is_noise` in the manifest.

Everything is written in a temporary folder beside the output and renamed over the previous export only
once all of it is complete, so a failed or cancelled export leaves the previous one as it was. ffmpeg runs
in that folder and its filter graph names only the folder's own fixed file names, so no user path (quotes,
colons, commas) is ever parsed as filter syntax.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
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
from .rendering.overlay import FONT_FAMILY, family_name, font_chain, font_runs, label_frames, libass_size_factor
from .story import RenderResult, Scene, Story, VideoSettings
from .subtitles import Cue, cue_text, format_ass, format_srt, format_webvtt
from .video_io import VideoWriter, read_video


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
    # The priors the render was made with: id, scale, kind, target, LoRA file and what it learned from.
    priors: list[dict] = field(default_factory=list)


@dataclass
class ExportResult:
    video: Path
    subtitles: Path  # .srt
    webvtt: Path
    manifest: Path
    fps: int
    width: int
    height: int
    num_frames: int
    scenes: list[ExportedScene] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def scene_frames(project: Project, scene: Scene, prefer: str = "render",
                 subtitles_below: bool = False) -> tuple[np.ndarray, dict]:
    """The frames export uses for a scene (its chosen render, else its animatic) and where they came from.
    `subtitles_below`: the narration is burned in as subtitles, so an animatic does not draw it too."""
    video = project.story.settings.video
    if prefer == "render" and scene.chosen_render is not None:
        render = scene.renders[scene.chosen_render]
        frames = read_video(project.resolve(render.path))
        if frames.shape[1:3] != (video.height, video.width):
            frames = np.stack([cv2.resize(f, (video.width, video.height), interpolation=cv2.INTER_AREA) for f in frames])
        if render.is_noise:
            frames = label_frames(frames, NOISE_LABEL)
        return frames, {"source": "render", "path": render.path, "seed": render.seed, "backend": render.backend,
                        "cache_key": render.cache_key, "is_noise": render.is_noise,
                        "priors": _render_priors(project.story, render)}
    return render_animatic(scene, video, subtitles_below), {"source": "animatic", "path": None, "seed": None, "backend": None,
                                            "cache_key": None, "is_noise": False, "priors": []}


def _render_priors(story: Story, render: RenderResult) -> list[dict]:
    known = {prior.id: prior for prior in story.priors}
    used = []
    for binding in render.priors:
        entry = {"id": binding.prior_id, "scale": binding.scale}
        prior = known.get(binding.prior_id)
        if prior is not None:
            entry.update(kind=prior.kind, target=prior.target, path=prior.path,
                         sources=[source.get("path") for source in prior.card.get("sources", [])])
        used.append(entry)
    return used


def export_is_current(project: Project, out: str | os.PathLike, *, crossfade_frames: int = 0,
                      burn_subtitles: bool = False, prefer: str = "render") -> bool:
    """True when `out` and its manifest are there and the manifest lists what an export would use now: the
    same clip (path, seed, cache key) or animatic for every scene, the same narration, geometry and options."""
    out = Path(out)
    try:
        manifest = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (out.is_file() and out.with_suffix(".srt").is_file() and out.with_suffix(".vtt").is_file()):
        return False
    video = project.story.settings.video
    wanted = []
    for scene in project.story.scenes:
        use_render = prefer == "render" and scene.chosen_render is not None
        render = scene.renders[scene.chosen_render] if use_render else None
        wanted.append([scene.id, "render" if render else "animatic", render.path if render else None,
                       render.seed if render else None, render.cache_key if render else None, scene.narration])
    try:
        listed = [[s["scene_id"], s["source"], s["path"], s["seed"], s["cache_key"], s["narration"]]
                  for s in manifest["scenes"]]
        same_video = (manifest["video"]["fps"], manifest["video"]["width"], manifest["video"]["height"],
                      manifest["video"]["crossfade_frames"]) == (video.fps, video.width, video.height, crossfade_frames)
        burned = manifest["subtitles"]["burned_in"]
    except (KeyError, TypeError):
        return False
    has_cues = any(cue_text(scene.narration) for scene in project.story.scenes)
    return listed == wanted and same_video and burned == (burn_subtitles and has_cues)


def _finish_video(work: Path, cues: list[Cue], video: VideoSettings, burn: bool) -> None:
    """frames.mp4 in `work` to story.mp4: the cues as a mov_text track (and drawn on the frames when `burn`),
    with the index (moov) before the media data so players start before the whole file is there."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-i", "frames.mp4"]
    if cues:
        (work / "track.ass").write_text(format_ass(cues, video.width, video.height, FONT_FAMILY, "ffmpeg"),
                                        encoding="utf-8")
        # A burned-in video shows the track only on request, so the text is not drawn twice.
        command += ["-i", "track.ass", "-map", "0:v", "-map", "1:s", "-c:s", "mov_text",
                    "-disposition:s:0", "0" if burn else "default"]
    if burn and cues:
        # The overlay's faces and per-character choice (font_runs), so burned text draws as the animatic's.
        faces = [(family_name(face), libass_size_factor(face)) for face in font_chain()]
        runs = (lambda text: [(*faces[face], run) for face, run in font_runs(text)]) if faces else None
        (work / "burn.ass").write_text(format_ass(cues, video.width, video.height, FONT_FAMILY, "libass", runs),
                                       encoding="utf-8")
        (work / "fonts").mkdir()
        for path in dict.fromkeys(path for path, _ in font_chain()):
            (work / "fonts" / path.name).symlink_to(path)
        command += ["-vf", "ass=burn.ass:fontsdir=fonts", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                    "-pix_fmt", "yuv420p"]
    else:
        command += ["-c:v", "copy"]
    command += ["-movflags", "+faststart", "story.mp4"]
    try:
        result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    except OSError as error:
        raise ExportError(f"cannot run ffmpeg ({command[0]}): {error}") from None
    if result.returncode != 0:
        raise ExportError(f"ffmpeg could not write the story video (exit {result.returncode}): "
                          f"{result.stderr.strip()[-500:]}")


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
    """Stitch the story into `out` (.mp4) and write `out`.srt, `out`.vtt and `out`.json beside it.

    prefer="render" uses each scene's chosen render and falls back to its animatic; "animatic" uses
    animatics only (the offline default before anything is rendered). Raises ExportError (ffmpeg failed,
    a crossfade longer than a scene, ...) or jobs.Cancelled; either way the previous export's files are
    left as they were.
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
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as folder:
        work = Path(folder)
        burned = burn_subtitles and any(cue_text(scene.narration) for scene in story.scenes)
        exported, written = _write_frames(project, work / "frames.mp4", crossfade_frames, prefer, burned, progress,
                                          cancel)
        # Cue boundaries: scene starts, moved to the middle of each crossfade.
        half = crossfade_frames / 2
        for i, scene in enumerate(exported):
            scene.subtitle_start = 0.0 if i == 0 else (scene.start_frame + half) / fps
            scene.subtitle_end = written / fps if i == len(exported) - 1 else (exported[i + 1].start_frame + half) / fps
        cues = [Cue(s.subtitle_start, s.subtitle_end, cue_text(s.narration)) for s in exported if cue_text(s.narration)]
        cancel.check()
        _finish_video(work, cues, video, burned)
        (work / "story.srt").write_text(format_srt(cues), encoding="utf-8")
        (work / "story.vtt").write_text(format_webvtt(cues), encoding="utf-8")
        result = ExportResult(video=out, subtitles=out.with_suffix(".srt"), webvtt=out.with_suffix(".vtt"),
                              manifest=out.with_suffix(".json"), fps=fps, width=video.width, height=video.height,
                              num_frames=written, scenes=exported)
        noise = any(s.is_noise for s in exported)
        manifest = {
            "title": story.title,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "video": {"path": out.name, "fps": fps, "width": video.width, "height": video.height,
                      "num_frames": written, "duration_s": result.duration, "crossfade_frames": crossfade_frames,
                      "subtitle_track": "mov_text" if cues else None, "faststart": True},
            "subtitles": {"path": result.subtitles.name, "webvtt": result.webvtt.name, "burned_in": burned},
            "contains_noise": noise,
            "noise_label": NOISE_LABEL if noise else None,
            "scenes": [asdict(s) for s in exported],
        }
        (work / "story.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        # Every file is complete: now replace the previous export's, the video last.
        for name, target in (("story.srt", result.subtitles), ("story.vtt", result.webvtt),
                             ("story.json", result.manifest), ("story.mp4", out)):
            os.replace(work / name, target)
    return result


def _write_frames(project: Project, path: Path, crossfade_frames: int, prefer: str, subtitles_below: bool,
                  progress: ProgressCallback | None, cancel: CancelToken) -> tuple[list[ExportedScene], int]:
    """Every scene's frames, crossfaded, into `path`; the scenes as exported (cue times not yet set) and the
    number of frames written."""
    story = project.story
    video = story.settings.video
    exported: list[ExportedScene] = []
    tail: np.ndarray | None = None  # the previous scene's last `crossfade_frames`, not yet written
    written = 0
    with VideoWriter(path, video.fps, video.width, video.height) as writer:
        for number, scene in enumerate(story.scenes):
            cancel.check()
            frames, source = scene_frames(project, scene, prefer, subtitles_below)
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
    return exported, written
