"""Document augmentation without a generator: several renderings of each paper.

Allen-Zhu and Li (Physics of Language Models, Part 3.1) found that a model stores facts
it can later be asked about far better when each document comes in several rewrites
than when it sees one copy many times. Without a larger model to rewrite, these
renderings vary the text deterministically (seeded) and never add or lose a sentence:

- `original`: the paper as written;
- `shuffled`: the sentences of every paragraph in a new order, sections kept;
- `reordered`: the paragraphs in a new order, each under its section's heading;
- `sentences`: one record per sentence, its paper's title and section as context.

Each record is `{"text", "document", "rendering", "copy"}` (Axolotl `completion`).
`copies` makes that many of each permuted rendering, each with its own order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from cosmosage.dataprep.papers.documents import Paper

RENDERINGS = ("original", "shuffled", "reordered", "sentences")
PERMUTED = ("shuffled", "reordered")


def _shuffled(paper: Paper, rng: random.Random) -> str:
    def order(sentences: list[str]) -> list[str]:
        rng.shuffle(sentences)
        return sentences

    return paper.text(order=order)


def _reordered(paper: Paper, rng: random.Random) -> str:
    order = list(paper.paragraphs)
    rng.shuffle(order)
    blocks = [f"# {paper.title}"]
    for p in order:
        head = f"## {p.section}\n\n" if p.section else ""
        blocks.append(head + " ".join(p.sentences))
    return "\n\n".join(blocks)


def _sentence_context(paper: Paper, section: str) -> str:
    return f"{paper.title}, {section}:" if section else f"{paper.title}:"


def render(paper: Paper, rendering: str, copies: int = 1, seed: int = 0) -> Iterator[dict]:
    """The records of one rendering of one paper."""
    if rendering == "original":
        yield {"text": paper.text(), "document": paper.name, "rendering": rendering, "copy": 0}
    elif rendering in PERMUTED:
        make = _shuffled if rendering == "shuffled" else _reordered
        for copy in range(copies):
            rng = random.Random(f"{seed}:{paper.name}:{rendering}:{copy}")
            yield {
                "text": make(paper, rng),
                "document": paper.name,
                "rendering": rendering,
                "copy": copy,
            }
    elif rendering == "sentences":
        for p in paper.paragraphs:
            for s in p.sentences:
                yield {
                    "text": f"{_sentence_context(paper, p.section)} {s}",
                    "document": paper.name,
                    "rendering": rendering,
                    "copy": 0,
                }
    else:
        raise ValueError(f"unknown rendering {rendering!r}; one of {', '.join(RENDERINGS)}")


def augment(
    papers: list[Paper], renderings: tuple[str, ...] = RENDERINGS, copies: int = 2, seed: int = 0
) -> Iterator[dict]:
    for paper in papers:
        for rendering in renderings:
            yield from render(paper, rendering, copies, seed)
