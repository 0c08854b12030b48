"""A clip catalog: records in SQLite plus a BM25 caption index, in one folder that can be appended to.

Layout of a catalog folder:
    catalog.sqlite   records (table `clips`, row i+1 = index document i) and metadata (table `meta`)
    index/           the bm25s caption index (memory-mapped when opened)

Appending writes the new records and marks the index stale; the next search (or `reindex()`) rebuilds
it. BM25 scores depend on corpus-wide statistics (document frequencies, mean caption length), so an
exact index cannot be patched in place: batch large appends.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..jobs import CancelToken, ProgressCallback
from .bm25 import CaptionIndex
from .importers import TABLE_SUFFIXES, read_table, read_video_folder
from .records import CatalogError, ClipRecord

DB_NAME = "catalog.sqlite"
INDEX_DIR = "index"
SCHEMA_VERSION = "1"
_COLUMNS = ("id", "caption", "source", "start", "end", "duration", "fps", "width", "height", "extra")
_SELECT = ", ".join(f'"{name}"' for name in _COLUMNS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    caption TEXT NOT NULL,
    source TEXT NOT NULL,
    start REAL, "end" REAL, duration REAL, fps REAL, width INTEGER, height INTEGER,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _row(record: ClipRecord) -> tuple:
    return (record.id, record.caption, record.source, record.start, record.end, record.duration, record.fps,
            record.width, record.height, json.dumps(record.extra, default=str))


def _record(row: tuple) -> ClipRecord:
    *fields, extra = row
    return ClipRecord(*fields, extra=json.loads(extra))


class ClipCatalog:
    """Captioned clips with BM25 search over their captions.

    `open(path)` takes a catalog folder, a table file (JSONL / JSON / CSV / Parquet, generic or InternVid
    layout, imported into memory) or a folder of captioned videos (imported into memory). `create(folder)`
    makes a new on-disk catalog. Relative sources resolve against `media_root`.
    """

    def __init__(self, connection: sqlite3.Connection, folder: Path | None, media_root: Path) -> None:
        self._db = connection
        self._lock = threading.Lock()  # one connection is shared by the UI's worker threads
        self.folder = folder
        self.media_root = media_root
        self._index: CaptionIndex | None = None
        self.import_skipped: list[tuple[str, str]] = []

    # ----- construction
    @classmethod
    def create(cls, folder: str | Path, media_root: str | Path | None = None) -> ClipCatalog:
        folder = Path(folder)
        if (folder / DB_NAME).exists():
            raise CatalogError(f"{folder} already holds a catalog; open it to append")
        folder.mkdir(parents=True, exist_ok=True)
        catalog = cls(cls._connect(folder / DB_NAME), folder, Path(media_root or folder).resolve())
        catalog._set_meta("version", SCHEMA_VERSION)
        catalog._set_meta("media_root", str(catalog.media_root))
        catalog._set_meta("indexed_rows", "0")
        return catalog

    @classmethod
    def in_memory(cls, records: Iterable[ClipRecord] = (), media_root: str | Path = ".") -> ClipCatalog:
        catalog = cls(cls._connect(":memory:"), None, Path(media_root).resolve())
        catalog._set_meta("indexed_rows", "0")
        catalog.append(records)
        return catalog

    @classmethod
    def open(cls, path: str | Path) -> ClipCatalog:
        path = Path(path)
        if not path.exists():
            raise CatalogError(f"{path} does not exist")
        if (path / DB_NAME).is_file():
            catalog = cls(cls._connect(path / DB_NAME), path, path)
            media_root = catalog._get_meta("media_root")
            catalog.media_root = Path(media_root) if media_root else path.resolve()
            return catalog
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            return cls.in_memory(read_table(path), media_root=path.parent)
        if path.is_dir():
            skipped: list[tuple[str, str]] = []
            catalog = cls.in_memory(read_video_folder(path, skipped=skipped), media_root=path)
            catalog.import_skipped = skipped
            if len(catalog) == 0:
                raise CatalogError(f"{path} holds no catalog and no captioned videos")
            return catalog
        raise CatalogError(f"{path} is neither a catalog folder, a catalog file ({', '.join(TABLE_SUFFIXES)}) "
                           "nor a folder of videos")

    @staticmethod
    def _connect(target: Path | str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(target), check_same_thread=False)
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise CatalogError(f"{target}: not a readable catalog database ({error})") from None
        return db

    def _get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        self._db.commit()

    # ----- records
    def __len__(self) -> int:
        # Rows are only ever appended, so the largest rowid is the count (and, unlike COUNT(*), costs
        # no scan of a 10M-row table on every search).
        with self._lock:
            return self._db.execute("SELECT MAX(rowid) FROM clips").fetchone()[0] or 0

    def append(self, records: Iterable[ClipRecord], skip_duplicates: bool = False,
               batch: int = 50_000) -> int:
        """Add records (streamed in batches); returns how many were added. Ids must be unique."""
        added = 0
        verb = "INSERT OR IGNORE" if skip_duplicates else "INSERT"
        sql = f"{verb} INTO clips (id, caption, source, start, \"end\", duration, fps, width, height, extra) " \
              f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        rows: list[tuple] = []
        with self._lock:
            try:
                for record in records:
                    rows.append(_row(record))
                    if len(rows) >= batch:
                        added += self._insert(sql, rows)
                if rows:
                    added += self._insert(sql, rows)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        if added:
            self._index = None
        return added

    def _insert(self, sql: str, rows: list[tuple]) -> int:
        before = self._db.total_changes
        try:
            self._db.executemany(sql, rows)
        except sqlite3.IntegrityError:
            ids = [row[0] for row in rows]
            known = {r[0] for r in self._db.execute(
                f"SELECT id FROM clips WHERE id IN ({','.join('?' * min(len(ids), 500))})", ids[:500])}
            duplicates = sorted(known) or sorted({i for i in ids if ids.count(i) > 1})
            raise CatalogError(f"duplicate clip ids: {', '.join(duplicates[:5])}"
                               f"{' ...' if len(duplicates) > 5 else ''} (pass skip_duplicates to keep the first)"
                               ) from None
        rows.clear()
        return self._db.total_changes - before

    def get(self, clip_id: str) -> ClipRecord:
        with self._lock:
            row = self._db.execute(f"SELECT {_SELECT} FROM clips WHERE id = ?",
                                   (clip_id,)).fetchone()
        if row is None:
            raise CatalogError(f"no clip with id {clip_id!r}")
        return _record(row)

    def records(self) -> Iterator[ClipRecord]:
        cursor = self._db.cursor()
        for row in cursor.execute(f"SELECT {_SELECT} FROM clips ORDER BY rowid"):
            yield _record(row)

    def _records_at(self, rowids: list[int]) -> dict[int, ClipRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, {_SELECT} FROM clips "
                f"WHERE rowid IN ({','.join('?' * len(rowids))})", rowids).fetchall()
        return {row[0]: _record(row[1:]) for row in rows}

    def resolve_source(self, record: ClipRecord) -> str:
        """An absolute local path, or the URL as given."""
        if record.is_remote:
            return record.source
        source = record.source.removeprefix("file://")
        path = Path(source)
        return str(path if path.is_absolute() else (self.media_root / path).resolve())

    @property
    def attribution(self) -> str:
        return self._get_meta("attribution") or ""

    def set_attribution(self, text: str) -> None:
        self._set_meta("attribution", text)

    # ----- index
    @property
    def index_is_stale(self) -> bool:
        return int(self._get_meta("indexed_rows") or 0) != len(self)

    def reindex(self, progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> None:
        """Rebuild the caption index over every record (and save it, for an on-disk catalog)."""
        count = len(self)
        if count == 0:
            raise CatalogError("the catalog is empty")
        with self._lock:
            rows = self._db.execute("SELECT COUNT(*) FROM clips").fetchone()[0]
        if rows != count:
            raise CatalogError("catalog rows are not contiguous; the index maps document i to row i+1")
        captions = (row[0] for row in self._db.cursor().execute("SELECT caption FROM clips ORDER BY rowid"))
        index = CaptionIndex.build(captions, total=count, progress=progress, cancel=cancel)
        if self.folder is not None:
            # Build beside the old index and swap, so an interrupted rebuild leaves the old one usable.
            target = self.folder / INDEX_DIR
            staging = Path(tempfile.mkdtemp(prefix=".index-", dir=self.folder))
            index.save(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            index = CaptionIndex.load(target)
        self._index = index
        self._set_meta("indexed_rows", str(count))

    def _ensure_index(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> CaptionIndex:
        if self._index is not None and not self.index_is_stale:
            return self._index
        if self.folder is not None and not self.index_is_stale and (self.folder / INDEX_DIR).is_dir():
            self._index = CaptionIndex.load(self.folder / INDEX_DIR)
            return self._index
        self.reindex(progress, cancel)
        return self._index

    def search(self, text: str, k: int = 100, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> list[tuple[ClipRecord, float]]:
        """The top-k records by BM25 score of their captions against `text`, best first."""
        index = self._ensure_index(progress, cancel)
        hits = index.search(text, k)
        if not hits:
            return []
        records = self._records_at([doc + 1 for doc, _ in hits])
        return [(records[doc + 1], score) for doc, score in hits]

    def close(self) -> None:
        self._db.close()
