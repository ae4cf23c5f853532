"""Chat records -> the ones a judge model scores at or above a threshold, with grades.

A judge reads the source chunk, the question and the answer, and scores the answer on
a written rubric (correctness, stand-alone clarity, pertinence, overall, 0-100) with a
short critique. Records whose overall score reaches the threshold are kept, with their
grade attached; the others go to the rejects file with their grade, so nothing is
lost. With two judges each record is scored by both; the kept score is the lower of
the two (or their mean), and the calibration report says how well they agree.

Beside the output: OUT.grades.jsonl (one line per record: scores, critique, kept),
OUT.calibration.json (score distribution, agreement) and OUT.spotcheck.md (a random
sample for a person to read).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cosmosage.dataprep.io import (
    atomic_writer,
    manifest_path,
    read_jsonl,
    read_text,
    sibling,
    write_json,
    write_jsonl,
)
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.synth.jobs import Answer, JournaledJob, Outcome
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError, as_number

GRADE_FIELDS = {"chunk", "question", "answer"}
RUBRIC = ("correctness", "clarity", "pertinence", "overall")


def parse_grade(obj: Any) -> dict:
    """Scores and critique from a judge's parsed JSON; ParseError if unusable."""
    if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], dict):
        obj = obj[0]
    if not isinstance(obj, dict):
        raise ParseError("wrong shape: expected a JSON object with scores")
    lower = {str(k).lower(): v for k, v in obj.items()}
    scores = {}
    for name in RUBRIC:
        if name not in lower:
            continue
        value = as_number(lower[name])
        if value is None:
            raise ParseError(f"bad score: {name} is {str(lower[name])[:40]!r}, not a number")
        if not 0 <= value <= 100:
            raise ParseError(f"bad score: {name} = {value} is outside 0-100")
        scores[name] = value
    if "overall" not in scores:
        raise ParseError("no overall score: the judge gave no 'overall'")
    critique = lower.get("critique", "")
    return {"scores": scores, "overall": scores["overall"], "critique": str(critique)[:1000]}


def question_answer(record: dict) -> tuple[str, str] | None:
    """The last assistant message and the user message before it."""
    msgs = record.get("messages")
    if not isinstance(msgs, list):
        return None
    for i in range(len(msgs) - 1, 0, -1):
        m, prev = msgs[i], msgs[i - 1]
        if (
            isinstance(m, dict)
            and m.get("role") == "assistant"
            and isinstance(prev, dict)
            and prev.get("role") == "user"
        ):
            q, a = prev.get("content"), m.get("content")
            if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
                return q, a
    return None


def record_id(record: dict) -> str:
    if isinstance(record.get("id"), str) and record["id"]:
        return record["id"]
    return hashlib.sha256(json.dumps(record.get("messages"), sort_keys=True).encode()).hexdigest()[
        :16
    ]


def chunks_file_for(qa_path: str | Path) -> Path | None:
    """The chunk file a synth output was made from, as its manifest says."""
    mpath = manifest_path(qa_path)
    if not mpath.is_file():
        return None
    try:
        inputs = json.loads(read_text(mpath)).get("inputs", [])
    except ValueError:
        return None
    return Path(inputs[0]["path"]) if inputs and "path" in inputs[0] else None


def load_chunks(path: str | Path) -> dict[str, str]:
    out = {}
    for _, rec in read_jsonl(path):
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            sha = rec.get("chunk_sha") or hashlib.sha256(rec["text"].encode()).hexdigest()[:16]
            out[sha] = rec["text"]
    return out


# --------------------------------------------------------------------------- calibration


def distribution(scores: list[float], threshold: float) -> dict:
    if not scores:
        return {"n": 0}
    s = sorted(scores)
    q = statistics.quantiles(s, n=10, method="inclusive") if len(s) > 1 else [s[0]] * 9
    hist = Counter(min(int(x // 10), 9) for x in s)
    return {
        "n": len(s),
        "mean": round(statistics.fmean(s), 2),
        "median": statistics.median(s),
        "p10": round(q[0], 2),
        "p90": round(q[-1], 2),
        "min": s[0],
        "max": s[-1],
        "at_or_above_threshold": sum(x >= threshold for x in s),
        "histogram": {
            f"{b * 10}-{b * 10 + 9 if b < 9 else 100}": hist.get(b, 0) for b in range(10)
        },
    }


def _pearson(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or statistics.pstdev(a) == 0 or statistics.pstdev(b) == 0:
        return None
    return round(statistics.correlation(a, b), 3)


def agreement(a: list[float], b: list[float], threshold: float) -> dict:
    """How two judges' overall scores on the same records agree."""
    n = len(a)
    if n == 0:
        return {"n": 0}
    keep_a = [x >= threshold for x in a]
    keep_b = [x >= threshold for x in b]
    observed = sum(x == y for x, y in zip(keep_a, keep_b, strict=True)) / n
    pa, pb = sum(keep_a) / n, sum(keep_b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    kappa = None if expected == 1 else round((observed - expected) / (1 - expected), 3)
    diffs = [abs(x - y) for x, y in zip(a, b, strict=True)]
    return {
        "n": n,
        "pearson": _pearson(a, b),
        "mean_abs_diff": round(statistics.fmean(diffs), 2),
        "within_10_points": round(sum(d <= 10 for d in diffs) / n, 3),
        "keep_decision_agreement": round(observed, 3),
        "cohen_kappa_keep": kappa,
    }


def calibration_lines(cal: dict) -> list[str]:
    """A few lines a person reads after a grading run."""
    out = []
    for name, d in [("combined", cal["combined"])] + [(j["model"], j) for j in cal["judges"]]:
        if not d.get("n"):
            out.append(f"{name}: no usable grades")
            continue
        out.append(
            f"{name}: n={d['n']} mean {d['mean']:g} median {d['median']:g} p10 {d['p10']:g} "
            f"p90 {d['p90']:g}; {d['at_or_above_threshold']} at or above {cal['threshold']:g}"
        )
        if len(cal["judges"]) == 1:
            break
    if ag := cal.get("agreement"):
        if ag.get("n"):
            out.append(
                f"agreement on {ag['n']} records: pearson {ag['pearson']}, mean |diff| "
                f"{ag['mean_abs_diff']}, keep/drop agree {ag['keep_decision_agreement']:.0%}, "
                f"kappa {ag['cohen_kappa_keep']}"
            )
    return out


def spotcheck_markdown(sample: list[dict], threshold: float) -> str:
    lines = [
        "# Spot check of judge grades",
        "",
        f"{len(sample)} records drawn at random. For each, read the passage, question and answer,",
        f"and mark whether you agree with the judge (kept at {threshold:g} or more).",
        "",
    ]
    for i, s in enumerate(sample, start=1):
        lines += [
            f"## {i}. `{s['id']}`: score {s['score']:g}, {'kept' if s['kept'] else 'dropped'}",
            "",
        ]
        for j in s["judges"]:
            scores = ", ".join(f"{k} {v:g}" for k, v in j["scores"].items())
            lines.append(f"- **{j['model']}**: {j['overall']:g} ({scores}): {j['critique']}")
        passage = s["chunk"][:1200] + (" [...]" if len(s["chunk"]) > 1200 else "")
        lines += [
            "",
            "**Passage**",
            "",
            "> " + passage.replace("\n", "\n> "),
            "",
            f"**Question:** {s['question']}",
            "",
            f"**Answer:** {s['answer']}",
            "",
            "Verdict: [ ] agree  [ ] disagree",
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- run


@dataclass
class GradeConfig:
    input: str
    out: str
    judges: list[Endpoint]
    chunks: str | None = None
    prompt: str = "grade_answer"
    threshold: float = 90.0
    combine: str = "min"
    sampling: dict = field(default_factory=dict)  # over the prompt's and the defaults
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"
    retry_failed: bool = False
    spot_check: int = 20
    spot_check_seed: int = 0  # chooses the spot-check sample (the judges' seed is in sampling)


class Gradable(NamedTuple):
    """One input record that can be graded, with its source passage."""

    line: int
    record: dict
    id: str
    chunk: str
    question: str
    answer: str


class GradeJob(JournaledJob[GradeConfig]):
    """One item per record and judge; its entry holds the judge's grade or why there is none."""

    kind = "grade"
    fields = GRADE_FIELDS
    labels = {
        **{name: name for name in RUBRIC},
        "score": "overall",  # a one-score prompt's score is the overall
        "critique": "critique",
        "reason": "critique",
    }
    default_sampling = {"temperature": 0.0, "max_tokens": 512}

    def __init__(self, cfg: GradeConfig) -> None:
        if not 1 <= len(cfg.judges) <= 2:
            raise DataError("give one judge, or two to measure their agreement")
        if cfg.combine not in ("min", "mean"):
            raise DataError("--combine must be min or mean")
        super().__init__(cfg, cfg.judges)
        self.chunks_path = Path(cfg.chunks) if cfg.chunks else chunks_file_for(cfg.input)
        if self.chunks_path is None:
            raise DataError(f"{cfg.input}: no manifest naming its chunk file; pass --chunks")
        if not self.chunks_path.is_file():
            raise DataError(f"{self.chunks_path}: chunk file not found (pass --chunks)")
        self.records = self._read(load_chunks(self.chunks_path))
        self.items = [
            (self.key(r.id, j), (r, j)) for r in self.records for j in range(len(cfg.judges))
        ]

    def _read(self, chunks: dict[str, str]) -> list[Gradable]:
        records: list[Gradable] = []
        seen: set[str] = set()
        for lineno, rec in read_jsonl(self.cfg.input):
            if isinstance(rec, Reject):
                self.input_rejects.append(rec.to_json())
                continue
            qa = question_answer(rec)
            source = rec.get("source")
            sha = source.get("chunk_sha") if isinstance(source, dict) else None
            rid = record_id(rec)
            if qa is None:
                reason = "not gradable: no user question followed by an assistant answer"
            elif sha not in chunks:
                reason = f"no source chunk: chunk {sha} is not in {self.chunks_path}"
            elif rid in seen:
                reason = f"duplicate record: id {rid} seen before"
            else:
                seen.add(rid)
                records.append(Gradable(lineno, rec, rid, chunks[sha], *qa))
                continue
            self.input_rejects.append(Reject(self.cfg.input, lineno, reason, rec).to_json())
        return records

    def key(self, rid: str, j: int) -> str:
        return f"{rid}|j{j}:{self.cfg.judges[j].model}"

    def header(self) -> dict:
        return {"judges": [e.public() for e in self.cfg.judges]}

    def sources(self) -> list[tuple[Path, dict]]:
        return [(self.chunks_path, {"role": "source chunks"})]

    def request(self, payload: tuple[Gradable, int]) -> tuple[int, list[dict]]:
        r, j = payload
        return j, self.prompt.messages(chunk=r.chunk, question=r.question, answer=r.answer)

    def answer(self, payload: tuple[Gradable, int], answer: Answer) -> dict:
        obj = answer.obj
        if self.prompt.output == "lines":  # a judge that repeats a label: its first grade
            obj = obj[0]
        return {"grade": parse_grade(obj)}

    def failure(self, payload: tuple[Gradable, int], reason: str, answer: Answer | None) -> dict:
        if answer is None:
            return {"reason": reason}
        return {"reason": f"judge output unusable: {reason}", "raw": answer.raw}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        cfg = self.cfg
        kept, rejects, grades = [], [], []
        per_judge: list[dict[str, float]] = [{} for _ in cfg.judges]
        combined: list[float] = []
        pool: list[dict] = []  # graded records the spot check draws from
        for r in self.records:
            judges = []
            for j, judge in enumerate(cfg.judges):
                e = latest[self.key(r.id, j)]
                info = {
                    "model": judge.model,
                    "prompt": self.prompt.name,
                    "prompt_version": e.get("prompt_version"),
                }
                if "grade" in e:
                    info.update(e["grade"])
                    per_judge[j][r.id] = e["grade"]["overall"]
                else:
                    info.update({"error": e["reason"], **({"raw": e["raw"]} if "raw" in e else {})})
                judges.append(info)
            failed = [j for j in judges if "error" in j]
            if failed:
                score, ok, grade = None, False, {"judges": judges}
                reason = "not graded: " + "; ".join(f"{j['model']}: {j['error']}" for j in failed)
            else:
                overall = [j["overall"] for j in judges]
                score = (
                    min(overall) if cfg.combine == "min" else round(statistics.fmean(overall), 2)
                )
                ok = score >= cfg.threshold
                grade = {
                    "score": score,
                    "threshold": cfg.threshold,
                    "combine": cfg.combine,
                    "judges": judges,
                }
                reason = f"below threshold: score {score:g} < {cfg.threshold:g}"
                combined.append(score)
            row = {"id": r.id, "kept": ok, "score": score, "judges": judges}
            grades.append(row)
            if score is not None:
                pool.append({**row, "chunk": r.chunk, "question": r.question, "answer": r.answer})
            if ok:
                kept.append({**r.record, "grade": grade})
            else:
                record = {**r.record, "grade": grade}
                rejects.append(Reject(cfg.input, r.line, reason, record).to_json())

        calibration: dict = {
            "threshold": cfg.threshold,
            "combine": cfg.combine,
            "records": len(self.records),
            "graded": len(combined),
            "kept": len(kept),
            "combined": distribution(combined, cfg.threshold),
            "judges": [
                {"model": judge.model, **distribution(list(scores.values()), cfg.threshold)}
                for judge, scores in zip(cfg.judges, per_judge, strict=True)
            ],
        }
        if len(cfg.judges) == 2:
            both = [rid for rid in per_judge[0] if rid in per_judge[1]]
            calibration["agreement"] = agreement(
                [per_judge[0][r] for r in both], [per_judge[1][r] for r in both], cfg.threshold
            )
        sample = random.Random(cfg.spot_check_seed).sample(pool, min(cfg.spot_check, len(pool)))
        write_jsonl(sibling(cfg.out, ".grades.jsonl"), grades)
        write_json(sibling(cfg.out, ".calibration.json"), calibration)
        with atomic_writer(sibling(cfg.out, ".spotcheck.md")) as fh:
            fh.write(spotcheck_markdown(sample, cfg.threshold))
        manifest = {
            "judges": [e.public() for e in cfg.judges],
            "sampling": self.sampling,
            "threshold": cfg.threshold,
            "combine": cfg.combine,
            "calibration": calibration,
        }
        return Outcome(kept, rejects, manifest)


def run_grade(cfg: GradeConfig, echo: Callable[[str], None] = print) -> dict:
    """Grade, journal, and write the kept records, grades, calibration and spot check."""
    job = GradeJob(cfg)
    run = job.run(echo)
    calibration = run.outcome.manifest["calibration"]
    for line in calibration_lines(calibration):
        echo(line)
    return {
        "output": str(cfg.out),
        "records": len(job.records),
        "graded": calibration["graded"],
        "kept": run.kept,
        "rejects": run.rejects,
        "resumed": run.resumed,
        "requests": run.usage.requests,
        "score_mean": calibration["combined"].get("mean"),
        "agreement": calibration.get("agreement"),
    }
