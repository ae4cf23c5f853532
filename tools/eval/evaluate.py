"""Evaluate models on prompt suites: answers, scores per scorer, per kind (domain /
general), per wording (trained / held_out, for fact recall), and the self-consistency
flag. One function over plain data; the CLI, the launcher and sweeps call it.

The result (saved as scores.json) is what reports, comparisons and the registry read:

    {"suites": [...], "preset": {...}, "models": {label: path},
     "scores": {label: {"all": 0.5, "domain": ..., "general": ..., "trained": ...,
                        "held_out": ..., "suite:NAME": ..., "flagged": 0.2,
                        "consistency_auroc": 0.9}},
     "answers": [{"id", "suite", "kind", "prompt", "score", "expect", "wording", "fact",
                  LABEL: answer, LABEL_pass, LABEL_detail, LABEL_agreement, LABEL_flagged}]}
"""

from __future__ import annotations

from pathlib import Path

from cosmosage.tools.eval import consistency as sc
from cosmosage.tools.eval.cache import AnswerCache
from cosmosage.tools.eval.generation import Generator, preset
from cosmosage.tools.eval.scorers import score
from cosmosage.tools.eval.suites import load_suites

ROW_KEYS = (
    "id",
    "suite",
    "kind",
    "prompt",
    "score",
    "expect",
    "wording",
    "fact",
    "group",
    "document",
    "system",
    "history",
)


class _Asker:
    """One model's answers through the cache; the model is loaded on the first miss."""

    def __init__(self, path: str | Path, device: str, cache: AnswerCache):
        self.path, self.device, self.cache, self.gen = path, device, cache, None

    def answers(self, prompts, settings, n=1, seed=0, desc=None) -> list[list[str]]:
        got = self.cache.get(self.path, prompts, settings, n, seed)
        if got is None:
            if self.gen is None:
                self.gen = Generator(self.path, device=self.device)
            got = self.gen.answers(prompts, settings, n=n, seed=seed, desc=desc)
            self.cache.put(self.path, prompts, settings, n, seed, got)
        return got


def rates(rows: list[dict], label: str) -> dict[str, float]:
    """Pass rates of one model: all, by kind, by wording, by group (closed-book questions:
    `qa_fact`, `paper_only`, `held_out_sentence`), by document (`doc:NAME`), by suite."""
    return {k: passed / n for k, (passed, n) in counts(rows, label).items()}


def counts(rows: list[dict], label: str) -> dict[str, list[int]]:
    """[passed, scored] of one model for every key of `rates` (the intervals' input)."""
    groups: dict[str, list[bool]] = {"all": []}
    for row in rows:
        passed = row.get(f"{label}_pass")
        if passed is None:
            continue
        keys = ["all", row["kind"], f"suite:{row['suite']}"]
        if row.get("wording"):
            keys.append(row["wording"])
        if row.get("group"):
            keys.append(row["group"])
        if row.get("document"):
            keys.append(f"doc:{row['document']}")
        for key in keys:
            groups.setdefault(key, []).append(bool(passed))
    return {k: [sum(v), len(v)] for k, v in groups.items() if v}


def score_models(
    models: dict[str, str | Path],
    suites: list[str | Path],
    settings: dict | str | None = None,
    samples: int = 0,
    sample_settings: dict | str | None = "consistency",
    seed: int = 0,
    device: str = "cpu",
    judge=None,
    sample_suites: list[str] | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> dict:
    """{label: model folder} x suites -> answers, pass rates and (with `samples` > 1) the
    self-consistency agreement and flag of every answer.

    `judge` is a callable(prompts, answers) -> list[(passed, detail)] for `score: judge`
    prompts (tools/eval/judge.py makes one); without it those prompts are not scored.
    `sample_suites` limits the self-consistency samples to the prompts of those suites.
    With `cache_dir`, answers are read from and written to an AnswerCache there. With
    `limit`, only the first `limit` prompts of each suite are asked (the result says so)."""
    settings = preset(settings) if not isinstance(settings, dict) else preset(settings)
    sampling = preset(sample_settings) if samples > 1 else None
    prompts = load_suites(list(suites), limit)
    rows = [{k: p[k] for k in ROW_KEYS if k in p} for p in prompts]
    scores: dict[str, dict] = {}
    tallies: dict[str, dict] = {}
    cache = AnswerCache(cache_dir)
    for label, path in models.items():
        gen = _Asker(path, device, cache)
        answers = [a[0] for a in gen.answers(prompts, settings, seed=seed, desc=f"ask {label}")]
        judged = [i for i, p in enumerate(prompts) if p["score"] == "judge"]
        verdicts = {}
        if judged and judge is not None:
            got = judge([prompts[i] for i in judged], [answers[i] for i in judged])
            verdicts = dict(zip(judged, got, strict=True))
        for i, (row, ans) in enumerate(zip(rows, answers, strict=True)):
            row[label] = ans
            if prompts[i]["score"] == "judge":
                passed, detail = verdicts.get(i, (None, "not judged (no judge given)"))
            else:
                passed, detail = score(ans, prompts[i])
            row[f"{label}_pass"], row[f"{label}_detail"] = passed, detail
        scores[label] = rates(rows, label)
        tallies[label] = counts(rows, label)
        if sampling is not None:
            ask_samples(gen, prompts, rows, label, sampling, samples, seed, sample_suites)
            scores[label].update(consistency_scores(rows, label))
        del gen
    result = {
        "suites": [str(s) for s in suites],
        "preset": settings,
        "models": {k: str(v) for k, v in models.items()},
        "scores": scores,
        "counts": tallies,
        "answers": rows,
    }
    if limit:
        result["limit"] = limit
    if sampling is not None:
        result["consistency"] = consistency_summary(rows, list(models), sampling, samples)
    result["cached_requests"] = cache.hits  # 0 too: every scores.json has the same keys
    return result


def ask_samples(
    gen, prompts: list[dict], rows: list[dict], label: str, sampling: dict, n: int,
    seed: int, sample_suites: list[str] | None,
) -> None:  # fmt: skip
    """Self-consistency: each prompt (of `sample_suites`, else all) answered `n` more times
    with `sampling`; the samples, their agreement and the flag go into its row."""
    picked = [i for i, p in enumerate(prompts) if not sample_suites or p["suite"] in sample_suites]
    sets = gen.answers(
        [prompts[i] for i in picked], sampling, n=n, seed=seed + 1, desc=f"sample {label}"
    )
    for i, got in zip(picked, sets, strict=True):
        row = rows[i]
        row[f"{label}_samples"] = got
        row[f"{label}_agreement"] = round(sc.agreement(got), 4)
        row[f"{label}_flagged"] = row[f"{label}_agreement"] < sc.FLAG_THRESHOLD


def consistency_scores(rows: list[dict], label: str) -> dict:
    """The share of scored answers flagged, and how well agreement predicts correctness."""
    scored = [r for r in rows if r.get(f"{label}_pass") is not None and f"{label}_agreement" in r]
    out = {"flagged": sum(r[f"{label}_flagged"] for r in scored) / max(len(scored), 1)}
    auc = sc.auroc(
        [r[f"{label}_agreement"] for r in scored], [bool(r[f"{label}_pass"]) for r in scored]
    )
    if auc is not None:
        out["consistency_auroc"] = round(auc, 4)
    return out


def consistency_summary(rows: list[dict], labels: list[str], sampling: dict, n: int) -> dict:
    """Whether agreement predicts correctness over every model's answers together (the
    base model's inventions and the trained model's knowledge in one pool)."""
    agree, correct = [], []
    for label in labels:
        for r in rows:
            if r.get(f"{label}_pass") is not None and f"{label}_agreement" in r:
                agree.append(r[f"{label}_agreement"])
                correct.append(bool(r[f"{label}_pass"]))
    auc = sc.auroc(agree, correct)
    return {
        "samples": n,
        "settings": sampling,
        "threshold": sc.FLAG_THRESHOLD,
        "answers": len(agree),
        "auroc": None if auc is None else round(auc, 4),
        "calibration": sc.calibration(agree, correct),
        "flagged_wrong": sum(
            a < sc.FLAG_THRESHOLD and not c for a, c in zip(agree, correct, strict=True)
        ),
        "wrong": correct.count(False),
    }
