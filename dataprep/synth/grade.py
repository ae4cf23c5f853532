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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import (
    DataError,
    Manifest,
    Reject,
    atomic_writer,
    manifest_path,
    read_jsonl,
    read_text,
    reason_group,
    write_json,
    write_jsonl,
    write_rejects,
)
from cosmosage.dataprep.synth.generate import RAW_LIMIT
from cosmosage.dataprep.synth.journal import run_journaled
from cosmosage.dataprep.synth.llm import (
    Endpoint,
    RequestFailed,
    RetryPolicy,
    Usage,
    complete,
    make_client,
    safe_command,
    scrub,
)
from cosmosage.dataprep.synth.parse import ParseError, as_number, extract_json
from cosmosage.dataprep.synth.prompts import load_prompt

GRADE_FIELDS = {"chunk", "question", "answer"}
RUBRIC = ("correctness", "clarity", "pertinence", "overall")


def side_path(output: str | Path, suffix: str) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + suffix)


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
            lines.append(
                f"- **{j['model']}**: {j['overall']:g} ({', '.join(f'{k} {v:g}' for k, v in j['scores'].items())}): {j['critique']}"
            )
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
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 512})
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"
    retry_failed: bool = False
    spot_check: int = 20
    seed: int = 0


def run_grade(cfg: GradeConfig, echo=print) -> dict:
    """Grade, journal, and write the kept records, grades, calibration and spot check."""
    if not 1 <= len(cfg.judges) <= 2:
        raise DataError("give one judge, or two to measure their agreement")
    if cfg.combine not in ("min", "mean"):
        raise DataError("--combine must be min or mean")
    prompt = load_prompt(cfg.prompt)
    prompt.check(GRADE_FIELDS)
    chunks_path = Path(cfg.chunks) if cfg.chunks else chunks_file_for(cfg.input)
    if chunks_path is None:
        raise DataError(f"{cfg.input}: no manifest naming its chunk file; pass --chunks")
    if not chunks_path.is_file():
        raise DataError(f"{chunks_path}: chunk file not found (pass --chunks)")
    chunks = load_chunks(chunks_path)

    input_rejects: list[dict] = []
    records: list[tuple[int, dict, str, str, str, str]] = []  # line, record, id, chunk, q, a
    seen: set[str] = set()
    for lineno, rec in read_jsonl(cfg.input):
        if isinstance(rec, Reject):
            input_rejects.append(rec.to_json())
            continue
        qa = question_answer(rec)
        if qa is None:
            input_rejects.append(
                Reject(
                    cfg.input,
                    lineno,
                    "not gradable: no user question followed by an assistant answer",
                    rec,
                ).to_json()
            )
            continue
        sha = (
            (rec.get("source") or {}).get("chunk_sha")
            if isinstance(rec.get("source"), dict)
            else None
        )
        if sha not in chunks:
            input_rejects.append(
                Reject(
                    cfg.input, lineno, f"no source chunk: chunk {sha} is not in {chunks_path}", rec
                ).to_json()
            )
            continue
        rid = record_id(rec)
        if rid in seen:
            input_rejects.append(
                Reject(cfg.input, lineno, f"duplicate record: id {rid} seen before", rec).to_json()
            )
            continue
        seen.add(rid)
        records.append((lineno, rec, rid, chunks[sha], *qa))

    def judge_key(rid: str, j: int) -> str:
        return f"{rid}|j{j}:{cfg.judges[j].model}"

    items = [(judge_key(r[2], j), (r, j)) for r in records for j in range(len(cfg.judges))]
    usage = Usage()
    clients = [make_client(e) for e in cfg.judges]
    rng = random.Random()

    async def work(key: str, payload) -> dict:
        (lineno, rec, rid, chunk, q, a), j = payload
        messages = prompt.messages(chunk=chunk, question=q, answer=a)
        try:
            c = await complete(
                clients[j], cfg.judges[j], messages, cfg.sampling, cfg.retry, usage, rng
            )
        except RequestFailed as exc:
            return {"failed": "request", "reason": f"request failed: {exc.reason}"}
        text = scrub(c.text, cfg.judges[j])
        used = {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "attempts": c.attempts,
        }
        try:
            obj, _ = extract_json(text, c.finish_reason)
            grade = parse_grade(obj)
        except ParseError as exc:
            return {
                "failed": "parse",
                "reason": f"judge output unusable: {exc.reason}",
                "raw": text[:RAW_LIMIT],
                "usage": used,
            }
        return {"grade": grade, "usage": used}

    header = {
        "kind": "grade",
        "input": str(cfg.input),
        "prompt": prompt.provenance(),
        "judges": [e.public() for e in cfg.judges],
    }
    result = run_journaled(
        cfg.out,
        header,
        items,
        work,
        prompt_version=prompt.version,
        policy=cfg.prompt_change,
        retry_failed=cfg.retry_failed,
        concurrency=cfg.concurrency,
        desc="grade",
        usage=usage,
        clients=clients,
        echo=echo,
    )

    kept, rejects, grades = [], list(input_rejects), []
    per_judge: list[dict[str, float]] = [{} for _ in cfg.judges]
    combined: list[float] = []
    graded_for_sample: list[dict] = []
    for lineno, rec, rid, chunk, q, a in records:
        entries = [result.latest[judge_key(rid, j)] for j in range(len(cfg.judges))]
        judges = []
        for j, e in enumerate(entries):
            info = {
                "model": cfg.judges[j].model,
                "prompt": prompt.name,
                "prompt_version": e.get("prompt_version"),
            }
            if "grade" in e:
                info.update(e["grade"])
                per_judge[j][rid] = e["grade"]["overall"]
            else:
                info.update({"error": e["reason"], **({"raw": e["raw"]} if "raw" in e else {})})
            judges.append(info)
        failed = [j for j in judges if "error" in j]
        if failed:
            reason = "; ".join(f"{j['model']}: {j['error']}" for j in failed)
            rejects.append(
                Reject(
                    cfg.input, lineno, f"not graded: {reason}", {**rec, "grade": {"judges": judges}}
                ).to_json()
            )
            grades.append({"id": rid, "kept": False, "score": None, "judges": judges})
            continue
        overall = [j["overall"] for j in judges]
        score = min(overall) if cfg.combine == "min" else round(statistics.fmean(overall), 2)
        combined.append(score)
        grade = {
            "score": score,
            "threshold": cfg.threshold,
            "combine": cfg.combine,
            "judges": judges,
        }
        ok = score >= cfg.threshold
        grades.append({"id": rid, "kept": ok, "score": score, "judges": judges})
        graded_for_sample.append(
            {
                "id": rid,
                "score": score,
                "kept": ok,
                "judges": judges,
                "chunk": chunk,
                "question": q,
                "answer": a,
            }
        )
        if ok:
            kept.append({**rec, "grade": grade})
        else:
            rejects.append(
                Reject(
                    cfg.input,
                    lineno,
                    f"below threshold: score {score:g} < {cfg.threshold:g}",
                    {**rec, "grade": grade},
                ).to_json()
            )

    calibration: dict = {
        "threshold": cfg.threshold,
        "combine": cfg.combine,
        "records": len(records),
        "graded": len(combined),
        "kept": len(kept),
        "combined": distribution(combined, cfg.threshold),
        "judges": [
            {
                "model": cfg.judges[j].model,
                **distribution(list(per_judge[j].values()), cfg.threshold),
            }
            for j in range(len(cfg.judges))
        ],
    }
    if len(cfg.judges) == 2:
        both = [rid for rid in per_judge[0] if rid in per_judge[1]]
        calibration["agreement"] = agreement(
            [per_judge[0][r] for r in both], [per_judge[1][r] for r in both], cfg.threshold
        )

    for line in calibration_lines(calibration):
        echo(line)
    sample = random.Random(cfg.seed).sample(
        graded_for_sample, min(cfg.spot_check, len(graded_for_sample))
    )
    write_jsonl(side_path(cfg.out, ".grades.jsonl"), grades)
    write_json(side_path(cfg.out, ".calibration.json"), calibration)
    with atomic_writer(side_path(cfg.out, ".spotcheck.md")) as fh:
        fh.write(spotcheck_markdown(sample, cfg.threshold))

    manifest = Manifest(
        str(cfg.out),
        command=safe_command(),
        extra={
            "step": "grade",
            "prompt": {**prompt.provenance(), "path": prompt.path},
            "judges": [e.public() for e in cfg.judges],
            "sampling": cfg.sampling,
            "threshold": cfg.threshold,
            "combine": cfg.combine,
            "calibration": calibration,
            "usage_this_run": usage.to_json(),
            "resume": result.to_json(),
        },
    )
    manifest.add_input(cfg.input)
    manifest.add_input(chunks_path, role="source chunks")
    manifest.kept = write_jsonl(cfg.out, kept)
    manifest.dropped.update(reason_group(r["reason"]) for r in rejects)
    write_rejects(
        cfg.out, (Reject(r["source"], r["line"], r["reason"], r.get("record")) for r in rejects)
    )
    manifest.write()
    return {
        "output": str(cfg.out),
        "records": len(records),
        "graded": len(combined),
        "kept": len(kept),
        "rejects": len(rejects),
        "resumed": result.resumed,
        "requests": usage.requests,
        "score_mean": calibration["combined"].get("mean"),
        "agreement": calibration.get("agreement"),
    }
