"""Wheels for a GPU machine that has PyTorch but not Axolotl or cosmosage, few enough to
travel with the working tree (for a GPU machine that takes 64 MiB in all with the tree
and reaches no package index).

    python bench/device_bundle.py            # wheels/ for CPython 3.12, the GPU image's
    python bench/device_bundle.py --check    # and show here that it is enough: a fresh venv
                                             # with only the image's packages and a 3.11
                                             # bundle runs gpu_check at toy size
    # on the GPU machine (with wheels/ copied beside the working tree):
    bash bench/mfu_candidates.sh --wheels wheels

What goes in, at the versions this environment resolved:
  - every distribution that a toy `gpu_check` run imports, found by running it with an
    import tracer (so the list follows Axolotl's own imports, not its long requirements),
    plus --with (default liger-kernel and xformers, candidates of mfu_candidates.sh);
  - less the packages the machines' image already has (bench/device_packages.txt),
    except those Axolotl or cosmosage pin with == (the image's may be another version);
  - less --leave-out: packages imported only when present;
  - and cosmosage itself, built as a wheel.
Two wheels are trimmed of native code a device check never loads (both are imported by
Axolotl for every method): bitsandbytes keeps its libraries for --cuda (default 130, the
image's torch) and the CPU (4 of 41 MiB), wandb drops its service binaries (1 of 19 MiB).
The script fails when the wheels and the tracked tree together pass --budget-mib. It fills
the folder beside it and moves it into place only when complete, with BUNDLE.txt (each
wheel, its size and why it travels); gpu_check.py --wheels installs it with pip
--no-index --no-deps --target into its work folder (build/gpu_check/site) and runs on
PYTHONPATH.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name as canon
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ROOT / "bench" / "device_packages.txt"
# imported when installed, skipped when not (transformers and Axolotl test for them)
LEAVE_OUT = ("mistral-common", "pycountry", "torchao", "zstandard")
# the GPU image's torch is built for CUDA 13.0: bitsandbytes loads libbitsandbytes_cuda130
CUDA = "130"
WITH = ("liger-kernel", "xformers")
METHODS = ("full", "lora", "qlora")
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)] + [
    "manylinux2014_x86_64"
]
TRACER = """\
import atexit, os, sys
def _cosmosage_trace():
    names = sorted({m.split(".")[0] for m in list(sys.modules)})
    path = os.path.join(os.environ["COSMOSAGE_TRACE_OUT"], f"{os.getpid()}.txt")
    with open(path, "w") as f:
        f.write("\\n".join(names))
atexit.register(_cosmosage_trace)
"""


# --------------------------------------------------------------------------- what travels


def traced_modules(work: Path) -> set[str]:
    """Top-level modules imported by every process of a toy gpu_check run (full
    fine-tune, LoRA and QLoRA through `axolotl train`), read by a sitecustomize tracer."""
    tracer, out = work / "tracer", work / "trace"
    for d in (tracer, out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    (tracer / "sitecustomize.py").write_text(TRACER)
    path = os.pathsep.join(filter(None, [str(tracer), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "COSMOSAGE_TRACE_OUT": str(out)}
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu"]
    cmd += ["--preset", "tiny", "--methods", ",".join(METHODS), "--steps", "4", "--warmup", "1"]
    cmd += ["--work", str(work / "gpu_check")]
    print("tracing the imports of a toy gpu_check run ...", flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    files = list(out.glob("*.txt"))
    if len(files) < 2:
        sys.exit(
            f"device_bundle: the tracer saw {len(files)} process(es); expected gpu_check and axolotl"
        )
    return {name for f in files for name in f.read_text().split()}


def distributions(modules: set[str]) -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of the installed distributions that provide
    these top-level modules."""
    owners = md.packages_distributions()
    found = {}
    for module in modules:
        for name in owners.get(module, []):
            found[canon(name)] = (name, md.version(name))
    return found


def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    lines = path.read_text().splitlines()
    return {canon(x.strip()) for x in lines if x.strip() and not x.startswith("#")}


def pinned(packages: tuple[str, ...] = ("axolotl", "cosmosage")) -> set[str]:
    """Names that these packages require at one exact version (==), markers evaluated
    for this platform with no extra."""
    from packaging.requirements import Requirement

    names = set()
    for pkg in packages:
        for line in md.requires(pkg) or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if any(spec.operator in ("==", "===") for spec in req.specifier):
                names.add(canon(req.name))
    return names


def plan(
    imported: dict[str, tuple[str, str]],
    on_device: set[str],
    pins: set[str],
    extra: dict[str, tuple[str, str]],
    leave_out: set[str],
) -> list[tuple[str, str, str]]:
    """(name, version, why) for each distribution to carry, sorted by name. The project
    itself is built, not downloaded, so it is never in the plan."""
    rows = {}
    for key, (name, version) in imported.items():
        if key in leave_out or key == "cosmosage":
            continue
        if key in on_device and key not in pins:
            continue
        why = (
            "pinned (==), image's may differ" if key in on_device else "imported, not in the image"
        )
        rows[key] = (name, version, why)
    for key, (name, version) in extra.items():
        rows[key] = (name, version, "asked for (--with)")
    return sorted(rows.values(), key=lambda r: canon(r[0]))


# --------------------------------------------------------------------------- the folder


def download(rows: list[tuple[str, str, str]], dest: Path, python_version: str) -> None:
    """Wheels for that Python and x86_64 Linux; a package PyPI has only as source is
    built here, and must then be pure Python (py3-none-any) to run there."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    cmd += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    cmd += ["--dest", str(dest)]
    wanted = [f"{name}=={version}" for name, version, _ in rows]
    print(
        f"downloading {len(rows)} wheels for CPython {python_version} into {dest} ...", flush=True
    )
    if subprocess.run(cmd + wanted, capture_output=True).returncode == 0:
        return
    have = {wheel_key(p) for p in dest.glob("*.whl")}
    for spec in wanted:
        if canon(spec.split("==")[0]) in have:
            continue
        if subprocess.run(cmd + [spec], capture_output=True).returncode == 0:
            continue
        before = set(dest.glob("*.whl"))
        build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir"]
        subprocess.run(build + [str(dest), spec], check=True)
        made = [
            p for p in set(dest.glob("*.whl")) - before if not p.name.endswith("-py3-none-any.whl")
        ]
        if made:
            sys.exit(f"device_bundle: {spec} has no wheel for that machine and is not pure Python")
        print(f"  {spec}: no wheel on the index, built here from source (pure Python)", flush=True)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def build_self(dest: Path) -> None:
    """cosmosage's wheel, built from a copy of the tracked files: setuptools' in-place
    build keeps build/lib between builds, where a module since removed would linger."""
    source = dest.parent / f".{dest.name}-source"
    shutil.rmtree(source, ignore_errors=True)
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    try:
        subprocess.run(cmd + ["--wheel-dir", str(dest), str(source)], check=True)
    finally:
        shutil.rmtree(source, ignore_errors=True)


def trimmed(key: str, cuda: str):
    """For a package whose wheel carries native code a device check never loads: a
    test of the paths inside the wheel to drop, what stays, and the file name the wheel
    must hold for the trim to make sense (None: any); else None.
    bitsandbytes: the libraries of other CUDA, ROCm and XPU versions (it loads the one
    for the running torch's CUDA). wandb: its service binaries, started only by
    wandb.init (Axolotl imports wandb for every run; recipes here do not log to it)."""
    if key == "bitsandbytes":
        keep = {"libbitsandbytes_cpu.so", f"libbitsandbytes_cuda{cuda}.so"}

        def drop_bnb(name: str) -> bool:
            base = name.rsplit("/", 1)[-1]
            return base.startswith("libbitsandbytes_") and base not in keep

        note = f"native code for CUDA {cuda} and the CPU only"
        return drop_bnb, note, f"libbitsandbytes_cuda{cuda}.so"
    if key == "wandb":
        return (
            (lambda name: name.startswith("wandb/bin/")),
            "without wandb/bin (no wandb.init)",
            None,
        )
    return None


def trim_wheel(wheel: Path, dropped) -> None:
    """Rewrite a wheel without the files `dropped` names, RECORD rewritten to match."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as z, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            if dropped(info.filename):
                continue
            data = z.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(x for x in lines if not dropped(x.split(",")[0])) + "\n").encode()
            out.writestr(info, data)
    tmp.replace(wheel)


def tree_bytes() -> int:
    """Bytes of the tracked files, which travel with every device call."""
    return sum((ROOT / f).stat().st_size for f in tracked_files())


def wheel_key(path: Path) -> str:
    return parse_wheel_filename(path.name)[0]


def bundle_lines(wheels: dict[str, Path], why: dict[str, str], python_version: str):
    """BUNDLE.txt's lines (the Python first: gpu_check reads it), largest wheel first,
    and the wheels' total bytes."""
    lines = [f"# wheels for CPython {python_version}, x86_64; bench/device_bundle.py wrote this"]
    total = 0
    for key, path in sorted(wheels.items(), key=lambda kv: -kv[1].stat().st_size):
        size = path.stat().st_size
        total += size
        lines.append(f"{size / 2**20:7.2f} MiB  {path.name}  ({why.get(key, '')})")
    return lines, total


def write_folder(rows, dest: Path, python_version: str, budget_mib: float, cuda: str = CUDA) -> int:
    """Fill dest (a folder this script made, or a new one) and return the bytes of its
    wheels. Everything is written to a folder beside it, which replaces dest only when
    whole and within the budget: a failed run leaves dest as it was, and no other folder."""
    if dest.exists() and any(dest.iterdir()) and not (dest / "BUNDLE.txt").is_file():
        sys.exit(f"device_bundle: {dest} holds files this script did not write; choose --out")
    part = dest.with_name(f".{dest.name}.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        download(rows, part, python_version)
        build_self(part)
        wheels = {wheel_key(p): p for p in part.glob("*.whl")}
        missing = [name for name, _, _ in rows if canon(name) not in wheels]
        if missing:
            sys.exit(f"device_bundle: no wheel arrived for {missing}")
        why = {canon(name): f"{version}  {reason}" for name, version, reason in rows}
        why["cosmosage"] = "this checkout, built here"
        for key, path in wheels.items():
            trim = trimmed(key, cuda)
            if trim is None:
                continue
            drop, note, needed = trim
            if needed and not any(
                n.endswith("/" + needed) for n in zipfile.ZipFile(path).namelist()
            ):
                sys.exit(f"device_bundle: {path.name} has no {needed} (--cuda)")
            trim_wheel(path, drop)
            why[key] += f"; {note}"
        lines, total = bundle_lines(wheels, why, python_version)
        tree = tree_bytes()
        lines.append(
            f"{total / 2**20:7.2f} MiB  in {len(wheels)} wheels; tracked tree {tree / 2**20:.2f} MiB"
        )
        (part / "BUNDLE.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        if (total + tree) / 2**20 > budget_mib:
            sys.exit(
                f"device_bundle: wheels {total / 2**20:.1f} MiB + tree {tree / 2**20:.1f} MiB pass "
                f"the {budget_mib:g} MiB budget; leave more out (--leave-out) or carry less "
                f"({dest} left as it was)"
            )
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)  # nothing half-made stays beside dest
        raise
    shutil.rmtree(dest, ignore_errors=True)
    part.replace(dest)
    return total


# --------------------------------------------------------------------------- the check


def top_entries(dist: md.Distribution) -> set[str]:
    """First path parts of a distribution's files inside site-packages."""
    parts = {Path(str(f)).parts[0] for f in dist.files or []}
    return {p for p in parts if p != ".." and not p.endswith(".pth")}


def device_like_venv(venv: Path) -> int:
    """A fresh venv whose site-packages links this environment's copy of each package
    the machines' image has (torch included): the device, less the GPU. Returns how
    many distributions were linked."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    on_device, linked = device_packages(), 0
    for dist in md.distributions():
        if canon(dist.metadata["Name"]) not in on_device:
            continue
        linked += 1
        for top in top_entries(dist):
            source, target = Path(dist.locate_file(top)), site / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
    return linked


def simulate(wheels: Path, work: Path) -> None:
    venv = work / "device-venv"
    linked = device_like_venv(venv)
    print(
        f"check: {venv} links {linked} of the image's packages; running gpu_check --wheels",
        flush=True,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(venv / "bin" / "python"), str(ROOT / "bench" / "gpu_check.py"), "--wheels"]
    cmd += [str(wheels), "--device", "cpu", "--preset", "tiny", "--methods", ",".join(METHODS)]
    cmd += ["--steps", "4", "--warmup", "1", "--work", str(work / "device-gpu_check")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    ran = [m for m in METHODS if f"\n{m} " in "\n" + done.stdout]
    if done.returncode != 0 or len(ran) != len(METHODS):
        sys.exit(
            f"device_bundle --check: gpu_check failed with only the bundle (rc {done.returncode}):\n{tail}"
        )
    print("check: gpu_check ran with only the image's packages and the bundle:")
    print(
        "\n".join(
            line for line in done.stdout.splitlines() if line.startswith(("gpu_check:", *METHODS))
        )
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", type=Path, default=ROOT / "wheels", help="the folder (default wheels/)")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's (default 3.12)")
    p.add_argument("--with", dest="with_", nargs="*", default=list(WITH), metavar="NAME",
                   help=f"installed packages to carry as well (default {' '.join(WITH)})")  # fmt: skip
    p.add_argument("--leave-out", nargs="*", default=list(LEAVE_OUT), metavar="NAME",
                   help=f"imported packages to leave behind (default {' '.join(LEAVE_OUT)})")  # fmt: skip
    p.add_argument("--budget-mib", type=float, default=60.0,
                   help="wheels + tracked tree at most this (default 60 of the 64 MiB a call takes)")  # fmt: skip
    p.add_argument(
        "--cuda", default=CUDA, help=f"bitsandbytes' CUDA library to keep (default {CUDA})"
    )
    p.add_argument("--check", action="store_true", help="also run the check described above")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "device_bundle")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        md.version("axolotl")
    except md.PackageNotFoundError:
        sys.exit("device_bundle: run it with the project's environment (.venv/bin/python)")
    extra = {}
    for name in args.with_:
        try:
            extra[canon(name)] = (name, md.version(name))
        except md.PackageNotFoundError:
            sys.exit(f"device_bundle: --with {name}: not installed here, so no version to carry")
    work = args.work.resolve()
    imported = distributions(traced_modules(work))
    leave = {canon(n) for n in args.leave_out} - set(extra)
    rows = plan(imported, device_packages(), pinned(), extra, leave)
    write_folder(rows, args.out.resolve(), args.python_version, args.budget_mib, args.cuda)
    if args.check:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        local = work / f"wheels-py{here}"
        write_folder(rows, local, here, args.budget_mib, args.cuda)
        simulate(local, work)


if __name__ == "__main__":
    main()
