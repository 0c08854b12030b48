"""Catalog import (JSONL / CSV / Parquet / InternVid / video folders), persistence, appends, BM25 ranking."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dreamrunner.retrieval import CatalogError, ClipCatalog, ClipRecord, read_table
from dreamrunner.retrieval.bm25 import CaptionIndex
from dreamrunner.retrieval.synthetic import render_figure_clip

INTERNVID_ROWS = [
    {"YoutubeID": "HdYoyzCSWyw", "Start_timestamp": "00:03:10.567", "End_timestamp": "00:03:11.200",
     "Caption": "woman using a computer mouse and keyboard", "Aesthetic_Score": 4.589844, "UMT_Score": 0.397949},
    {"YoutubeID": "mG08XO_MagE", "Start_timestamp": "00:01:16.800", "End_timestamp": "00:01:19.067",
     "Caption": "a man in a suit is dancing on stage", "Aesthetic_Score": 6.863281, "UMT_Score": 0.411377},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_internvid_layout_is_read_with_times_scores_and_youtube_source(tmp_path):
    records = list(read_table(write_jsonl(tmp_path / "InternVid-10M-flt.jsonl", INTERNVID_ROWS)))
    first = records[0]
    assert first.id == "HdYoyzCSWyw_00:03:10.567_00:03:11.200"
    assert first.source == "https://www.youtube.com/watch?v=HdYoyzCSWyw" and first.is_remote
    assert first.start == pytest.approx(190.567) and first.end == pytest.approx(191.2)
    assert first.duration == pytest.approx(0.633)
    assert first.extra["UMT_Score"] == pytest.approx(0.397949) and first.extra["Aesthetic_Score"] > 4
    assert records[1].caption == "a man in a suit is dancing on stage"


def test_csv_and_parquet_generic_layouts_with_aliases_and_extra_fields(tmp_path):
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("clip_id,text,path,start,end,fps,width,height,license\n"
                        "a,a dog runs,a.mp4,0,2.5,25,640,360,CC0\n", encoding="utf-8")
    (record,) = read_table(csv_path)
    assert (record.id, record.caption, record.source, record.duration, record.fps, record.width) == \
        ("a", "a dog runs", "a.mp4", 2.5, 25.0, 640)
    assert record.extra == {"license": "CC0"}
    table = pa.table({"caption": ["a cat jumps", "two people waltz"], "url": ["http://x/1.mp4", "http://x/2.mp4"],
                      "duration": [3.0, 8.0]})
    pq.write_table(table, tmp_path / "clips.parquet")
    records = list(read_table(tmp_path / "clips.parquet"))
    assert [r.caption for r in records] == ["a cat jumps", "two people waltz"]
    assert records[1].duration == 8.0 and records[0].id == "clips-00000000"


@pytest.mark.parametrize("content, message", [
    ('{"caption": "x"}\n', "no video source"),
    ('{"source": "a.mp4"}\n', "no caption"),
    ('not json\n', "not valid JSON"),
    ('{"caption": "x", "source": "a.mp4", "start": "later"}\n', "not a time"),
    ('{"caption": "x", "source": "a.mp4", "start": 5, "end": 2}\n', "must be after start"),
])
def test_bad_rows_raise_a_clear_error_with_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"caption": "fine", "source": "ok.mp4"}\n' + content, encoding="utf-8")
    with pytest.raises(CatalogError, match=message) as error:
        list(read_table(path))
    assert "bad.jsonl:2" in str(error.value) or "must be after" in str(error.value)


def test_bm25_scores_match_a_hand_computed_lucene_bm25():
    captions = ["a man dancing in a ballroom", "two people dance a waltz", "a dog runs on the grass",
                "ballroom dancing couple spins around the ballroom"]
    index = CaptionIndex.build(captions)
    # Tokens after stopwords and Snowball stems: d0 [man, danc, ballroom], d1 [two, peopl, danc, waltz],
    # d2 [dog, run, grass], d3 [ballroom, danc, coupl, spin, around, ballroom]; mean length 16/4 = 4.
    avg, n, k1, b = 4.0, 4, 1.5, 0.75

    def idf(df):
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def term(tf, length, df):
        return idf(df) * tf / (tf + k1 * (1 - b + b * length / avg))

    expected = {0: term(1, 3, 2) + term(1, 3, 3), 1: term(1, 4, 3), 3: term(2, 6, 2) + term(1, 6, 3)}
    hits = index.search("Ballroom dancing", k=10)
    assert [doc for doc, _ in hits] == sorted(expected, key=lambda d: -expected[d])
    for doc, score in hits:
        assert score == pytest.approx(expected[doc], rel=1e-5)
    assert index.search("zebra", k=10) == []


def test_on_disk_catalog_persists_appends_and_reindexes(tmp_path):
    folder = tmp_path / "cat"
    catalog = ClipCatalog.create(folder)
    catalog.append([ClipRecord("a", "a man walking a dog", "a.mp4"), ClipRecord("b", "a cat sleeping", "b.mp4")])
    assert catalog.index_is_stale
    assert [r.id for r, _ in catalog.search("walking")] == ["a"]
    assert not catalog.index_is_stale and (folder / "index" / "caption_index.json").is_file()
    catalog.close()

    reopened = ClipCatalog.open(folder)
    assert len(reopened) == 2 and not reopened.index_is_stale
    assert reopened.get("b").caption == "a cat sleeping"
    reopened.append([ClipRecord("c", "a woman walking fast", "c.mp4", start=1.0, end=3.0)])
    assert reopened.index_is_stale
    assert {r.id for r, _ in reopened.search("walking")} == {"a", "c"}  # the append is searchable
    assert reopened.get("c").duration == 2.0
    with pytest.raises(CatalogError, match="duplicate clip ids: a"):
        reopened.append([ClipRecord("a", "again", "a.mp4")])
    assert len(reopened) == 3  # the failed append left nothing behind
    assert reopened.append([ClipRecord("a", "again", "a.mp4"), ClipRecord("d", "d", "d.mp4")],
                           skip_duplicates=True) == 1
    with pytest.raises(CatalogError, match="already holds a catalog"):
        ClipCatalog.create(folder)


def test_video_folder_with_sidecars_skips_corrupt_and_uncaptioned_videos(tmp_path):
    render_figure_clip(tmp_path / "walk.mp4", "walk", seconds=1.0, size=(96, 72))
    (tmp_path / "walk.txt").write_text("a person walking\n", encoding="utf-8")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (tmp_path / "broken.txt").write_text("a broken clip", encoding="utf-8")
    render_figure_clip(tmp_path / "nocaption.mp4", "wave", seconds=1.0, size=(96, 72))
    catalog = ClipCatalog.open(tmp_path)
    assert [r.id for r in catalog.records()] == ["walk"]
    walk = catalog.get("walk")
    assert (walk.fps, walk.width, walk.height, walk.duration) == (8.0, 96, 72, 1.0)
    reasons = dict(catalog.import_skipped)
    assert "cannot open video" in reasons["broken.mp4"] and "no caption" in reasons["nocaption.mp4"]
    assert catalog.resolve_source(walk) == str((tmp_path / "walk.mp4").resolve())


def test_open_refuses_what_is_not_a_catalog(tmp_path):
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(CatalogError, match="neither a catalog"):
        ClipCatalog.open(tmp_path / "notes.md")
    with pytest.raises(CatalogError, match="no catalog and no captioned videos"):
        ClipCatalog.open(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "catalog.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(CatalogError, match="not a readable catalog database"):
        ClipCatalog.open(tmp_path / "bad")


def test_sparse_top_k_of_large_indexes_matches_bm25s(monkeypatch):
    import dreamrunner.retrieval.bm25 as bm25

    rng = np.random.default_rng(0)
    words = ["man", "woman", "dog", "walking", "running", "dancing", "ballroom", "street", "park", "red", "blue",
             "jumping", "waltz", "couple", "grass", "beach", "city", "night", "slowly", "fast"]
    captions = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(3000)]
    small = bm25.CaptionIndex.build(captions)  # numpy backend: bm25s's own retrieve
    monkeypatch.setattr(bm25, "NUMBA_MIN_DOCS", 1)
    large = bm25.CaptionIndex.build(captions)  # numba: the sparse kernel
    assert small._sparse is None and large._sparse is not None
    for query in ["ballroom dancing", "a man walking a dog", "fast", "couple waltz at night in the city"]:
        expected, got = small.search(query, k=50), large.search(query, k=50)
        assert [round(s, 4) for _, s in got] == [round(s, 4) for _, s in expected]
        # equal scores may come in either order; the sets of documents above the last score agree
        cutoff = expected[-1][1]
        assert {d for d, s in got if s > cutoff + 1e-5} == {d for d, s in expected if s > cutoff + 1e-5}
    for _ in range(2):  # the shared score buffer is clean between queries
        assert large.search("ballroom", k=5) == large.search("ballroom", k=5)


# ---------------------------------------------------------------- text files in any encoding (issue 13)

def test_a_windows_1252_caption_sidecar_is_read_with_a_warning(tmp_path, caplog):
    """`retrieve --catalog DIR` and `catalog import` crashed with UnicodeDecodeError."""
    render_figure_clip(tmp_path / "clip.mp4", "walk", seconds=1.0, size=(96, 72))
    (tmp_path / "clip.txt").write_bytes(b"a man walking past a caf\xe9, \x93slowly\x94")
    render_figure_clip(tmp_path / "odd.mp4", "wave", seconds=1.0, size=(96, 72))
    (tmp_path / "odd.txt").write_bytes(b"\xff\x81 undefined in Windows-1252 \xc3")
    with caplog.at_level("WARNING", logger="dreamrunner.files"):
        catalog = ClipCatalog.open(tmp_path)
    assert catalog.get("clip").caption == "a man walking past a café, \u201cslowly\u201d"
    assert "clip.txt is not UTF-8 (from about byte 24); read it as Windows-1252" in caplog.text
    assert "is neither UTF-8 nor Windows-1252 text" in dict(catalog.import_skipped)["odd.mp4"]


@pytest.mark.parametrize("encode", [
    lambda text: text.encode("cp1252"),
    lambda text: text.encode("utf-8-sig"),
    lambda text: text.encode("utf-16"),  # Notepad's "Unicode": a BOM, then UTF-16
])
def test_tables_in_other_encodings_are_read(tmp_path, encode):
    (tmp_path / "clips.csv").write_bytes(encode("id,caption,source\na,a caf\u00e9 \u201cdance\u201d,a.mp4\n"))
    assert [r.caption for r in read_table(tmp_path / "clips.csv")] == ["a caf\u00e9 \u201cdance\u201d"]
    (tmp_path / "clips.json").write_bytes(encode(json.dumps([{"caption": "na\u00efve", "source": "a.mp4"}],
                                                            ensure_ascii=False)))
    assert [r.caption for r in read_table(tmp_path / "clips.json")] == ["na\u00efve"]


def test_jsonl_lines_end_at_newlines_only(tmp_path):
    """U+2028 and U+0085 are legal inside a JSON string; splitting lines on them broke valid rows."""
    rows = [{"caption": "a walk\u2028at night\u0085slowly", "source": "a.mp4"}, {"caption": "b", "source": "b.mp4"}]
    path = tmp_path / "clips.jsonl"
    path.write_text("\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows), encoding="utf-8")
    assert [r.caption for r in read_table(path)] == ["a walk\u2028at night\u0085slowly", "b"]
