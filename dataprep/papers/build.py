"""The paper-route jobs: papers in, training records (and a held-out suite) out, each
output with a manifest and a rejects file. The CLI (tools/cli/data_papers.py) calls
these; they call the pure renderers in augment.py and cloze.py."""

from __future__ import annotations

from pathlib import Path

from cosmosage.dataprep.io import Manifest, check_outputs, write_jsonl, write_rejects, write_yaml
from cosmosage.dataprep.papers import augment as aug
from cosmosage.dataprep.papers import cloze as cz
from cosmosage.dataprep.papers.documents import Paper, load_papers, with_named_subjects
from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.steps import write_failed_rejects


def _papers(
    inputs: list[str | Path], out: str | Path, name_subjects: bool = False
) -> tuple[list[Paper], list]:
    papers, rejects = load_papers(inputs)
    check_outputs([p.path for p in papers], {"--out": out})
    if name_subjects:
        papers = [with_named_subjects(p) for p in papers]
    if not papers:  # an earlier run's output set stays whole; the reasons go aside
        failed = write_failed_rejects(out, rejects)
        raise DataError(
            "no papers with text among "
            + ", ".join(str(i) for i in inputs)
            + (f" ({len(rejects)} rejected: {rejects[0].reason}; see {failed})" if rejects else "")
        )
    return papers, rejects


def _manifest(out: str | Path, papers: list[Paper], rejects: list, **extra) -> Manifest:
    m = Manifest(str(out), extra=extra)
    for p in papers:
        m.add_input(p.path)
    for r in rejects:
        m.drop(r.reason)
    return m


def build_augment(
    inputs: list[str | Path],
    out: str | Path,
    renderings: tuple[str, ...] = aug.RENDERINGS,
    copies: int = 2,
    seed: int = 0,
    name_subjects: bool = False,
) -> dict:
    """Papers -> completion records in several renderings (augment.py); with
    `name_subjects`, short references to a paper's subject written out first."""
    bad = [r for r in renderings if r not in aug.RENDERINGS]
    if bad:
        raise DataError(f"--rendering {bad[0]}: not one of {', '.join(aug.RENDERINGS)}")
    if copies < 1:
        raise DataError(f"--copies {copies}: give at least 1")
    papers, rejects = _papers(inputs, out, name_subjects)
    records = list(aug.augment(papers, tuple(renderings), copies, seed))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["rendering"]] = counts.get(r["rendering"], 0) + 1
    m = _manifest(
        out,
        papers,
        rejects,
        renderings=list(renderings),
        copies=copies,
        seed=seed,
        name_subjects=name_subjects,
        records_by_rendering=counts,
    )
    m.kept = write_jsonl(out, records)
    write_rejects(out, rejects)
    m.write()
    return {
        "papers": len(papers),
        "records": m.kept,
        "by_rendering": counts,
        "rejected": len(rejects),
        "output": str(out),
    }


def build_cloze(
    inputs: list[str | Path],
    out: str | Path,
    answer: str = "span",
    max_per_sentence: int = 4,
    hold_out: float = 0.0,
    exclude: list[str] | None = None,
    suite_out: str | Path | None = None,
    seed: int = 0,
    variants: int = 1,
    name_subjects: bool = False,
    context: str = "sentence",
) -> dict:
    """Papers -> cloze chat records; held-out sentences -> a suite (cloze.py)."""
    if context not in cz.CONTEXTS:
        raise DataError(f"--context {context}: not one of {', '.join(cz.CONTEXTS)}")
    if not 1 <= variants <= len(cz.VARIANTS):
        raise DataError(f"--variants {variants}: between 1 and {len(cz.VARIANTS)}")
    if answer not in cz.ANSWERS:
        raise DataError(f"--answer {answer}: not one of {', '.join(cz.ANSWERS)}")
    if not 0.0 <= hold_out < 1.0:
        raise DataError(f"--hold-out {hold_out}: a share in [0, 1)")
    if hold_out > 0 and not suite_out:
        raise DataError("--hold-out needs --suite-out: the held-out items are the evaluation")
    check_outputs([], {"--out": out, "--suite-out": suite_out})
    papers, rejects = _papers(inputs, out, name_subjects)
    train, held, excluded = [], [], 0
    sentences_with_blanks = 0
    seen_sentences: set[tuple[str, str]] = set()
    for where, item in cz.cloze_items(
        papers, answer, max_per_sentence, hold_out, set(exclude or ()), seed, variants, context
    ):
        key = (item["document"], item["sentence"])
        if key not in seen_sentences:
            seen_sentences.add(key)
            sentences_with_blanks += 1
        if where == "train":
            train.append(item)
        elif where == "held_out":
            held.append(item)
        elif item["variant"] == 0:
            excluded += 1
    n_sentences = sum(len(p.sentences) for p in papers)
    m = _manifest(
        out, papers, rejects, answer=answer, max_per_sentence=max_per_sentence, hold_out=hold_out, seed=seed, variants=variants,
        name_subjects=name_subjects,
        sentences=n_sentences, sentences_with_blanks=sentences_with_blanks,
    )  # fmt: skip
    if held:
        m.dropped["held out for evaluation"] += len(held)
    if excluded:
        m.dropped["excluded sentence"] += excluded
    m.kept = write_jsonl(out, train)
    write_rejects(out, rejects)
    m.write()
    result = {
        "papers": len(papers),
        "sentences": n_sentences,
        "sentences_with_blanks": sentences_with_blanks,
        "records": m.kept,
        "held_out": len(held),
        "excluded": excluded,
        "output": str(out),
    }
    if suite_out:
        prompts = [cz.eval_prompt(item, i) for i, item in enumerate(held, start=1)]
        write_yaml(suite_out, {"prompts": prompts})
        sm = Manifest(
            str(suite_out), extra={"held_out_of": str(out), "seed": seed, "hold_out": hold_out}
        )
        for p in papers:
            sm.add_input(p.path)
        sm.kept = len(prompts)
        sm.write()
        result["suite"] = str(suite_out)
    return result
