"""`dreamrunner eval`: score a project's chosen renders (or a folder of videos) with the paper's story metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..project import Project
from .story_commands import SigintCancels


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="score renders with the paper's story metrics", description=(
        "Score each scene's chosen render of a project, or a folder of videos described by a JSON file, on "
        "character consistency (CLIP, DINO), full-text and fine-grained text alignment (CLIP, ViCLIP), transition "
        "smoothness (DINO) and VBench-style visual quality. Prints a table in the layout of the DreamRunner "
        "paper's Table 1 and writes metrics.json and metrics.csv. Columns whose model cannot be loaded are "
        "skipped and the reason printed; no number is ever filled in for them."))
    parser.add_argument("project", nargs="?", help="project folder (scores each scene's chosen render)")
    parser.add_argument("--videos", metavar="DIR", help="score the videos of this folder instead of a project")
    parser.add_argument("--texts", metavar="FILE", help="JSON describing the videos of --videos (docs/metrics.md)")
    parser.add_argument("--out", metavar="DIR", help="folder for metrics.json and metrics.csv "
                        "(default: PROJECT/eval, or DIR/eval with --videos)")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="score N frames per video, spread evenly (default: every decoded frame)")
    parser.add_argument("--batch-size", type=int, help="images per encoder batch (default 16)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    # Model defaults live in dreamrunner.metrics (importing it here would load torch for every command).
    parser.add_argument("--clip-model", help="CLIP model id or folder (default: the paper's ViT-L/14 at 336 px)")
    parser.add_argument("--dino-model", help="DINOv2 model id or folder (default: facebook/dinov2-base)")
    parser.add_argument("--aesthetic-head", metavar="PATH", help="LAION aesthetic predictor head (.pth/.safetensors)")
    parser.add_argument("--aesthetic-clip-model", help="CLIP model under the aesthetic head (default: ViT-L/14, 224 px)")
    parser.add_argument("--viclip", metavar="MODULE:FUNCTION", help="hook returning a ViCLIP video-text encoder")
    parser.add_argument("--imaging-quality", metavar="MODULE:FUNCTION", help="hook returning an imaging-quality scorer")
    parser.add_argument("--interpolator", metavar="MODULE:FUNCTION", help="hook returning a frame interpolator")
    # --offline (a global option): models from local folders and the Hugging Face cache only.
    parser.add_argument("--tiny-encoders", action="store_true",
                        help="random-weight tiny encoders: checks the plumbing, the numbers measure nothing")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..metrics import (
        EncoderSpec,
        EvalConfig,
        evaluate,
        load_encoders,
        load_hooks,
        samples_from_folder,
        samples_from_project,
        tiny_encoders,
    )

    if (args.project is None) == (args.videos is None):
        raise UsageError("give either a PROJECT folder or --videos DIR --texts FILE.json")
    if args.videos is not None and args.texts is None:
        raise UsageError("--videos needs --texts FILE.json describing the videos")
    if args.texts is not None and args.videos is None:
        raise UsageError("--texts goes with --videos DIR")
    for option, value in (("--max-frames", args.max_frames), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be at least 1, got {value}")
    if args.project is not None:
        project = Project.load(args.project)
        samples, notes = samples_from_project(project)
        source, out = str(project.folder), Path(args.out) if args.out else project.folder / "eval"
    else:
        samples, notes = samples_from_folder(args.videos, args.texts)
        source, out = str(args.videos), Path(args.out) if args.out else Path(args.videos) / "eval"

    chosen = {name: value for name, value in (
        ("clip_model", args.clip_model), ("dino_model", args.dino_model),
        ("aesthetic_clip_model", args.aesthetic_clip_model), ("batch_size", args.batch_size)) if value is not None}
    spec = EncoderSpec(**chosen, aesthetic_head=args.aesthetic_head, viclip=args.viclip,
                       imaging_quality=args.imaging_quality, interpolator=args.interpolator, device=args.device,
                       local_files_only=args.offline)
    if args.tiny_encoders:
        encoders = load_hooks(spec, tiny_encoders(device=spec.device, batch_size=spec.batch_size))
    else:
        args.reporter.note("loading models...")
        encoders = load_encoders(spec)
    with SigintCancels() as cancel:
        report = evaluate(samples, encoders, EvalConfig(max_frames=args.max_frames), source=source,
                          progress=args.reporter.progress, cancel=cancel)
    report.notes.extend(notes)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = report.write_json(out / "metrics.json"), report.write_csv(out / "metrics.csv")
    args.reporter.result(report.format_table() + f"\nwrote {json_path} and {csv_path}", metrics=str(json_path),
                         table=str(csv_path))
    return 0
