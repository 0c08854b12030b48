"""Readers that turn catalog files (JSONL, JSON, CSV, Parquet; InternVid's layout) and video folders into records.

Every reader is a generator so a 10M-line InternVid file streams into a catalog without being held in memory.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..files import TextFileError, open_text_file, read_text_file
from .records import CatalogError, ClipRecord, UnreadableVideo

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

# Column names accepted for each record field (first match wins); everything else goes to `extra`.
ALIASES = {
    "id": ("id", "clip_id", "video_id", "videoid"),
    "caption": ("caption", "text", "description", "title"),
    "source": ("source", "path", "video", "video_path", "file", "url", "video_url"),
    "start": ("start", "start_sec", "start_time", "start_timestamp"),
    "end": ("end", "end_sec", "end_time", "end_timestamp"),
    "duration": ("duration", "duration_sec", "length"),
    "fps": ("fps", "frame_rate"),
    "width": ("width", "w"),
    "height": ("height", "h"),
}

# InternVid's published metadata (InternVid-10M-FLT, -Full, -Aesthetics-18M): one JSON object per line with
# YoutubeID, Start_timestamp / End_timestamp as "HH:MM:SS.mmm", Caption, and scores such as UMT_Score and
# Aesthetic_Score (kept in `extra`).
INTERNVID_KEYS = ("YoutubeID", "Start_timestamp", "End_timestamp", "Caption")

_TIMESTAMP = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def parse_time(value: object, where: str) -> float | None:
    """Seconds from a number or an "[HH:]MM:SS(.mmm)" timestamp; None for empty values."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    match = _TIMESTAMP.match(text)
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        return float(text)
    except ValueError:
        raise CatalogError(f"{where}: {value!r} is not a time (seconds or HH:MM:SS.mmm)") from None


def _number(value: object, where: str, name: str, kind: type = float) -> float | int | None:
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: {name} = {value!r} is not a number") from None


def is_internvid_row(row: dict) -> bool:
    return all(key in row for key in INTERNVID_KEYS)


def record_from_internvid(row: dict, where: str) -> ClipRecord:
    video = str(row["YoutubeID"])
    start = parse_time(row["Start_timestamp"], where)
    end = parse_time(row["End_timestamp"], where)
    extra = {key: value for key, value in row.items() if key not in INTERNVID_KEYS}
    extra["youtube_id"] = video
    return ClipRecord(
        id=f"{video}_{row['Start_timestamp']}_{row['End_timestamp']}",
        caption=str(row["Caption"]),
        source=f"https://www.youtube.com/watch?v={video}",
        start=start,
        end=end,
        extra=extra,
    )


def record_from_row(row: dict, where: str, fallback_id: str) -> ClipRecord:
    """A record from a generic row (column aliases above) or an InternVid row."""
    if is_internvid_row(row):
        return record_from_internvid(row, where)
    lowered = {str(key).lower(): key for key in row}
    fields: dict[str, object] = {}
    used = set()
    for name, aliases in ALIASES.items():
        for alias in aliases:
            key = lowered.get(alias)
            if key is not None and row[key] not in (None, ""):
                fields[name] = row[key]
                used.add(key)
                break
    if "caption" not in fields:
        raise CatalogError(f"{where}: no caption (expected a column named one of {ALIASES['caption']})")
    if "source" not in fields:
        raise CatalogError(f"{where}: no video source (expected a column named one of {ALIASES['source']})")
    extra = {key: value for key, value in row.items() if key not in used and value not in (None, "")}
    return ClipRecord(
        id=str(fields.get("id", fallback_id)),
        caption=str(fields["caption"]),
        source=str(fields["source"]),
        start=parse_time(fields.get("start"), where),
        end=parse_time(fields.get("end"), where),
        duration=_number(fields.get("duration"), where, "duration"),
        fps=_number(fields.get("fps"), where, "fps"),
        width=_number(fields.get("width"), where, "width", int),
        height=_number(fields.get("height"), where, "height", int),
        extra=extra,
    )


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open_text_file(path) as handle:  # lines end at \n (or \r\n, \r) only, never at U+2028
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CatalogError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise CatalogError(f"{path}:{number}: expected a JSON object per line")
                yield f"{path}:{number}", row
    elif suffix == ".json":
        try:
            data = json.loads(read_text_file(path))
        except json.JSONDecodeError as error:
            raise CatalogError(f"{path}: not valid JSON ({error.msg})") from None
        rows = data.get("clips") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CatalogError(f"{path}: expected a list of clip objects or {{\"clips\": [...]}}")
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise CatalogError(f"{path}: clip {number} is not an object")
            yield f"{path}: clip {number}", row
    elif suffix == ".csv":
        with open_text_file(path) as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{number}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises several types for a bad file
            raise CatalogError(f"{path}: not a readable Parquet file ({error})") from None
        number = 0
        for batch in parquet.iter_batches(batch_size=65536):
            for row in batch.to_pylist():
                number += 1
                yield f"{path}: row {number}", row
    else:
        raise CatalogError(f"{path}: unknown catalog format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")


def read_table(path: str | Path) -> Iterator[ClipRecord]:
    """Records from a JSONL / JSON / CSV / Parquet file, in the generic or InternVid layout."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path} does not exist")
    for index, (where, row) in enumerate(_rows(path)):
        yield record_from_row(row, where, fallback_id=f"{path.stem}-{index:08d}")


def read_video_folder(folder: str | Path, captions: str | Path | None = None,
                      skipped: list[tuple[str, str]] | None = None) -> Iterator[ClipRecord]:
    """Records for the videos in a folder, captioned by sidecar text files or a captions table.

    A video `dance.mp4` takes its caption from `dance.txt` beside it, or from a row of `captions` (a
    JSONL / CSV / Parquet table whose source column names the file relative to the folder). Videos that
    have no caption or cannot be opened are left out and listed in `skipped` as (file, reason).
    """
    from .video import probe

    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogError(f"{folder} is not a folder")
    by_file: dict[str, ClipRecord] = {}
    if captions is not None:
        for record in read_table(captions):
            by_file[Path(record.source).as_posix()] = record
    skipped = skipped if skipped is not None else []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES):
        relative = path.relative_to(folder).as_posix()
        listed = by_file.get(relative)
        sidecar = path.with_suffix(".txt")
        if listed is None and not sidecar.is_file():
            skipped.append((relative, "no caption (no sidecar .txt and not in the captions table)"))
            continue
        try:
            info = probe(path)
        except UnreadableVideo as error:
            skipped.append((relative, str(error)))
            continue
        if listed is not None:
            base = listed
        else:
            try:
                caption = read_text_file(sidecar).strip()
            except TextFileError as error:
                skipped.append((relative, str(error)))
                continue
            if not caption:
                skipped.append((relative, f"empty caption in {sidecar.name}"))
                continue
            base = ClipRecord(id=Path(relative).with_suffix("").as_posix(), caption=caption, source=relative)
        yield ClipRecord(
            id=base.id, caption=base.caption, source=relative, start=base.start, end=base.end,
            duration=base.duration if base.duration is not None else info.duration,
            fps=base.fps or info.fps, width=base.width or info.width, height=base.height or info.height,
            extra=base.extra,
        )
