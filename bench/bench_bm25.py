"""BM25 at InternVid scale: bm25s (through ClipCatalog, what we ship) vs rank-bm25 vs SQLite FTS5.

A synthetic caption corpus with realistic word statistics (a Zipf-Mandelbrot law over a 200k-word vocabulary
whose head is real caption words in rough frequency order; 8-22 words per caption, mean ~13, like InternVid's
generated captions) is written once to a text file; then each backend runs in its own process, which builds
its index from that file, saves it, and answers 100 motion queries (top 100). Reported: build seconds, index
size on disk, peak RSS of the build process, peak RSS of a fresh process that opens the saved index and
answers the queries, and p50/p95 query latency (the first query, which may compile numba code, is reported
apart).

    python bench/bench_bm25.py --docs 1000000 --backends bm25s,fts5,rank_bm25 --work /tmp/bm25bench
    nice python bench/bench_bm25.py --docs 10000000 --backends bm25s --work /tmp/bm25bench

Prints one JSON object per backend and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Caption words in rough frequency order (function words, then frequent nouns and verbs of video captions).
HEAD = """a the of in is and on with to man woman an are at his her people two person playing video while
standing holding up front sitting walking there table shows young white black group it by their from
camera out being girl boy talking into car road street water next each other some car field room hand
wearing shirt men women around background that this one while hands blue red green large small game
screen looking down over dog child children hair face food several playing through woman's man's kitchen
stage house tree trees grass snow beach ocean city building floor wall phone computer book ball""".split()
MOTION = """dancing running jumping riding swimming climbing skating skateboarding surfing skiing cycling
walking playing throwing catching kicking juggling boxing fighting spinning twirling waving clapping
lifting pushing pulling stretching yoga exercising crawling rolling sliding diving flipping hugging
kissing cooking cutting chopping stirring pouring painting drawing writing typing reading singing
laughing crying shouting eating drinking driving flying floating falling sitting lying kneeling bowing
marching hiking jogging sprinting racing dribbling shooting serving batting pitching tackling wrestling
fencing rowing paddling sailing fishing horse bicycle motorcycle skateboard surfboard guitar piano drum
violin ballet salsa tango waltz hip hop breakdance gymnastics trampoline backflip handstand somersault
martial arts kung karate taekwondo tennis basketball soccer football volleyball baseball golf hockey""".split()
RARE = """ballroom cartwheel pirouette moonwalk parkour pole vault hurdle javelin discus archery lasso rodeo
tightrope unicycle stilts pogo hula hoop trapeze acrobat contortion limbo conga polka flamenco samba
foxtrot quickstep jive rumba cha zumba aerobics pilates kettlebell deadlift squat lunge burpee""".split()

QUERIES = """ballroom dancing|a man running on a beach|a woman riding a horse|two people boxing in a ring
|a child jumping on a trampoline|a dog catching a ball|a man skateboarding down a street|surfing a big wave
|a couple dancing the tango|a girl doing a cartwheel on grass|a man climbing a wall|people swimming in the ocean
|a woman doing yoga stretching|a boy kicking a soccer ball|a man juggling balls|a person skiing down snow
|cycling on a road|a woman playing the piano|a man playing guitar on stage
|a chef chopping vegetables in a kitchen|a baby crawling on the floor|a man lifting weights
|people marching in the street|a girl spinning in a ballet|a man doing a backflip|two men fencing
|a woman jogging in a park|a man diving into water|kids playing basketball|a man throwing a javelin
|a woman doing a pirouette|breakdance on the street|a person walking a dog|a man driving a car
|a bird flying over water|a woman painting a wall|a man rowing a boat|people hiking up a hill
|a person doing a handstand|a woman singing on stage|a man pushing a cart|a man pulling a rope
|gymnastics floor routine|a girl hula hoop|a man riding a unicycle|a man walking on a tightrope
|a boy riding a bicycle|a man riding a motorcycle|a woman doing aerobics|martial arts kicking|karate fighting
|a tennis player serving|a baseball player batting|a golfer swinging|hockey players skating
|a man fishing from a boat|a man waving his hands|people clapping hands|a woman laughing|a child crying
|a man eating food|a woman drinking water|a man typing on a computer|a girl reading a book
|a man writing on paper|a woman cooking food|a man cutting wood|people hugging|a couple kissing
|a man falling down|a man lying on the grass|a woman kneeling|a man bowing|salsa dancing couple
|people doing the conga|flamenco dancer|samba dancing in the street|a man doing squats|a woman doing lunges
|burpee exercise|deadlift in a gym|pole vault jump|a hurdle race|archery shooting|rodeo horse riding
|acrobat on a trapeze|a man on stilts|a contortion act|limbo dancing|moonwalk dance|parkour jumping over walls
|polka dancing|waltz in a ballroom|quickstep dance|jive dancing|rumba dancing|zumba class|pilates exercise
|kettlebell swing|wrestling match""".replace("\n", "").split("|")
assert len(QUERIES) == 100, len(QUERIES)


def vocabulary(size: int = 200_000) -> list[str]:
    """Real words at the head, synthetic letter-only words in the tail, rare real words spread among them."""
    head = list(dict.fromkeys(HEAD + MOTION))
    letters = "abcdefghijklmnopqrstuvwxyz"

    def synthetic(n: int) -> str:
        word = ""
        n += 26 * 26
        while n:
            n, r = divmod(n, 26)
            word = letters[r] + word
        return "q" + word  # no English word starts "q" + this; keeps the tail disjoint from real words

    vocab = head + [synthetic(i) for i in range(size - len(head))]
    for i, word in enumerate(dict.fromkeys(RARE)):
        vocab[1000 + 400 * i] = word  # ranks 1,000-26,000: a rare word in a few hundred to thousand captions
    return vocab


def generate(path: Path, docs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary(), dtype=object)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    weights = 1.0 / (ranks + 2.7) ** 1.07
    cdf = np.cumsum(weights / weights.sum())
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, docs, 100_000):
            n = min(100_000, docs - start)
            lengths = np.clip(rng.normal(13, 3.5, n).round().astype(int), 8, 22)
            words = vocab[np.searchsorted(cdf, rng.random(lengths.sum()))]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            out.write("\n".join(" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])))
            out.write("\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def captions(path: Path):
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\n")


# ---------------------------------------------------------------- backends (each runs in its own process)
def build_bm25s(corpus: Path, out: Path) -> dict:
    from dreamrunner.retrieval import ClipCatalog, ClipRecord

    catalog = ClipCatalog.create(out)
    started = time.perf_counter()
    catalog.append(ClipRecord(id=str(i), caption=c, source=f"clips/{i}.mp4") for i, c in enumerate(captions(corpus)))
    imported = time.perf_counter() - started
    started = time.perf_counter()
    catalog.reindex()
    return {"import_s": imported, "build_s": time.perf_counter() - started,
            "index_mb": dir_size_mb(out / "index"), "catalog_db_mb": dir_size_mb(out / "catalog.sqlite")}


def query_bm25s(out: Path, queries: list[str]):
    from dreamrunner.retrieval import ClipCatalog

    catalog = ClipCatalog.open(out)

    def run(text: str):
        return catalog.search(text, k=100)
    run.catalog = catalog
    return run


def _stop_and_stem():
    from dreamrunner.retrieval.bm25 import make_tokenizer

    tokenizer = make_tokenizer()
    stop = set(tokenizer.stopwords)
    return lambda text: [tokenizer.stemmer(w) for w in tokenizer.splitter(text.lower()) if w not in stop]


def build_fts5(corpus: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(out / "fts.sqlite")
    db.execute("CREATE VIRTUAL TABLE captions USING fts5(caption, tokenize='porter unicode61')")
    started = time.perf_counter()
    batch = []
    for caption in captions(corpus):
        batch.append((caption,))
        if len(batch) == 100_000:
            db.executemany("INSERT INTO captions(caption) VALUES (?)", batch)
            batch.clear()
    db.executemany("INSERT INTO captions(caption) VALUES (?)", batch)
    db.execute("INSERT INTO captions(captions) VALUES ('optimize')")
    db.commit()
    return {"build_s": time.perf_counter() - started, "index_mb": dir_size_mb(out / "fts.sqlite")}


def query_fts5(out: Path, queries: list[str]):
    db = sqlite3.connect(out / "fts.sqlite")
    tokens = _stop_and_stem()

    def run(text: str):
        terms = " OR ".join(f'"{t}"' for t in dict.fromkeys(tokens(text)))
        return db.execute("SELECT rowid, bm25(captions) FROM captions WHERE captions MATCH ? "
                          "ORDER BY bm25(captions) LIMIT 100", (terms,)).fetchall()
    return run


def _rank_bm25_model(corpus: Path):
    from rank_bm25 import BM25Okapi

    tokens = _stop_and_stem()
    return BM25Okapi([tokens(c) for c in captions(corpus)]), tokens


def build_rank_bm25(corpus: Path, out: Path) -> dict:
    import pickle

    started = time.perf_counter()
    model, _ = _rank_bm25_model(corpus)
    built = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    with (out / "rank_bm25.pkl").open("wb") as handle:  # rank-bm25 has no persistence of its own
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return {"build_s": built, "index_mb": dir_size_mb(out / "rank_bm25.pkl")}


def query_rank_bm25(out: Path, queries: list[str]):
    import pickle

    with (out / "rank_bm25.pkl").open("rb") as handle:
        model = pickle.load(handle)
    tokens = _stop_and_stem()

    def run(text: str):
        scores = model.get_scores(list(dict.fromkeys(tokens(text))))
        top = np.argpartition(-scores, 100)[:100]
        return top[np.argsort(-scores[top])]
    return run


BACKENDS = {"bm25s": (build_bm25s, query_bm25s), "fts5": (build_fts5, query_fts5),
            "rank_bm25": (build_rank_bm25, query_rank_bm25)}


def worker(phase: str, backend: str, corpus: Path, out: Path, queries: int) -> dict:
    build, query = BACKENDS[backend]
    if phase == "build":
        result = build(corpus, out)
        result["build_peak_rss_mb"] = peak_rss_mb()
        return result
    run = query(out, QUERIES[:queries])
    started = time.perf_counter()
    hits = run(QUERIES[0])
    first = time.perf_counter() - started
    result = {"first_query_ms": first * 1000, **latencies(run, QUERIES[:queries]), "queries": queries,
              "hits_first_query": len(hits)}
    if backend == "bm25s":
        # Baseline in the same process: bm25s's own retrieve (numba backend) over the same saved index.
        retriever = run.catalog._index._retriever
        retriever.backend = "numba"
        index = run.catalog._index
        def plain(text: str):
            ids = [retriever.vocab_dict[t] for t in index.query_tokens(text)]
            return retriever.retrieve([ids], k=100, show_progress=False, n_threads=1) if ids else None

        plain(QUERIES[0])  # compiles
        result.update({f"bm25s_retrieve_{key}": value for key, value in latencies(plain, QUERIES[:queries]).items()})
        result.update({f"index_{key}": value for key, value in
                       latencies(lambda text: index.search(text, 100), QUERIES[:queries]).items()})
    result["query_peak_rss_mb"] = peak_rss_mb()
    return result


def latencies(run, queries: list[str]) -> dict:
    times = []
    for text in queries:
        started = time.perf_counter()
        run(text)
        times.append(time.perf_counter() - started)
    return {"p50_ms": float(np.percentile(times, 50)) * 1000, "p95_ms": float(np.percentile(times, 95)) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--backends", default="bm25s,fts5,rank_bm25")
    parser.add_argument("--queries", type=int, default=100, help="how many of the 100 motion queries to time")
    parser.add_argument("--work", default="/tmp/bm25bench")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--worker", nargs=4, metavar=("PHASE", "BACKEND", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        phase, backend, corpus, out = args.worker
        print(json.dumps(worker(phase, backend, Path(corpus), Path(out), args.queries)))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"captions_{args.docs}.txt"
    if not corpus.exists():
        started = time.perf_counter()
        generate(corpus, args.docs)
        print(f"generated {args.docs:,} captions in {time.perf_counter() - started:.0f} s "
              f"({dir_size_mb(corpus):.0f} MB)", file=sys.stderr, flush=True)
    rows = []
    for backend in args.backends.split(","):
        out = work / f"{backend}_{args.docs}"
        shutil.rmtree(out, ignore_errors=True)
        result = {"backend": backend, "docs": args.docs, "machine": f"{platform.machine()} {os.cpu_count()} cpu",
                  "date": time.strftime("%Y-%m-%d")}
        for phase in ("build", "query"):
            command = [sys.executable, __file__, "--queries", str(args.queries), "--worker", phase, backend,
                       str(corpus), str(out)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{backend} {phase} failed:\n{done.stderr[-3000:]}")
            result.update(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(result), file=sys.stderr, flush=True)
        rows.append(result)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(rows, indent=1))
    print("| backend | captions | build s | index MB | build peak RSS MB | query RSS MB | first query ms "
          "| p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['docs']:,} | {r['build_s']:.1f} | {r['index_mb']:.0f} | "
              f"{r['build_peak_rss_mb']:.0f} | {r['query_peak_rss_mb']:.0f} | {r['first_query_ms']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
        if "index_p50_ms" in r:
            print(f"| CaptionIndex.search alone (no record fetch) | {r['docs']:,} | | | | | | "
                  f"{r['index_p50_ms']:.1f} | {r['index_p95_ms']:.1f} |")
        if "bm25s_retrieve_p50_ms" in r:
            print(f"| bm25s retrieve() on the same index (baseline) | {r['docs']:,} | | | | | | "
                  f"{r['bm25s_retrieve_p50_ms']:.1f} | {r['bm25s_retrieve_p95_ms']:.1f} |")


if __name__ == "__main__":
    main()
