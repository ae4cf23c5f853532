"""Near-duplicate removal on a generated paper-like corpus, beside datasketch and the
settings of two well-known dedup pipelines, measured in one run.

    .venv/bin/python bench/dedup_bench.py              # 400 distinct documents, ~10 s CPU
    .venv/bin/python bench/dedup_bench.py --docs 2000  # the larger run, ~1 min CPU

The corpus (seeded, generated here, nothing downloaded): paper-like markdown documents of
a few hundred to about 2,000 words, each with a title, common section headings and prose
drawn from its topic's vocabulary of made-up words plus English function words and stock
academic phrases; many carry one of a few identical acknowledgements paragraphs and
license notices, and short notes (one in ten) always carry both, so that boilerplate is a
third of them or more. Then near-copies of some of them, made as an arXiv v2 differs from
its v1: about 3% of the words substituted, inserted or deleted, one sentence dropped or
repeated, and the paragraphs re-wrapped with different line breaks and spacing. Every
copy comes after its original in the stream.

Each method reads the stream in order and answers, for every document, whether it is a
near duplicate of an earlier one (and of which). A hit counts as correct when the
document is a copy and the earlier one it names is its original or another copy of it;
precision, recall and F1 follow, with the wall and CPU time of each method over the
stream (index set-up and signatures included). Methods:

- ours at its defaults (`Deduplicator()` from dataprep/corpus/dedup.py);
- ours at the previous defaults (threshold 0.8, word 5-grams, 128 permutations, bands
  and rows chosen by datasketch for the threshold);
- datasketch's own `MinHash` (SHA-1) and `MinHashLSH` at our default threshold, shingle
  and permutation count (its bands and rows, no similarity check);
- datatrove-style: word 5-grams, 14 bands of 8 rows (112 permutations), every LSH
  candidate taken (no similarity check), with our signatures;
- text-dedup-style: word 5-grams, 250 permutations, threshold 0.7 with the bands and rows
  datasketch chooses for it, every LSH candidate taken, with our signatures.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosmosage.dataprep.corpus.dedup import (
    NEAR_THRESHOLD,
    NUM_PERM,
    SHINGLE,
    Deduplicator,
    MinHasher,
    NearDuplicateIndex,
    exact_key,
    lsh_params,
    normalize,
)

# ------------------------------------------------------------------ the corpus

FUNCTION_WORDS = (
    "the of and in to a is that for we with as by on this are be from at which an it our "
    "these can not or have has also than both its their such between using into more when "
    "most only where while each other all may been was"
).split()

STOCK_PHRASES = [
    p.split()
    for p in (
        "in this paper we",
        "as shown in figure",
        "it is well known that",
        "on the other hand",
        "in the presence of",
        "we find that the",
        "in addition to the",
        "as a function of",
        "with respect to the",
        "in good agreement with",
        "the results of the",
        "for the first time",
        "we show that",
        "is consistent with",
        "to the best of our knowledge",
        "in the limit of",
        "it should be noted that",
        "in order to",
        "as well as the",
        "at the same time",
        "the rest of the paper is organised as follows",
        "see the appendix for details",
        "within the uncertainties",
        "at the level of",
        "this is because the",
    )
]

SECTION_HEADINGS = (
    "Methods",
    "Observations",
    "Data",
    "Model",
    "Analysis",
    "Results",
    "Discussion",
    "Related work",
    "Simulations",
    "Systematic uncertainties",
)

ACKNOWLEDGEMENTS = (
    "## Acknowledgements\n\n"
    "We thank the anonymous referee for a careful reading of the manuscript and for "
    "suggestions that improved it. We are grateful to the members of the survey "
    "collaboration for useful discussions, and to the staff of the computing centre for "
    "their support. This work was supported by the national research council under grant "
    "numbers 1234567 and 7654321, by a fellowship from the science foundation, and by the "
    "European Research Council under the Horizon programme. Part of the computations were "
    "performed on the shared cluster of the university. This research made use of open "
    "source software for numerical computing, plotting and the handling of astronomical "
    "data, and of the bibliographic services of the astrophysics data system.",
    "## Acknowledgments\n\n"
    "The authors would like to thank their colleagues in the theory group for many "
    "stimulating conversations over the course of this project. Funding was provided by "
    "the department of energy, the space agency through its research opportunities "
    "programme, and a private foundation. We acknowledge the use of public data from the "
    "archive and of the high performance computing resources of the national laboratory, "
    "which is supported by the office of science. Any opinions, findings and conclusions "
    "expressed here are those of the authors and do not necessarily reflect the views of "
    "the funding agencies.",
    "## Acknowledgements\n\n"
    "It is a pleasure to thank the organisers and participants of the summer workshop "
    "where this work was started. We thank our collaborators for sharing data products "
    "ahead of publication and for comments on an early draft. This project has received "
    "funding from the research and innovation programme under the grant agreement listed "
    "above, and from the national science centre. The authors gratefully acknowledge the "
    "computing time granted on the supercomputer and the support of the local system "
    "administrators throughout the project.",
)

LICENSES = (
    "This article is distributed under the terms of the Creative Commons Attribution 4.0 "
    "International license, which permits use, sharing, adaptation, distribution and "
    "reproduction in any medium or format, as long as you give appropriate credit to the "
    "original authors and the source, provide a link to the license, and indicate if "
    "changes were made. The images or other third party material in this article are "
    "included in the license unless indicated otherwise in a credit line.",
    "Copyright the authors. Published under a nonexclusive license to distribute. The "
    "publisher is granted a perpetual, non-exclusive license to distribute this article. "
    "The authors retain copyright and all other rights, including the right to reuse the "
    "text, figures and tables in future works of their own, provided that this article "
    "is cited as the original source of the material.",
)

_ONSETS = "b c d f g h k l m n p r s t v z br cl st tr ph th gr sp ch qu sk pl".split()
_VOWELS = "a e i o u io ea ou ai y".split()
_CODAS = ["", "", "n", "s", "r", "l", "m", "x", "t", "nd", "st", "ck"]


def _zipf_cum(n: int, s: float = 1.05) -> list[float]:
    out, acc = [], 0.0
    for k in range(1, n + 1):
        acc += 1.0 / k**s
        out.append(acc)
    return out


@dataclass
class Vocabulary:
    """Made-up content words (Zipf-distributed) shared by all documents."""

    words: list[str]
    cum: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.cum = _zipf_cum(len(self.words))

    @classmethod
    def generate(cls, rng: random.Random, size: int) -> Vocabulary:
        seen: set[str] = set()
        while len(seen) < size:
            w = "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))
            )
            if w not in FUNCTION_WORDS:
                seen.add(w)
        words = sorted(seen)
        rng.shuffle(words)
        return cls(words)


@dataclass
class Topic:
    """A topic's own word list (drawn from the shared vocabulary) with Zipf weights."""

    words: list[str]
    cum: list[float]


_FUNCTION_CUM = _zipf_cum(len(FUNCTION_WORDS), 0.9)


def _word(rng: random.Random, topic: Topic, vocab: Vocabulary) -> str:
    r = rng.random()
    if r < 0.42:
        return rng.choices(FUNCTION_WORDS, cum_weights=_FUNCTION_CUM)[0]
    if r < 0.9:
        return rng.choices(topic.words, cum_weights=topic.cum)[0]
    return rng.choices(vocab.words, cum_weights=vocab.cum)[0]


def _sentence(rng: random.Random, topic: Topic, vocab: Vocabulary) -> list[str]:
    n = rng.randint(8, 30)
    words: list[str] = []
    while len(words) < n:
        r = rng.random()
        if r < 0.04:
            words.extend(rng.choice(STOCK_PHRASES))
        elif r < 0.07:
            words.append(f"${rng.choice('xyzkHM')}_{rng.randint(0, 9)}$")
        elif r < 0.09:
            words.append(f"{rng.random() * 100:.2f}")
        else:
            words.append(_word(rng, topic, vocab))
    return words


@dataclass
class Doc:
    """Blocks: ("h", heading line), ("p", sentences as word lists) or ("b", fixed text)."""

    blocks: list[tuple[str, Any]]
    family: int  # index of the original document; copies share it

    def words(self) -> int:
        """Words as the deduplicator sees them (punctuation splits, e.g. in math)."""
        return len(normalize(render(self, random.Random(0), 0)).split())


def _paper(rng: random.Random, topic: Topic, vocab: Vocabulary, family: int) -> Doc:
    """A paper (log-uniform 250-1800 words of prose) or, one time in ten, a short note
    (120-250 words) that always ends with acknowledgements and a license notice, so
    boilerplate is a large share of it."""
    title = " ".join(rng.choices(topic.words, cum_weights=topic.cum, k=rng.randint(3, 7)))
    note = rng.random() < 0.1
    if note:
        target = rng.randint(120, 250)
        sections = ["Introduction", "Conclusions"]
    else:
        target = int(round(250 * (1800 / 250) ** rng.random()))
        sections = ["Introduction", *rng.sample(SECTION_HEADINGS, rng.randint(2, 4)), "Conclusions"]
    blocks: list[tuple[str, Any]] = [("h", "# " + title.capitalize())]
    per_section = target // len(sections)
    for name in sections:
        blocks.append(("h", f"## {name}"))
        have = 0
        while have < per_section:
            para = [_sentence(rng, topic, vocab) for _ in range(rng.randint(2, 4 if note else 7))]
            have += sum(map(len, para))
            blocks.append(("p", para))
    if note or rng.random() < 0.6:
        blocks.append(("b", rng.choice(ACKNOWLEDGEMENTS)))
    if note or rng.random() < 0.5:
        blocks.append(("b", rng.choice(LICENSES)))
    return Doc(blocks, family)


def render(doc: Doc, rng: random.Random, width: int) -> str:
    """Markdown text; paragraphs wrapped at `width` characters (0: one line each), with
    occasional doubled spaces and trailing blanks."""
    out = []
    for kind, body in doc.blocks:
        if kind == "h":
            out.append(str(body))
            continue
        if kind == "b":
            text = str(body)
            head, _, rest = text.rpartition("\n\n")
            if head:
                out.append(head)
            words = rest.split()
        else:
            words = []
            for s in body:
                words.extend([s[0][:1].upper() + s[0][1:], *s[1:-1], s[-1] + "."] if s else [])
        if not width:
            out.append(" ".join(words))
            continue
        lines, line = [], ""
        for w in words:
            sep = "  " if rng.random() < 0.01 else " "
            if line and len(line) + len(w) + 1 > width:
                lines.append(line + (" " if rng.random() < 0.05 else ""))
                line = w
            else:
                line = f"{line}{sep}{w}" if line else w
        lines.append(line)
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def perturb(
    doc: Doc, rng: random.Random, topic: Topic, vocab: Vocabulary, rate: float = 0.03
) -> Doc:
    """A near-copy: one sentence dropped or repeated, then round(rate x words) words (of
    the whole document) substituted, inserted or deleted at random places in the prose."""
    blocks = [(k, [list(s) for s in b] if k == "p" else b) for k, b in doc.blocks]
    paras = [b for k, b in blocks if k == "p" and len(b) > 1]
    para = rng.choice(paras)
    i = rng.randrange(len(para))
    if rng.random() < 0.5:
        del para[i]
    else:
        para.insert(i + 1, list(para[i]))
    sentences = [s for k, b in blocks if k == "p" for s in b]
    lengths = list(map(len, sentences))
    for _ in range(max(1, round(rate * doc.words()))):
        s = rng.choices(sentences, weights=lengths)[0]
        j = rng.randrange(len(s))
        op = rng.random()
        if op < 0.4:
            s[j] = _word(rng, topic, vocab)
        elif op < 0.7 or len(s) < 3:
            s.insert(j, _word(rng, topic, vocab))
        else:
            del s[j]
    return Doc(blocks, doc.family)


@dataclass
class Corpus:
    texts: list[str]
    family: list[int]  # per document: index of the original it derives from
    copy: list[bool]  # per document: a near-copy of an earlier document
    settings: dict

    @property
    def copies(self) -> int:
        return sum(self.copy)


def generate(
    docs: int = 400,
    copy_share: float = 0.25,
    rate: float = 0.03,
    seed: int = 0,
    vocab_size: int = 40_000,
    topic_words: int = 600,
    docs_per_topic: int = 8,
    chain: int = 1,
) -> Corpus:
    """`docs` distinct documents, then near-copies of `copy_share` x docs of them (a few
    originals get two), each placed at a random point after its original. With `chain`
    > 1 each copy is a revision chain instead: copy k is made from copy k - 1 (as v3 from
    v2) and comes after it, so the last one has drifted `chain` edits from the original."""
    rng = random.Random(seed)
    vocab = Vocabulary.generate(rng, vocab_size)
    topics = []
    for _ in range(max(1, docs // docs_per_topic)):
        words = rng.sample(vocab.words, topic_words)
        topics.append(Topic(words, _zipf_cum(len(words), 0.9)))
    originals, doc_topic = [], []
    for i in range(docs):
        t = rng.choice(topics)
        doc_topic.append(t)
        originals.append(_paper(rng, t, vocab, i))
    n_copies = round(docs * copy_share)
    n_sources = min(docs, n_copies - n_copies // 10)
    sources = rng.sample(range(docs), n_sources)
    sources += rng.choices(sources, k=n_copies - n_sources) if sources else []
    items: list[tuple[float, Doc, bool]] = [(float(i), d, False) for i, d in enumerate(originals)]
    for src in sources:
        prev, at = originals[src], src + 0.5
        for k in range(chain):
            prev = perturb(prev, rng, doc_topic[src], vocab, rate)
            at = rng.uniform(at, docs + k)
            items.append((at, prev, True))
    items.sort(key=lambda x: x[0])
    texts, family, is_copy = [], [], []
    for _, d, c in items:
        texts.append(render(d, rng, rng.choice((0, 72, 80, 100))))
        family.append(d.family)
        is_copy.append(c)
    settings = {
        "docs": docs,
        "copies": sum(is_copy),
        "edit rate": rate,
        "chain": chain,
        "seed": seed,
        "topics": len(topics),
    }
    return Corpus(texts, family, is_copy, settings)


# ------------------------------------------------------------------ scoring


def shingles(text: str, k: int) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def copy_jaccards(corpus: Corpus, k: int) -> list[float]:
    """True word k-gram Jaccard of every copy with its original."""
    first = {}
    for i, (f, c) in enumerate(zip(corpus.family, corpus.copy, strict=True)):
        if not c:
            first[f] = i
    out = []
    for i, (f, c) in enumerate(zip(corpus.family, corpus.copy, strict=True)):
        if c:
            out.append(jaccard(shingles(corpus.texts[first[f]], k), shingles(corpus.texts[i], k)))
    return sorted(out)


def boilerplate_jaccard(corpus: Corpus, k: int, pairs: int = 2000, seed: int = 0) -> float:
    """Highest true word k-gram Jaccard among sampled pairs of unrelated originals that
    share an acknowledgements paragraph or a license notice (0 when there are none)."""
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, (t, c) in enumerate(zip(corpus.texts, corpus.copy, strict=True)):
        if c:
            continue
        for j, b in enumerate(ACKNOWLEDGEMENTS + LICENSES):
            if b.rpartition("\n\n")[2][:60] in " ".join(t.split()):
                groups.setdefault(str(j), []).append(i)
    candidates = [g for g in groups.values() if len(g) > 1]
    if not candidates:
        return 0.0
    cache: dict[int, set] = {}

    def shingled(i: int) -> set:
        if i not in cache:
            cache[i] = shingles(corpus.texts[i], k)
        return cache[i]

    best = 0.0
    for _ in range(pairs):
        a, b = rng.sample(rng.choice(candidates), 2)
        best = max(best, jaccard(shingled(a), shingled(b)))
    return best


@dataclass
class Score:
    precision: float
    recall: float
    f1: float
    flagged: int


def score(corpus: Corpus, hits: dict[int, int]) -> Score:
    """`hits`: document -> the earlier document it was found to duplicate. A hit is right
    when the document is a copy and the earlier one is of its family."""
    tp = sum(1 for i, j in hits.items() if corpus.copy[i] and corpus.family[j] == corpus.family[i])
    p = tp / len(hits) if hits else 1.0
    r = tp / corpus.copies if corpus.copies else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Score(p, r, f1, len(hits))


_OF = re.compile(r"near duplicate: of (\d+) ")


def run_ours(corpus: Corpus, dedup: Deduplicator) -> dict[int, int]:
    """Our `Deduplicator` over the stream: exact key, signature, check."""
    hits = {}
    for i, text in enumerate(corpus.texts):
        sig = dedup.hasher.signature(text)
        if (reason := dedup.check(str(i), exact_key(text), sig)) and (m := _OF.match(reason)):
            hits[i] = int(m.group(1))
    return hits


def run_index(corpus: Corpus, hasher: MinHasher, index: NearDuplicateIndex) -> dict[int, int]:
    """Our signatures into a `NearDuplicateIndex` of the given settings."""
    hits = {}
    for i, text in enumerate(corpus.texts):
        if hit := index.add(str(i), hasher.signature(text)):
            hits[i] = int(hit[0])
    return hits


def run_datasketch(corpus: Corpus, threshold: float, num_perm: int, shingle: int) -> dict[int, int]:
    """datasketch's MinHash (SHA-1 over the shingle text) and MinHashLSH with its own
    bands and rows for `threshold`; a document is a duplicate of the most similar LSH
    candidate, with no similarity check."""
    from datasketch import MinHash, MinHashLSH

    hits = {}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs = {}
    for i, text in enumerate(corpus.texts):
        words = normalize(text).split()
        m = MinHash(num_perm=num_perm)
        n = max(1, len(words) - shingle + 1)
        m.update_batch([" ".join(words[k : k + shingle]).encode() for k in range(n)])
        if found := lsh.query(m):
            hits[i] = int(max(found, key=lambda key: m.jaccard(sigs[key])))
        else:
            lsh.insert(str(i), m)
            sigs[str(i)] = m
    return hits


def datasketch_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """The bands and rows datasketch's MinHashLSH picks for `threshold`."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


@dataclass
class Method:
    name: str
    shingle: int
    num_perm: int
    params: tuple[int, int]
    check: str  # the similarity threshold candidates must reach, or "none"
    run: Callable[[], dict[int, int]]  # builds its index and reads the stream


def methods(corpus: Corpus) -> list[Method]:
    prev = datasketch_params(0.8, 128)
    tx = datasketch_params(0.7, 250)
    return [
        Method(
            "ours (defaults)",
            SHINGLE,
            NUM_PERM,
            lsh_params(),
            f"{NEAR_THRESHOLD:g}",
            lambda: run_ours(corpus, Deduplicator()),
        ),
        Method(
            "ours, previous defaults",
            5,
            128,
            prev,
            "0.8",
            lambda: run_index(corpus, MinHasher(128, 5), NearDuplicateIndex(0.8, 128, prev)),
        ),
        Method(
            "datasketch MinHash+LSH",
            SHINGLE,
            NUM_PERM,
            datasketch_params(NEAR_THRESHOLD, NUM_PERM),
            "none",
            lambda: run_datasketch(corpus, NEAR_THRESHOLD, NUM_PERM, SHINGLE),
        ),
        Method(
            "datatrove-style 14x8",
            5,
            112,
            (14, 8),
            "none",
            lambda: run_index(corpus, MinHasher(112, 5), NearDuplicateIndex(0.0, 112, (14, 8))),
        ),
        Method(
            "text-dedup-style t=0.7",
            5,
            250,
            tx,
            "none",
            lambda: run_index(corpus, MinHasher(250, 5), NearDuplicateIndex(0.0, 250, tx)),
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=400, help="Distinct documents (default 400).")
    ap.add_argument("--copies", type=float, default=0.25, help="Near-copies per distinct document.")
    ap.add_argument("--edit-rate", type=float, default=0.03, help="Share of words edited.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--chain",
        type=int,
        default=1,
        help="Revisions per copy, each made from the last (default 1).",
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    corpus = generate(args.docs, args.copies, args.edit_rate, args.seed, chain=args.chain)
    gen_s = time.perf_counter() - t0
    words = [len(t.split()) for t in corpus.texts]
    s = corpus.settings
    print(
        f"corpus: {len(corpus.texts)} documents ({s['docs']} distinct in {s['topics']} topics, "
        f"{s['copies']} near-copies, chains of {s['chain']}), {min(words)}-{max(words)} words, "
        f"{sum(words) / len(words):.0f} mean; edit rate {s['edit rate']}, one sentence "
        f"dropped or repeated, re-wrapped; seed {s['seed']}; generated in {gen_s:.1f} s"
    )
    j = copy_jaccards(corpus, SHINGLE)
    q = [j[min(len(j) - 1, int(f * len(j)))] for f in (0.0, 0.05, 0.5)]
    print(
        f"true word {SHINGLE}-gram Jaccard, copy vs original: min {q[0]:.3f}, "
        f"5th percentile {q[1]:.3f}, median {q[2]:.3f}; unrelated documents sharing "
        f"boilerplate: max {boilerplate_jaccard(corpus, SHINGLE):.3f} (sampled pairs)"
    )
    print(
        f"defaults: threshold {NEAR_THRESHOLD}, word {SHINGLE}-grams, {NUM_PERM} permutations, "
        f"LSH {lsh_params(NEAR_THRESHOLD, NUM_PERM)[0]} bands x "
        f"{lsh_params(NEAR_THRESHOLD, NUM_PERM)[1]} rows"
    )
    print()
    header = (
        f"{'method':<23} {'shingle':>7} {'perms':>5} {'bands x rows':>12} {'check':>5} "
        f"{'precision':>9} {'recall':>6} {'F1':>5} {'found':>5} {'wall s':>6} {'CPU s':>6}"
    )
    print(header)
    print("-" * len(header))
    for m in methods(corpus):
        w0, c0 = time.perf_counter(), time.process_time()
        hits = m.run()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        sc = score(corpus, hits)
        bands = f"{m.params[0]} x {m.params[1]}"
        print(
            f"{m.name:<23} {m.shingle:>7} {m.num_perm:>5} {bands:>12} {m.check:>5} "
            f"{sc.precision:>9.3f} {sc.recall:>6.3f} {sc.f1:>5.3f} {sc.flagged:>5} "
            f"{wall:>6.2f} {cpu:>6.2f}"
        )


if __name__ == "__main__":
    main()
