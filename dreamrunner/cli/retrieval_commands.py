"""`dreamrunner retrieve` (motion -> ranked reference clips) and `dreamrunner catalog` (import, info, reindex)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from ..errors import DreamRunnerError
from .story_commands import SigintCancels


def register(subparsers: argparse._SubParsersAction) -> None:
    retrieve = subparsers.add_parser("retrieve", help="find reference clips for a motion", description=(
        "Rank a catalog's clips for a motion: BM25 over captions (plus MiniLM re-scoring when installed), "
        "attribute filters, tracking-based segments, CLIP re-ranking over sampled frames. Prints id, score "
        "and caption, best first; dropped clips and their reasons with --show-dropped."))
    retrieve.add_argument("--motion", required=True, help='the motion text, e.g. "ballroom dancing"')
    retrieve.add_argument("--catalog", help="catalog folder, catalog file (JSONL/JSON/CSV/Parquet, InternVid "
                          "layout too) or folder of captioned videos; default: the demo catalog in dreamrunner/assets/clips")
    retrieve.add_argument("--text-only", action="store_true", help="stop after the caption stages (no video)")
    retrieve.add_argument("--top", type=int, default=20, help="how many clips to keep (default 20)")
    retrieve.add_argument("--candidates", type=int, default=100, help="BM25 candidates (default 100)")
    retrieve.add_argument("--detector", default="hog", help="'hog' (people), 'motion' (moving subject), "
                          "'transformers:<model folder>', or 'none' to keep whole clips (default hog)")
    retrieve.add_argument("--clip-model", default="openai/clip-vit-base-patch32",
                          help="CLIP checkpoint (folder or cached hub id) for re-ranking; 'none' to skip")
    retrieve.add_argument("--no-dense", action="store_true", help="no sentence-embedding re-scoring")
    retrieve.add_argument("--min-duration", type=float, default=1.0, help="seconds (default 1)")
    retrieve.add_argument("--max-duration", type=float, help="seconds")
    retrieve.add_argument("--min-height", type=int, help="pixels")
    retrieve.add_argument("--out", help="cut the chosen clips into this folder at --fps")
    retrieve.add_argument("--fps", type=int, default=8, help="frame rate of cut clips (default 8, CogVideoX)")
    retrieve.add_argument("--show-dropped", action="store_true", help="also list dropped clips and why")
    retrieve.set_defaults(run=run_retrieve)

    catalog = subparsers.add_parser("catalog", help="build and inspect clip catalogs", description=(
        "Clip catalogs live in a folder (catalog.sqlite + a BM25 index). Import tables or video folders into "
        "one; importing into an existing catalog appends and rebuilds the index."))
    actions = catalog.add_subparsers(dest="action", metavar="ACTION", required=True)
    imports = actions.add_parser("import", help="import tables or video folders into a catalog folder")
    imports.add_argument("sources", nargs="+", help="JSONL/JSON/CSV/Parquet files (generic or InternVid layout) "
                         "or folders of videos with sidecar .txt captions")
    imports.add_argument("--into", required=True, help="catalog folder (created if missing)")
    imports.add_argument("--captions", help="for a video folder: a table of captions instead of sidecars")
    imports.add_argument("--skip-duplicates", action="store_true", help="keep the first record of a repeated id")
    imports.add_argument("--no-index", action="store_true", help="leave the index stale (built at first search)")
    imports.add_argument("--attribution", help="license / attribution text stored with the catalog")
    imports.set_defaults(run=run_import)
    info = actions.add_parser("info", help="size and index state of a catalog")
    info.add_argument("catalog")
    info.set_defaults(run=run_info)
    reindex = actions.add_parser("reindex", help="rebuild a catalog's BM25 index")
    reindex.add_argument("catalog")
    reindex.set_defaults(run=run_reindex)


def run_retrieve(args: argparse.Namespace) -> int:
    from ..retrieval import ClipCatalog, ClipFilter, RetrievalSettings, default_demo_catalog, retrieve_clips

    reporter = args.reporter
    catalog = ClipCatalog.open(args.catalog) if args.catalog else default_demo_catalog()
    for name, reason in catalog.import_skipped:
        reporter.warn(f"skipped {name}: {reason}")
    settings = RetrievalSettings(
        candidates=args.candidates, max_clips=args.top, text_only=args.text_only,
        detector=None if args.detector == "none" else args.detector,
        clip_model=None if args.clip_model == "none" else args.clip_model,
        dense_model=None if args.no_dense else "auto", output_dir=args.out, fps=args.fps,
        filters=ClipFilter(min_duration=args.min_duration, max_duration=args.max_duration,
                           min_height=args.min_height))
    with SigintCancels() as cancel:
        result = retrieve_clips(args.motion, catalog, settings, progress=reporter.progress, cancel=cancel)
    for warning in result.warnings:
        reporter.warn(warning)
    for clip in result.clips:
        span = f"\t[{clip.start:.2f}-{clip.end:.2f} s]" if clip.start is not None and clip.end is not None else ""
        path = f"\t{clip.path}" if clip.path else ""
        reporter.result(f"{clip.id}\t{clip.score:.4f}\t{clip.caption}{span}{path}", id=clip.id, score=clip.score,
                        caption=clip.caption, start=clip.start, end=clip.end, path=clip.path)
    if args.show_dropped:
        for dropped in result.dropped:
            reporter.result(f"dropped {dropped.id} ({dropped.stage}): {dropped.reason}", dropped=dropped.id,
                            stage=dropped.stage, reason=dropped.reason)
    if not result.clips:
        raise DreamRunnerError(f"no clip found for {args.motion!r}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..retrieval import ClipCatalog, read_table, read_video_folder

    folder = Path(args.into)
    catalog = ClipCatalog.open(folder) if (folder / "catalog.sqlite").is_file() else ClipCatalog.create(folder)
    total = 0
    for source in map(Path, args.sources):
        if source.is_dir():
            skipped: list[tuple[str, str]] = []
            media_root = catalog.media_root
            if source.resolve() != media_root:
                # Video paths are stored relative to the source folder: re-root them under the catalog's.
                records = (_rebase(r, source, media_root) for r in read_video_folder(source, args.captions, skipped))
            else:
                records = read_video_folder(source, args.captions, skipped)
            added = catalog.append(records, skip_duplicates=args.skip_duplicates)
            for name, reason in skipped:
                args.reporter.warn(f"skipped {source / name}: {reason}")
        elif source.is_file():
            records = (_rebase(r, source.parent, catalog.media_root) for r in read_table(source))
            added = catalog.append(records, skip_duplicates=args.skip_duplicates)
        else:
            raise DreamRunnerError(f"{source} does not exist")
        args.reporter.result(f"{source}: {added:,} clips added", source=str(source), added=added)
        total += added
    if args.attribution:
        catalog.set_attribution(args.attribution)
    if not args.no_index:
        catalog.reindex(progress=args.reporter.progress)
    args.reporter.result(f"{folder}: {len(catalog):,} clips{' (index stale)' if catalog.index_is_stale else ', index up to date'}",
                         catalog=str(folder), clips=len(catalog), index_stale=catalog.index_is_stale)
    return 0


def _rebase(record, base: Path, media_root: Path):
    """Relative local sources are relative to the file or folder they came from; store them from media_root."""
    if record.is_remote or Path(record.source).is_absolute():
        return record
    absolute = (base / record.source).resolve()
    return replace(record, source=os.path.relpath(absolute, media_root))


def run_info(args: argparse.Namespace) -> int:
    from ..retrieval import ClipCatalog

    catalog = ClipCatalog.open(args.catalog)
    args.reporter.result(f"{len(catalog):,} clips; index {'stale' if catalog.index_is_stale else 'up to date'}; "
                         f"media root {catalog.media_root}" + (f"\nattribution: {catalog.attribution}"
                                                               if catalog.attribution else ""),
                         clips=len(catalog), index_stale=catalog.index_is_stale, media_root=str(catalog.media_root),
                         attribution=catalog.attribution)
    return 0


def run_reindex(args: argparse.Namespace) -> int:
    from ..retrieval import ClipCatalog

    catalog = ClipCatalog.open(args.catalog)
    catalog.reindex(progress=args.reporter.progress)
    args.reporter.result(f"indexed {len(catalog):,} clips", clips=len(catalog))
    return 0
