"""`recipe run`: render -> check -> build data -> train with Axolotl -> select -> merge ->
evaluate -> card -> record. Every step writes into the run folder

    runs/<recipe>/<run-id>/
      run.json                 status, timings, lineage of every stage
      <stage>/axolotl.yaml     exactly what Axolotl was given
      <stage>/train.log        Axolotl's output
      <stage>/metrics.json     loss per step, eval loss per step, best checkpoint
      <stage>/output/          Axolotl's output_dir (checkpoints)
      <stage>/model/           the selected checkpoint, merged into full weights
      <stage>/mergekit.yaml    a soup stage (`recipe.soup`): what mergekit was given
      <stage>/merge_check.json a LoRA merge's logits against base + adapter (peft)
      eval/                    prompt-suite answers of the base and final model
      publish/                 final model + model card, ready for `cosmosage model publish`
      summary.md

`run_command` is the only function here that starts a process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from cosmosage.dataprep.io import DataError, sha256_file, write_json
from cosmosage.tools.models import merge, soup
from cosmosage.tools.recipe import check
from cosmosage.tools.recipe.render import (
    ROOT,
    RecipeError,
    Rendered,
    recipes_dir,
    render,
    to_yaml,
)
from cosmosage.tools.run import card, evaluation, metrics, registry

Echo = Callable[[str], None]


class LaunchError(Exception):
    """A step of a run failed; the message says which and where its log is."""


@dataclass
class Stage:
    name: str  # recipe name, e.g. quickstart/pretrain
    key: str  # folder in the run, e.g. pretrain
    rendered: Rendered


# --------------------------------------------------------------------------- planning


def plan(
    name: str, sets: list[str] | None = None, unsets: list[str] | None = None, root: Path = ROOT
) -> tuple[Rendered, list[Stage]]:
    """The top recipe and its stages (itself, for a single-stage recipe)."""
    top = render(name, sets, unsets, root)
    names = top.stages or [name]
    stages = []
    for stage_name in names:
        r = top if stage_name == name else render(stage_name, sets, unsets, root)
        if r.is_pipeline:
            raise RecipeError(
                f"{name}: stage {stage_name!r} is itself a pipeline; list its stages instead"
            )
        key = stage_name.rsplit("/", 1)[-1]
        stages.append(Stage(stage_name, key, r))
    keys = [s.key for s in stages]
    if len(set(keys)) != len(keys):
        raise RecipeError(f"{name}: two stages would share a folder name: {keys}")
    return top, stages


def resolve_parent(stage: Stage, previous: dict[str, str], runs_dir: Path) -> str | None:
    """base_model for a stage whose `recipe.parent` is another recipe."""
    parent = stage.rendered.meta.get("parent")
    if not parent:
        return None
    if parent in previous:
        return previous[parent]
    found = registry.latest_model(runs_dir, parent)
    if found:
        return found
    raise LaunchError(
        f"{stage.name} starts from {parent}, which has no finished run yet: run `make recipe NAME={parent}` first"
    )


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
    it over every GPU of the machine."""
    env = dict(os.environ)
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not cfg.get("wandb_project"):
        env.setdefault("WANDB_MODE", "disabled")
    if is_offline(cfg, root):
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
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


# --------------------------------------------------------------------------- processes

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


def build_state(build: dict, root: Path) -> dict:
    args = [str(a) for a in build.get("command", [])]
    outputs = {str(build["output"]), *map(str, build.get("extra_outputs") or [])}
    inputs = [
        root / a for a in args if a not in outputs and not a.startswith("-") and (root / a).exists()
    ]
    return {"command": args, "inputs": _fingerprint(inputs)}


def stale_builds(meta: dict, root: Path) -> list[dict]:
    out = []
    for b in meta.get("builds") or []:
        stamp = build_stamp(str(b["output"]), root)
        outputs = [b["output"], *(b.get("extra_outputs") or [])]
        if (
            not all((root / o).exists() for o in outputs)
            or not stamp.is_file()
            or json.loads(stamp.read_text()) != build_state(b, root)
        ):
            out.append(b)
    return out


def cosmosage_argv(args: list[str]) -> list[str]:
    """The `cosmosage ...` command line of a build, run with this environment's Python."""
    return [sys.executable, "-m", "cosmosage.tools.cli.main", *map(str, args)]


def ensure_builds(meta: dict, root: Path, echo: Echo) -> list[str]:
    """Run the `cosmosage ...` command of every missing or stale build, in order, each as
    a subprocess from the project root with its output in build/logs/."""
    done = []
    for b in meta.get("builds") or []:
        if b not in stale_builds({"builds": [b]}, root):
            continue
        args = [str(a) for a in b.get("command", [])]
        log = root / "build" / "logs" / (build_stamp(str(b["output"]), root).stem + ".log")
        echo(f"build  {b['output']}  <- cosmosage {' '.join(args)}  (log: {log})")
        rc = run_command(cosmosage_argv(args), log, cwd=root, desc="build")
        if rc != 0:
            raise LaunchError(
                f"build of {b['output']} failed (exit {rc}); last lines of {log}:\n{tail(log)}"
            )
        write_json(build_stamp(str(b["output"]), root), build_state(b, root))
        done.append(str(b["output"]))
    return done


# --------------------------------------------------------------------------- runs


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def find_resumable(runs_dir: Path, name: str) -> Path | None:
    base = runs_dir / name
    if not base.is_dir():
        return None
    for d in sorted(base.iterdir(), reverse=True):
        run_json = d / "run.json"
        if run_json.is_file() and json.loads(run_json.read_text()).get("status") != "complete":
            return d
    return None


def stage_config(stage: Stage, base_model: str | None, stage_dir: Path, resume: bool) -> dict:
    cfg = dict(stage.rendered.config)
    if base_model:
        cfg["base_model"] = base_model
    cfg["output_dir"] = str(stage_dir / "output")
    cfg.setdefault("dataset_prepared_path", str(stage_dir / "prepared"))
    if resume and metrics.checkpoints(stage_dir / "output"):
        cfg["auto_resume_from_checkpoints"] = True
    return cfg


def data_hashes(cfg: dict, root: Path) -> dict[str, str]:
    out = {}
    for ds in (cfg.get("datasets") or []) + (cfg.get("test_datasets") or []):
        p = root / str(ds.get("path", ""))
        if p.is_file():
            out[str(ds["path"])] = sha256_file(p)
    return out


def finalize_model(cfg: dict, meta: dict, stage_dir: Path, best: dict | None) -> Path:
    """The stage's selected checkpoint as a plain model folder at <stage>/model."""
    output = stage_dir / "output"
    dst = stage_dir / "model"
    if cfg.get("relora"):
        # ReLoRA merges into the full weights at every restart; its output holds full weights.
        return merge.copy_model(output, dst)
    src = Path(best["path"]) if best else output
    if merge.is_adapter(src):
        model = merge.merge_adapter(cfg["base_model"], src, dst, tokenizer_from=output)
        try:
            found = merge.check_merge(cfg["base_model"], src, model, tokenizer_from=output)
        except merge.MergeCheckError as exc:
            c = exc.check
            raise LaunchError(
                f"merge check failed for stage {stage_dir.name}: max |logit difference| "
                f"{c.max_abs_diff:.3g} between {model} and its base + adapter is above the "
                f"tolerance {c.tolerance:.3g} ({c.dtype}, {c.tokens} tokens)"
            ) from exc
        write_json(stage_dir / "merge_check.json", asdict(found))
        return model
    return merge.copy_model(src, dst, tokenizer_from=output)


def write_stage_config(stage: Stage, cfg: dict, stage_dir: Path, verb: str = "rendered") -> Path:
    """The stage's complete Axolotl config as stage_dir/axolotl.yaml, with a header naming
    the recipe files it came from."""
    cfg_path = stage_dir / "axolotl.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    files = ", ".join(stage.rendered.files)
    cfg_path.write_text(to_yaml(cfg, header=f"{verb} from recipe {stage.name}; files: {files}"))
    return cfg_path


def run_stage(stage: Stage, cfg: dict, stage_dir: Path, root: Path, echo: Echo) -> dict:
    env = build_env(cfg, root, stage.rendered.meta)
    rule = stage.rendered.meta.get("select") or {}
    if isinstance(rule, dict) and rule.get("patience"):
        # early stopping on the rule: the plugin asks each checkpoint as it is saved
        from cosmosage.tools.run import early_stop

        cfg = {**cfg, "plugins": [*(cfg.get("plugins") or []), early_stop.PLUGIN]}
        stage_dir.mkdir(parents=True, exist_ok=True)
        env[early_stop.ENV] = str(early_stop.write_spec(stage_dir, rule, cfg, root))
        echo(
            f"select {stage.key}: each checkpoint asked as it is saved; training stops once "
            f"{rule['patience']} saved after the best have not beaten it"
        )
    cfg_path = write_stage_config(stage, cfg, stage_dir)
    argv = build_argv(cfg_path, stage.rendered.meta)
    log = stage_dir / "train.log"
    echo(f"train  {stage.name}: {' '.join(argv[1:])}  (log: {log})")
    t0 = time.time()
    rc = run_command(
        argv,
        log,
        env=env,
        cwd=root,
        total_steps=cfg.get("max_steps"),
        desc=stage.key,
    )
    if rc != 0:
        raise LaunchError(
            f"axolotl train failed for {stage.name} (exit {rc}); last lines of {log}:\n{tail(log)}"
        )
    m = metrics.collect(stage_dir / "output")
    m["wall_s"] = round(time.time() - t0, 1)
    if stage.rendered.meta.get("select"):
        from cosmosage.tools.run.select import select_checkpoint

        try:
            m["best_checkpoint"] = select_checkpoint(
                cfg, stage.rendered.meta["select"], stage_dir, m, root, echo
            )
        except DataError as exc:
            raise LaunchError(f"{stage.name}: {exc}") from exc
    best = m["best_checkpoint"]
    echo(
        f"select {stage.key}: checkpoint step {best['step'] if best else '-'} "
        f"(eval loss {m['eval_loss_before']} -> {m['eval_loss_best']})"
    )
    model = finalize_model(cfg, stage.rendered.meta, stage_dir, best)
    m["model"] = str(model)
    write_json(stage_dir / "metrics.json", m)
    return m


# --------------------------------------------------------------------------- soups


def resolve_soup_model(ref: str, previous: dict[str, str], runs_dir: Path, root: Path) -> str:
    """A soup ingredient: a recipe name (this run's stage of it, else its latest finished
    run), a model folder (relative to the project) or a Hub id."""
    if ref in previous:
        return previous[ref]
    if (recipes_dir(root) / f"{ref}.yaml").is_file():
        found = registry.latest_model(runs_dir, ref)
        if found:
            return found
        raise LaunchError(
            f"the soup takes {ref}, which has no finished run yet: run `cosmosage recipe run {ref}` first"
        )
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    return str(path) if path.exists() else ref


def soup_spec(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path
) -> tuple[list[soup.Ingredient], dict]:
    """`recipe.soup` -> (ingredients, keyword arguments of soup.make_soup)."""
    spec = stage.rendered.meta["soup"]
    try:
        models = [(str(m["model"]), float(m["weight"])) for m in spec.get("models") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise LaunchError(
            f"{stage.name}: recipe.soup.models must be a list of {{model: NAME, weight: W}}"
        ) from exc
    ingredients = [
        soup.Ingredient(resolve_soup_model(m, previous, runs_dir, root), w) for m, w in models
    ]
    base = spec.get("base")
    kwargs = {
        "method": spec.get("method", "linear"),
        "base": resolve_soup_model(str(base), previous, runs_dir, root) if base else None,
        "density": spec.get("density"),
        "dtype": spec.get("dtype"),
    }
    return ingredients, kwargs


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_soup(stage: Stage, root: Path) -> list[check.Problem]:
    """`recipe check` of a soup stage: the block's shape, method, weights and base as
    mergekit will get them, and each model a recipe, an existing folder or a Hub id. A
    recipe with no finished run yet is fine here (its run, or this pipeline's stage of
    it, makes the model)."""
    spec = stage.rendered.meta.get("soup")
    if not isinstance(spec, dict):
        return [check.Problem("soup", "recipe.soup must be a mapping (method, models, base)")]
    refs = [str(m.get("model")) for m in spec.get("models") or [] if isinstance(m, dict)]
    refs += [str(spec["base"])] if spec.get("base") else []
    problems, recipes = [], {}
    for ref in refs:
        local = Path(ref) if Path(ref).is_absolute() else root / ref
        if (recipes_dir(root) / f"{ref}.yaml").is_file():
            recipes[ref] = ref
        elif not local.exists():
            if _HUB_ID.fullmatch(ref) and not ref.startswith(("build/", "runs/")):
                problems.append(
                    check.Problem("soup", f"{ref}: a Hub id, fetched by mergekit", "info")
                )
            else:
                problems.append(
                    check.Problem("soup", f"{ref}: no such recipe, model folder or Hub id")
                )
    try:
        ingredients, kwargs = soup_spec(stage, recipes, root / "runs", root)
        soup.mergekit_config(ingredients, **kwargs)
    except (LaunchError, soup.SoupError) as exc:
        problems.append(check.Problem("soup", str(exc).removeprefix(f"{stage.name}: ")))
    if spec.get("weights") is not None:
        from cosmosage.tools.run.select import check_rule

        try:
            check_rule(spec.get("select"), "recipe.soup.select", soup=True)
            if not all(isinstance(w, int | float) and 0 <= w <= 1 for w in spec["weights"]):
                raise DataError("recipe.soup.weights: a list of numbers from 0 to 1")
        except DataError as exc:
            problems.append(check.Problem("soup", str(exc)))
    return problems


def unchecked_end_of_turn(p: check.Problem) -> bool:
    """`recipe check` may pass a chat stage whose tokenizer is not on disk with a warning;
    a run must not train without knowing that each answer's end-of-turn token trains, so
    for `recipe run` it stops the run (the message says how to make the check possible)."""
    return p.check == "end-of-turn" and p.message.startswith("no tokenizer of")


def check_stage(name: str, r: Rendered, root: Path) -> list[check.Problem]:
    """Every problem of one stage as `recipe check` reports it: a soup stage's block
    (mergekit makes its model), else the Axolotl config."""
    if r.meta.get("soup") is not None:
        return check_soup(Stage(name, name.split("/")[-1], r), root)
    return check.check_rendered(r, root) + check_select(r)


AXOLOTL_SAVE_TOTAL_LIMIT = 4  # what Axolotl keeps when save_total_limit is not set


def check_select(r: Rendered) -> list[check.Problem]:
    """A `recipe.select` rule that cannot work, and a run that keeps too few checkpoints
    for it to choose."""
    from cosmosage.tools.run.select import check_rule

    rule = r.meta.get("select")
    if rule is None:
        return []
    try:
        check_rule(rule)
    except DataError as exc:
        return [check.Problem("select", str(exc))]
    steps, every = r.config.get("max_steps"), r.config.get("save_steps")
    # unset (or null, which rendering drops), Axolotl keeps 4
    limit = r.config.get("save_total_limit") or AXOLOTL_SAVE_TOTAL_LIMIT
    patience = rule.get("patience")
    if patience and int((r.meta.get("hardware") or {}).get("gpus") or 0) > 1:
        return [
            check.Problem(
                "select",
                "recipe.select.patience (early stopping) runs in one training process; this "
                "stage runs on several GPUs: drop patience and choose after training",
            )
        ]
    if patience and limit < patience + 1:
        return [
            check.Problem(
                "select",
                f"recipe.select.patience {patience} needs the best checkpoint and the "
                f"{patience} after it kept: save_total_limit {limit} is below {patience + 1}",
            )
        ]
    if steps and every and limit < -(-int(steps) // int(every)):
        return [
            check.Problem(
                "select",
                f"save_total_limit {limit} keeps fewer checkpoints than the "
                f"{-(-int(steps) // int(every))} saved: recipe.select can only choose among "
                "those kept; raise it to the number saved",
                "warning",
            )
        ]
    return []


def soup_plan(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path, stage_dir: Path
) -> dict:
    """What a dry run shows for a soup stage: the mergekit command and config."""
    try:
        ingredients, kwargs = soup_spec(stage, previous, runs_dir, root)
        config = soup.mergekit_config(ingredients, **kwargs)
    except (LaunchError, soup.SoupError) as exc:
        config = {"error": str(exc)}
    return {
        "stage": stage.name,
        "builds": [b["output"] for b in stale_builds(stage.rendered.meta, root)],
        "argv": ["mergekit-yaml", str(stage_dir / "mergekit.yaml"), str(stage_dir / "model")],
        "config": config,
    }


def run_soup_stage(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path, stage_dir: Path, echo: Echo
) -> dict:
    """A stage whose `recipe.soup` names models and weights: mergekit instead of Axolotl;
    its model is then evaluated like any stage's."""
    ingredients, kwargs = soup_spec(stage, previous, runs_dir, root)
    spec = stage.rendered.meta["soup"]
    if spec.get("weights") is not None:
        return run_soup_selection(
            stage, ingredients, kwargs, previous, runs_dir, root, stage_dir, echo
        )
    mix = " + ".join(f"{i.weight:g} x {i.model}" for i in ingredients)
    echo(f"soup   {stage.name}: {kwargs['method']} of {mix}  (log: {stage_dir / 'mergekit.log'})")
    made = soup.make_soup(
        ingredients, out=stage_dir / "model", config_path=stage_dir / "mergekit.yaml", **kwargs
    )
    write_json(stage_dir / "metrics.json", {"model": made["model"], "wall_s": made["wall_s"]})
    return soup.soup_entry(made, stage.name)


def run_soup_selection(
    stage: Stage,
    ingredients: list[soup.Ingredient],
    kwargs: dict,
    previous: dict[str, str],
    runs_dir: Path,
    root: Path,
    stage_dir: Path,
    echo: Echo,
) -> dict:
    """`recipe.soup.weights: [w, ...]` with `recipe.soup.select` (a rule as in
    recipe.select): one soup per weight w of the first model (the others share 1 - w in
    their given proportions), the rule picks which becomes the stage's model."""
    from cosmosage.tools.run.select import select_soup

    spec = stage.rendered.meta["soup"]
    rule = spec.get("select")
    if not isinstance(rule, dict) or len(ingredients) < 2:
        raise LaunchError(
            f"{stage.name}: recipe.soup.weights needs recipe.soup.select (suites, maximize, "
            "limits) and at least two models"
        )
    try:
        weights = [float(w) for w in spec["weights"]]
    except (TypeError, ValueError) as exc:
        raise LaunchError(f"{stage.name}: recipe.soup.weights must be a list of numbers") from exc
    rest = sum(i.weight for i in ingredients[1:]) or 1.0
    parent = resolve_soup_model(
        str(rule.get("parent", ingredients[-1].model)), previous, runs_dir, root
    )
    t0 = time.time()
    made: dict = {}

    def make(w: float, out: Path) -> str:
        mixed = [soup.Ingredient(ingredients[0].model, w)] + [
            soup.Ingredient(i.model, (1 - w) * i.weight / rest) for i in ingredients[1:]
        ]
        echo(f"soup   {stage.name}: weight {w:g} of {ingredients[0].model}")
        made[w] = soup.make_soup(
            mixed, out=out, config_path=out.with_suffix(".mergekit.yaml"), **kwargs
        )
        return made[w]["model"]

    try:
        w, row = select_soup(weights, make, parent, rule, stage_dir, root, echo)
    except DataError as exc:
        raise LaunchError(f"{stage.name}: {exc}") from exc
    entry = {**made[w], "model": str(stage_dir / "model")}
    write_json(
        stage_dir / "metrics.json",
        {"model": entry["model"], "wall_s": round(time.time() - t0, 1), "selected": row},
    )
    return soup.soup_entry(entry, stage.name)


def run_recipe(
    name: str,
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    dry_run: bool = False,
    resume: bool = False,
    echo: Echo = print,
    root: Path = ROOT,
    runs_dir: Path | None = None,
) -> dict:
    """Run a recipe (or pipeline) end to end; returns the run record."""
    runs_dir = runs_dir or root / "runs"
    top, stages = plan(name, sets, unsets, root)

    run_dir = find_resumable(runs_dir, name) if resume else None
    if resume and run_dir is None:
        echo(f"nothing to resume for {name}: starting a new run")
    run_dir = run_dir or runs_dir / name / new_run_id()
    record: dict = {}
    if (run_dir / "run.json").is_file():
        record = json.loads((run_dir / "run.json").read_text())
        echo(f"resume {run_dir}")
    record.setdefault("recipe", name)
    record.setdefault("run_id", run_dir.name)
    record.setdefault("started", datetime.now(UTC).isoformat(timespec="seconds"))
    record.setdefault("stages", {})
    record.update(
        {
            "status": "running",
            "recipe_hash": top.digest(),
            "overrides": {"set": sets or [], "unset": unsets or []},
        }
    )

    if dry_run:
        plans = []
        previous: dict[str, str] = {}
        for stage in stages:
            if stage.rendered.meta.get("soup"):
                plans.append(soup_plan(stage, previous, runs_dir, root, run_dir / stage.key))
                previous[stage.name] = str(run_dir / stage.key / "model")
                continue
            try:
                base = resolve_parent(stage, previous, runs_dir)
            except LaunchError:
                base = f"<output of {stage.rendered.meta['parent']}>"
            stage_dir = run_dir / stage.key
            cfg = stage_config(stage, base, stage_dir, resume)
            previous[stage.name] = str(stage_dir / "model")
            plans.append(
                {
                    "stage": stage.name,
                    "builds": [b["output"] for b in stale_builds(stage.rendered.meta, root)],
                    "argv": build_argv(stage_dir / "axolotl.yaml", stage.rendered.meta),
                    "config": cfg,
                }
            )
        return {"dry_run": True, "run_dir": str(run_dir), "stages": plans}

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "run.json", record)
    previous = {}
    first_base: str | None = None
    try:
        for stage in stages:
            stage_dir = run_dir / stage.key
            done = record["stages"].get(stage.key, {})
            if done.get("status") == "complete" and Path(done.get("model", "")).exists():
                echo(f"skip   {stage.name}: already complete in this run")
                previous[stage.name] = done["model"]
                first_base = first_base or done.get("parent_model")
                continue
            ensure_builds(stage.rendered.meta, root, echo)
            if stage.rendered.meta.get("soup"):
                entry = run_soup_stage(stage, previous, runs_dir, root, stage_dir, echo)
                first_base = first_base or entry["soup"].get("base") or entry["parent_model"]
            else:
                base = resolve_parent(stage, previous, runs_dir)
                cfg = stage_config(stage, base, stage_dir, resume)
                problems = [
                    p
                    for p in check.check_rendered(
                        Rendered(stage.name, cfg, stage.rendered.meta), root
                    )
                    if p.severity == "error" or unchecked_end_of_turn(p)
                ]
                if problems:
                    raise LaunchError(
                        f"{stage.name} failed its checks:\n" + "\n".join(f"  {p}" for p in problems)
                    )
                first_base = first_base or cfg["base_model"]
                m = run_stage(stage, cfg, stage_dir, root, echo)
                entry = {
                    "status": "complete",
                    "recipe": stage.name,
                    "parent_model": cfg["base_model"],
                    "model": m["model"],
                    "data": data_hashes(cfg, root),
                    "metrics": {
                        k: m[k]
                        for k in (
                            "eval_loss_before",
                            "eval_loss_best",
                            "final_train_loss",
                            "steps",
                            "wall_s",
                        )
                    },
                    "best_checkpoint": m["best_checkpoint"],
                }
            record["stages"][stage.key] = entry
            write_json(run_dir / "run.json", record)
            registry.append(
                runs_dir,
                {
                    "run_id": f"{name}/{run_dir.name}",
                    "recipe_hash": stage.rendered.digest(),
                    **entry,
                },
            )
            previous[stage.name] = entry["model"]

        final = record["stages"][stages[-1].key]["model"]
        failures: list[str] = []
        if top.meta.get("eval"):
            result = evaluation.evaluate_run(run_dir, record, top.meta, first_base, root, echo)
            record["eval"] = result["scores"]
            record["forgetting"] = result.get("forgetting", [])
            record["consistency_auroc"] = (result.get("consistency") or {}).get("auroc")
            failures = record["threshold_failures"] = result["threshold_failures"]
            for key, stage in record["stages"].items():
                registry.annotate(runs_dir, stage["model"], scores=result["scores"].get(key, {}))
        publish_dir = card.write_publish_folder(run_dir, record, top, final)
        record["publish"] = str(publish_dir)
        record["status"] = "complete"
        record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    except BaseException as exc:
        record["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        write_json(run_dir / "run.json", record)
        raise
    if failures:
        record["status"] = "failed thresholds"
    write_json(run_dir / "run.json", record)
    summary = card.summary_markdown(run_dir, record)
    (run_dir / "summary.md").write_text(summary)
    record["run_dir"] = str(run_dir)
    if failures:
        raise LaunchError(
            f"{name}: evaluation thresholds not met (everything is saved in {run_dir}):\n"
            + "\n".join(f"  {f}" for f in failures)
        )
    return record
