"""The processes a run starts, and the only place that starts them (`run_command`):
Axolotl's training with its environment and command line, and the `cosmosage data ...`
builds a recipe names, each rerun only when its command, its inputs or the code that runs
it changed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

from tqdm import tqdm

from cosmosage.dataprep.env import child_env
from cosmosage.dataprep.io import write_json
from cosmosage.dataprep.records import record_strings
from cosmosage.tools.run.codehash import build_code
from cosmosage.tools.run.stage import Echo, LaunchError


def is_offline(cfg: dict, root: Path) -> bool:
    """True when the model and every dataset are local, so nothing needs the Hub."""
    paths = [cfg.get("base_model", "")]
    paths += [
        ds.get("path", "") for ds in (cfg.get("datasets") or []) + (cfg.get("test_datasets") or [])
    ]
    return all(
        p and (Path(p).is_absolute() or (root / p).exists() or p.startswith(("build/", "runs/")))
        for p in paths
    )


def build_env(cfg: dict, root: Path, meta: dict | None = None) -> dict[str, str]:
    """The training process's environment. A stage whose hardware profile has one GPU is
    pinned to one device (the first of CUDA_VISIBLE_DEVICES, else 0): it runs as a single
    process, and Axolotl then loads the model with `device_map: auto`, which would spread
    it over every GPU of the machine. `recipe.env` adds variables of the recipe's own."""
    env = child_env(local=is_offline(cfg, root))
    if not cfg.get("wandb_project"):
        env.setdefault("WANDB_MODE", "disabled")
    for key, value in ((meta or {}).get("env") or {}).items():  # the recipe's `recipe.env`
        env[str(key)] = str(value)
    if int(((meta or {}).get("hardware") or {}).get("gpus") or 0) == 1:
        visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "0").split(",")]
        visible = [d for d in visible if d]
        if visible:  # an empty CUDA_VISIBLE_DEVICES hides every GPU: leave it so
            env["CUDA_VISIBLE_DEVICES"] = visible[0]
    return env


def axolotl_bin() -> str:
    exe = Path(sys.executable).parent / "axolotl"
    return str(exe) if exe.exists() else "axolotl"


def build_argv(config_path: str | Path, meta: dict) -> list[str]:
    """The training command for a rendered stage; pure."""
    hw = meta.get("hardware") or {}
    launcher = hw.get("launcher") or ("accelerate" if int(hw.get("gpus") or 0) > 1 else "python")
    argv = [axolotl_bin(), "train", str(config_path), "--launcher", launcher]
    extra = hw.get("launcher_args") or []
    if extra:
        argv += ["--", *map(str, extra)]
    return argv


_STEP_RE = re.compile(r"(\d+)/(\d+) \[")


def run_command(
    argv: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    total_steps: int | None = None,
    desc: str = "train",
) -> int:
    """Run a process, send all its output to `log_path`, and show a step progress bar."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=total_steps, desc=desc, unit="step", disable=None, leave=True, dynamic_ncols=True
    )
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        assert proc.stdout is not None
        buf = b""
        try:
            while chunk := proc.stdout.read1(4096):
                log.write(chunk)
                buf = (buf + chunk)[-4096:]
                for m in _STEP_RE.finditer(buf.decode("utf-8", "replace")):
                    done, total = int(m.group(1)), int(m.group(2))
                    if total_steps and total == total_steps and done > bar.n:
                        bar.update(done - bar.n)
                buf = buf[-64:]
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            bar.close()


def tail(path: Path, n: int = 25) -> str:
    if not path.is_file():
        return ""
    lines: deque[str] = deque(maxlen=n)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            lines.append(line.rstrip("\n").split("\r")[-1])
    return "\n".join(lines)


# --------------------------------------------------------------------------- builds


def _fingerprint(paths: list[Path]) -> list[list]:
    out = []
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def build_stamp(output: str, root: Path) -> Path:
    return root / "build" / ".stamps" / (re.sub(r"[^A-Za-z0-9._-]+", "_", output) + ".json")


# options whose value is where a build writes (`--out`, `--out-dir`, `--val-out`): never
# an input, or a folder that several builds write into would make each of them stale
# whenever another one wrote there
_OUTPUT_OPTION = re.compile(r"^--([\w-]+-)?out(-dir)?$")


def build_state(build: dict, root: Path) -> dict:
    args = [str(a) for a in build.get("command", [])]
    outputs = {str(build["output"]), *map(str, build.get("extra_outputs") or [])}
    written = {b for a, b in zip(args, args[1:], strict=False) if _OUTPUT_OPTION.match(a)}
    inputs = [
        root / a
        for a in args
        if a not in outputs | written and not a.startswith("-") and (root / a).exists()
    ]
    state = {"command": args, "inputs": _fingerprint(inputs)}
    code = build_code(args)  # None outside the CLI: the stamp then has no "code"
    return state | ({"code": code} if code else {})


def stale_reason(build: dict, root: Path) -> str | None:
    """Why `build` must run (None: it is up to date): an output missing, never built
    here, or its command, inputs or code changed since its stamp was written."""
    stamp = build_stamp(str(build["output"]), root)
    outputs = [build["output"], *(build.get("extra_outputs") or [])]
    if not all((root / o).exists() for o in outputs):
        return "output missing"
    if not stamp.is_file():
        return "not built by a run here"
    old, new = json.loads(stamp.read_text()), build_state(build, root)
    changed = [what for what in ("command", "inputs", "code") if old.get(what) != new.get(what)]
    if "code" in changed and "code" not in new:
        changed.remove("code")  # checked outside the CLI: the code is not known
    if changed == ["code"] and "code" not in old:
        return "stamped before builds recorded their code"
    names = {"command": "its command", "inputs": "its inputs", "code": "the code that runs it"}
    return " and ".join(names[c] for c in changed) + " changed" if changed else None


def stale_builds(meta: dict, root: Path) -> list[dict]:
    return [b for b in meta.get("builds") or [] if stale_reason(b, root)]


def cosmosage_argv(args: list[str]) -> list[str]:
    """The `cosmosage ...` command line of a build, run with this environment's Python."""
    return [sys.executable, "-m", "cosmosage.tools.cli.main", *map(str, args)]


def needed_builds(meta: dict, config: dict) -> tuple[list[dict], list[dict]]:
    """(builds to keep, builds skipped): a build is skipped when its outputs are named only
    by choices the run did not pick (`recipe.choices`) or by skipped builds, and neither
    the run nor a kept build reads them. A recipe of many choices (the facts study's
    formats) builds what its run trains on; a build nothing names is always kept."""
    choices, chosen = meta.get("choices") or {}, meta.get("choose") or {}
    unchosen = set(record_strings(
        [b for axis, bundles in choices.items() if isinstance(bundles, dict)
         for name, b in bundles.items() if str(name) != str(chosen.get(axis))]
    ))  # fmt: skip
    rest = {k: v for k, v in meta.items() if k not in ("choices", "builds")}
    used = set(record_strings(config)) | set(record_strings(rest))
    keep, skip, read, read_by_skipped = [], [], set(), set()
    for b in reversed(meta.get("builds") or []):
        outs = {str(b["output"]), *map(str, b.get("extra_outputs") or [])}
        args = set(map(str, b.get("command") or []))
        if outs & (unchosen | read_by_skipped) and not outs & (used | read):
            skip.append(b)
            read_by_skipped |= args
        else:
            keep.append(b)
            read |= args
    return keep[::-1], skip[::-1]


def ensure_builds(meta: dict, root: Path, echo: Echo, config: dict | None = None) -> list[str]:
    """Run the `cosmosage ...` command of every missing or stale build, in order, each as
    a subprocess from the project root with its output in build/logs/. Given the stage's
    rendered `config`, builds that only unchosen choices use are left alone."""
    builds = meta.get("builds") or []
    if config is not None:
        builds, skipped = needed_builds(meta, config)
        for b in skipped:
            if b in stale_builds({"builds": [b]}, root):
                echo(f"skip   build {b['output']}: only choices this run did not pick use it")
    done = []
    for b in builds:
        why = stale_reason(b, root)
        if not why:
            continue
        args = [str(a) for a in b.get("command", [])]
        log = root / "build" / "logs" / (build_stamp(str(b["output"]), root).stem + ".log")
        echo(f"build  {b['output']} ({why})  <- cosmosage {' '.join(args)}  (log: {log})")
        rc = run_command(cosmosage_argv(args), log, cwd=root, desc="build")
        if rc != 0:
            raise LaunchError(
                f"build of {b['output']} failed (exit {rc}); last lines of {log}:\n{tail(log)}"
            )
        write_json(build_stamp(str(b["output"]), root), build_state(b, root))
        done.append(str(b["output"]))
    return done
