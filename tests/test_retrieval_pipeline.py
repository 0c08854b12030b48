"""retrieve_clips end to end: re-ranking (injected similarity and a tiny random CLIP), selection with drop
reasons, corrupt / missing / remote videos, materialisation at 8 fps, progress and cancel, the CLI."""

import json

import numpy as np
import pytest
import torch

from dreamrunner.cli import main as cli_main
from dreamrunner.jobs import Cancelled, CancelToken
from dreamrunner.retrieval import (
    ClipCatalog,
    ClipFilter,
    ClipFrameScorer,
    ClipRecord,
    FunctionScorer,
    RetrievalSettings,
    default_demo_catalog,
    probe,
    retrieve_clips,
    sample_frames,
    select_clips,
)
from dreamrunner.retrieval.synthetic import render_figure_clip

FAST = dict(dense_model=None, clip_model=None, detector=None, sample_fps=2.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    for name, color in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
        render_figure_clip(root / f"{name}.mp4", "walk", seconds=2.0, size=(96, 72), color=color)
    render_figure_clip(root / "partial.mp4", "walk", seconds=4.0, size=(160, 120), visible=(1.0, 3.0))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    return root


def red_minus_blue(frames, text):
    return float(np.mean([f[..., 0].astype(float) - f[..., 2] for f in frames]))


def test_injected_similarity_reorders_the_text_ranking(media):
    # BM25 alone ranks blue first (its caption repeats the motion), red last.
    catalog = ClipCatalog.in_memory([
        ClipRecord("blue", "walking walking man walking", "blue.mp4"),
        ClipRecord("green", "a man walking walking", "green.mp4"),
        ClipRecord("red", "a man walking in a field with a hat", "red.mp4"),
    ], media_root=media)
    text_only = retrieve_clips("walking", catalog, RetrievalSettings(text_only=True, **FAST))
    assert [c.id for c in text_only.clips] == ["blue", "green", "red"]
    result = retrieve_clips("walking", catalog, RetrievalSettings(**FAST),
                            scorers=[FunctionScorer(red_minus_blue, "redness")])
    assert [c.id for c in result.clips] == ["red", "green", "blue"]
    redness = [c.scores["redness"] for c in result.clips]
    assert redness == sorted(redness, reverse=True) and [c.score for c in result.clips] == redness
    assert "rerank:redness" in result.stages
    cut = (redness[1] + redness[2]) / 2
    threshold = retrieve_clips("walking", catalog, RetrievalSettings(**{**FAST, "min_similarity": cut}),
                               scorers=[FunctionScorer(red_minus_blue, "redness")])
    assert [c.id for c in threshold.clips] == ["red", "green"]
    assert [(d.id, d.stage) for d in threshold.dropped] == [("blue", "select")]
    assert "below the threshold" in threshold.dropped[0].reason


def test_select_clips_keeps_the_best_and_says_why_others_go():
    ranked = [(f"c{i}", (100 - 4 * i) / 100) for i in range(25)]  # 1.00, 0.96, ... 0.04
    kept, dropped = select_clips(ranked, max_clips=20, min_score=0.5)
    assert [c for c, _ in kept] == [f"c{i}" for i in range(13)]  # c12 = 0.52, c13 = 0.48
    reasons = dict(dropped)
    assert "below the threshold" in reasons["c24"]
    kept, dropped = select_clips(ranked, max_clips=4)
    assert len(kept) == 4 and dict(dropped)["c4"] == "beyond the best 4"


def _tiny_clip(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    words = ["[PAD]", "[UNK]", "[EOS]", "a", "man", "walking", "person", "dog", "running"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        eos_token="[EOS]")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=2),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_tiny_random_clip_reranks_through_the_real_loading_path(media, tmp_path):
    scorer = ClipFrameScorer.from_pretrained(_tiny_clip(tmp_path / "clip"))
    # The scorer's number is the mean cosine between each frame's and the text's CLIP embeddings.
    times, frames = sample_frames(media / "red.mp4", fps=2.0)
    with torch.no_grad():
        text = scorer.model.get_text_features(**scorer.tokenizer(["a man walking"], return_tensors="pt"))
        pixels = scorer.image_processor(images=frames, return_tensors="pt")["pixel_values"]
        images = scorer.model.get_image_features(pixel_values=pixels)
    if not isinstance(text, torch.Tensor):
        text, images = text.pooler_output, images.pooler_output
    expected = torch.nn.functional.cosine_similarity(images, text).mean().item()
    assert scorer.score(frames, "a man walking") == pytest.approx(expected, abs=1e-5)

    catalog = ClipCatalog.in_memory([ClipRecord(c, f"a man walking {c}", f"{c}.mp4") for c in ("red", "green", "blue")],
                                    media_root=media)
    result = retrieve_clips("a man walking", catalog, RetrievalSettings(**FAST), scorers=[scorer])
    by_scorer = {c: scorer.score(sample_frames(media / f"{c}.mp4", fps=2.0)[1], "a man walking")
                 for c in ("red", "green", "blue")}
    assert [c.id for c in result.clips] == sorted(by_scorer, key=lambda c: -by_scorer[c])
    for clip in result.clips:
        assert clip.score == pytest.approx(by_scorer[clip.id], abs=1e-5) and clip.scores["clip"] == clip.score
    # Through settings (the loading code the app uses) the same checkpoint gives the same order.
    named = retrieve_clips("a man walking", catalog,
                           RetrievalSettings(**{**FAST, "clip_model": str(tmp_path / "clip")}))
    assert [c.id for c in named.clips] == [c.id for c in result.clips]


def test_bad_videos_are_dropped_with_reasons_and_the_rest_are_cut_at_8_fps(media, tmp_path):
    catalog = ClipCatalog.in_memory([
        ClipRecord("partial", "a person walking across a field", "partial.mp4"),
        ClipRecord("corrupt", "a person walking in a corrupt file", "corrupt.mp4"),
        ClipRecord("missing", "a person walking somewhere else", "nowhere.mp4"),
        ClipRecord("remote", "a person walking on youtube", "https://www.youtube.com/watch?v=abcdefghijk",
                   start=3.0, end=9.0),
        ClipRecord("short", "a person walking briefly", "red.mp4", start=0.0, end=0.5),
        ClipRecord("dog", "a dog sleeping", "blue.mp4"),
    ], media_root=media)
    events = []
    settings = RetrievalSettings(**{**FAST, "detector": "motion", "sample_fps": 4.0, "min_subject_area": 0.04},
                                 output_dir=str(tmp_path / "out"))
    result = retrieve_clips("person walking", catalog, settings, progress=events.append)
    assert [c.id for c in result.clips] == ["partial"]
    clip = result.clips[0]
    assert clip.start == pytest.approx(1.0) and clip.end == pytest.approx(3.0)  # cut to the tracked span
    info = probe(clip.path)
    assert info.fps == 8 and info.duration == pytest.approx(2.0, abs=0.15)
    reasons = {d.id: (d.stage, d.reason) for d in result.dropped}
    assert reasons["corrupt"][0] == "video" and "cannot open video" in reasons["corrupt"][1]
    assert "does not exist" in reasons["missing"][1]
    assert "downloader hook is off" in reasons["remote"][1]
    assert reasons["short"] == ("filter", "duration 0.50 s is shorter than 1 s")
    assert "dog" not in reasons  # BM25 never proposed it
    assert any("only 1 clip" in w for w in result.warnings)
    assert {e.stage for e in events} >= {"text", "video", "materialise"}


def test_downloader_hook_is_used_only_when_allowed(media, tmp_path):
    fetched = []

    def downloader(record, folder):
        fetched.append(record.id)
        return media / "red.mp4"

    catalog = ClipCatalog.in_memory([ClipRecord("yt", "a man walking", "https://example.org/v.mp4")])
    off = retrieve_clips("walking", catalog, RetrievalSettings(**FAST), downloader=downloader)
    assert off.clips == [] and fetched == []
    on = retrieve_clips("walking", catalog, RetrievalSettings(**FAST, allow_download=True,
                                                               output_dir=str(tmp_path)), downloader=downloader)
    assert [c.id for c in on.clips] == ["yt"] and fetched == ["yt"]


def test_cancel_stops_retrieval(media):
    catalog = ClipCatalog.in_memory([ClipRecord("red", "a man walking", "red.mp4")], media_root=media)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        retrieve_clips("walking", catalog, RetrievalSettings(**FAST), cancel=token)


def test_dense_rescoring_prefers_the_caption_that_means_the_motion():
    catalog = ClipCatalog.in_memory([
        ClipRecord("match", "two people waltz gracefully in a ballroom", "a.mp4"),
        ClipRecord("noise", "an empty ballroom with chairs and tables in a ballroom hall", "b.mp4"),
    ])
    # dense_weight 1: the BM25 candidates re-ordered by embedding similarity alone.
    settings = RetrievalSettings(text_only=True, dense_weight=1.0, filters=ClipFilter(min_duration=None))
    bm25_only = retrieve_clips("ballroom dancing", catalog, settings.model_copy(update={"dense_model": None}))
    assert [c.id for c in bm25_only.clips] == ["noise", "match"]
    dense = retrieve_clips("ballroom dancing", catalog, settings)
    assert [c.id for c in dense.clips] == ["match", "noise"]
    assert dense.clips[0].scores["dense"] > dense.clips[1].scores["dense"]
    assert "dense:all-MiniLM-L6-v2" in dense.stages


def test_demo_catalog_and_cli(tmp_path, capsys):
    demo = default_demo_catalog()
    assert len(demo) >= 10
    for record in demo.records():
        assert record.extra["license"] and record.extra["attribution"]
    assert cli_main(["retrieve", "--motion", "a person jumping", "--text-only", "--top", "3", "--no-dense"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("synthetic-jump-")
    clip_id, score, caption = lines[0].split("\t")
    assert float(score) > 0 and "jumping" in caption

    table = tmp_path / "mine.jsonl"
    table.write_text(json.dumps({"id": "x", "caption": "a dog running on a beach", "source": "x.mp4"}) + "\n")
    assert cli_main(["catalog", "import", str(table), "--into", str(tmp_path / "cat")]) == 0
    assert cli_main(["retrieve", "--motion", "dog running", "--catalog", str(tmp_path / "cat"), "--text-only",
                     "--no-dense", "--min-duration", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("x\t")
    assert cli_main(["retrieve", "--motion", "x", "--catalog", str(tmp_path / "nothing.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_missing_clip_weights_skip_reranking_with_a_warning_or_fail_when_required(media, tmp_path):
    from dreamrunner.retrieval import ScorerUnavailable

    catalog = ClipCatalog.in_memory([ClipRecord("red", "a man walking", "red.mp4")], media_root=media)
    settings = RetrievalSettings(**{**FAST, "clip_model": str(tmp_path / "no-clip-here")})
    result = retrieve_clips("walking", catalog, settings)
    assert [c.id for c in result.clips] == ["red"]
    assert any(w.startswith("CLIP re-ranking skipped: no CLIP weights") for w in result.warnings)
    with pytest.raises(ScorerUnavailable):
        retrieve_clips("walking", catalog, settings.model_copy(update={"require_rerank": True}))


def test_cli_imports_a_video_folder_into_a_catalog_and_cuts_clips(tmp_path, capsys):
    videos = tmp_path / "videos"
    render_figure_clip(videos / "jump.mp4", "jump", seconds=2.0, size=(96, 72))
    (videos / "jump.txt").write_text("a child jumping on the grass")
    assert cli_main(["catalog", "import", str(videos), "--into", str(tmp_path / "cat"),
                     "--attribution", "made by the test"]) == 0
    assert cli_main(["catalog", "info", str(tmp_path / "cat")]) == 0
    assert "attribution: made by the test" in capsys.readouterr().out
    assert cli_main(["retrieve", "--motion", "jumping", "--catalog", str(tmp_path / "cat"), "--detector", "none",
                     "--clip-model", "none", "--no-dense", "--out", str(tmp_path / "cut")]) == 0
    clip_id, score, caption, span, path = capsys.readouterr().out.strip().split("\t")
    assert clip_id == "jump" and span == "[0.00-2.00 s]" and probe(path).fps == 8
