"""bench/device_bundle.py: which wheels travel to a GPU machine that has PyTorch but not
Axolotl, and the trimmed wheels pip still installs. (`--check`, which downloads wheels
and runs gpu_check in a venv holding only the bundle, is a bench: bench/README.md.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bundle():
    spec = importlib.util.spec_from_file_location(
        "device_bundle", ROOT / "bench" / "device_bundle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_carries_what_the_image_lacks_and_its_pinned_packages():
    bundle = load_bundle()
    imported = {
        "axolotl": ("axolotl", "0.19.0"),
        "transformers": ("transformers", "5.16.1"),
        "numpy": ("numpy", "2.3.5"),
        "zstandard": ("zstandard", "0.22.0"),
        "cosmosage": ("cosmosage", "0.1.0"),
    }
    rows = bundle.plan(
        imported,
        on_device={"transformers", "numpy", "torch"},
        pins={"transformers"},
        extra={"liger-kernel": ("liger-kernel", "0.8.1")},
        leave_out={"zstandard"},
    )
    assert [(name, version) for name, version, _ in rows] == [
        ("axolotl", "0.19.0"),
        ("liger-kernel", "0.8.1"),
        ("transformers", "5.16.1"),
    ]
    why = {name: reason for name, _, reason in rows}
    assert "not in the image" in why["axolotl"] and "pinned" in why["transformers"]


def test_pinned_names_axolotls_exact_versions_not_its_ranges():
    pins = load_bundle().pinned()
    assert {"transformers", "peft", "accelerate", "bitsandbytes"} <= pins
    assert "torch" not in pins and "numpy" not in pins  # ranges: the image's own serve


def test_the_image_list_is_names_only():
    names = load_bundle().device_packages()
    assert {"torch", "transformers", "triton", "numpy"} <= names and len(names) > 150
    assert not any(n.startswith("#") or " " in n for n in names)


def fake_wheel(folder: Path, files: dict[str, bytes]) -> Path:
    """A minimal bitsandbytes wheel: the files, METADATA, WHEEL and a RECORD naming all."""
    info = "bitsandbytes-0.50.2.dist-info"
    files = {
        **files,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.50.2\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    path = folder / "bitsandbytes-0.50.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", record)
    return path


def test_trimmed_bitsandbytes_keeps_one_cuda_library_and_still_installs(tmp_path):
    bundle = load_bundle()
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm72", "xpu2026"]
    files = {"bitsandbytes/__init__.py": b"LOADED = 'yes'\n"}
    files |= {f"bitsandbytes/libbitsandbytes_{lib}.so": b"\0" * 64 for lib in libs}
    wheel = fake_wheel(tmp_path, files)
    drop, note, needed = bundle.trimmed("bitsandbytes", "130")
    assert needed == "libbitsandbytes_cuda130.so"
    bundle.trim_wheel(wheel, drop)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    kept = {n.rsplit("/", 1)[-1] for n in names if "libbitsandbytes_" in n}
    assert kept == {"libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"} and "CUDA 130" in note
    assert "cuda128" not in record and "libbitsandbytes_cuda130.so" in record
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
        + ["--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip
    installed = sorted(p.name for p in (target / "bitsandbytes").glob("*.so"))
    assert installed == ["libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]
    probe = [sys.executable, "-c", "import bitsandbytes; print(bitsandbytes.LOADED)"]
    out = subprocess.run(probe, env={"PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert out.stdout.strip() == "yes", out.stderr


def test_wandb_loses_only_its_service_binaries():
    drop, _, needed = load_bundle().trimmed("wandb", "130")
    assert needed is None
    assert drop("wandb/bin/wandb-core") and drop("wandb/bin/librust_parquet_ffi.so")
    assert not drop("wandb/__init__.py") and not drop("wandb/sdk/wandb_run.py")
    assert load_bundle().trimmed("transformers", "130") is None


def test_gpu_check_installs_a_wheel_folder_once_and_runs_again_on_pythonpath(tmp_path, monkeypatch):
    """gpu_check --wheels on a machine without Axolotl: pip --no-deps --target <work>/site,
    then the script again with that folder on PYTHONPATH; a second run reuses the folder."""
    from tests.bench.test_gpu_check import load_gpu_check

    gpu_check = load_gpu_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, {"bitsandbytes/__init__.py": b"LOADED = 'yes'\n"})
    execs, pips = [], []
    real_run = subprocess.run

    def run(cmd, **kw):
        pips.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(gpu_check, "have_packages", lambda: False)
    monkeypatch.setattr(gpu_check.subprocess, "run", run)
    monkeypatch.setattr(gpu_check.os, "execve", lambda exe, argv, env: execs.append(env))
    monkeypatch.delenv("GPU_CHECK_INSTALLED", raising=False)
    monkeypatch.delenv("COSMOSAGE_ROOT", raising=False)
    for _ in range(2):
        gpu_check.ensure_installed(wheels, tmp_path / "work")
    site = tmp_path / "work" / "site"
    assert (site / "bitsandbytes" / "__init__.py").is_file()
    assert len(pips) == 1 and "--no-deps" in pips[0] and "--no-index" in pips[0]
    assert len(execs) == 2 and all(e["PYTHONPATH"].split(os.pathsep)[0] == str(site) for e in execs)
    assert all(e["GPU_CHECK_INSTALLED"] == "1" for e in execs)
    assert all(e["COSMOSAGE_ROOT"] == str(ROOT) for e in execs)  # recipes/ of this checkout


def test_gpu_check_refuses_wheels_made_for_another_python(tmp_path, monkeypatch, capsys):
    import pytest

    from tests.bench.test_gpu_check import load_gpu_check

    gpu_check = load_gpu_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "BUNDLE.txt").write_text("# wheels for CPython 3.9, x86_64; device_bundle\n")
    monkeypatch.setattr(gpu_check, "have_packages", lambda: False)
    monkeypatch.delenv("GPU_CHECK_INSTALLED", raising=False)
    with pytest.raises(SystemExit) as stop:
        gpu_check.ensure_installed(wheels, tmp_path / "work")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "for CPython 3.9, this is " + here in str(stop.value)
    assert f"--python-version {here}" in str(stop.value)
    assert not (tmp_path / "work" / "site").exists()


def test_the_projects_wheel_holds_only_tracked_modules(tmp_path):
    """cosmosage's wheel is built from a copy of the tracked files, so nothing setuptools
    left in build/lib (a module since removed) can travel to the device."""
    bundle = load_bundle()
    dest = tmp_path / "wheels"
    dest.mkdir()
    lib = ROOT / "build" / "lib"
    had_lib = lib.exists()
    stale = lib / "cosmosage" / "tools" / "stale_module_of_a_test.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("GONE = True\n")  # what an in-place build would package
    try:
        bundle.build_self(dest)
    finally:
        if had_lib:
            stale.unlink()
        else:
            shutil.rmtree(lib)
    (wheel,) = dest.glob("cosmosage-*.whl")
    tracked = set(bundle.tracked_files())
    mapped = {"cosmosage/tools/": "tools/", "cosmosage/dataprep/": "dataprep/"}
    modules = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")]
    assert "cosmosage/tools/recipe/check/untrained.py" in modules
    for name in modules:
        prefix = next(p for p in mapped if name.startswith(p))
        assert mapped[prefix] + name[len(prefix) :] in tracked, name
    assert [p.name for p in tmp_path.iterdir()] == ["wheels"]  # the copy is gone


def test_the_folder_is_replaced_only_when_whole_and_within_budget(tmp_path, monkeypatch):
    """write_folder with the downloads stood in for (fake wheels): a run past the budget
    or without the asked-for CUDA library leaves the old folder as it was; a good run
    replaces it, trimmed, with BUNDLE.txt; a folder of someone else's is refused."""
    import pytest

    bundle = load_bundle()
    libs = {
        f"bitsandbytes/libbitsandbytes_{x}.so": b"\0" * 4096 for x in ("cpu", "cuda130", "cuda128")
    }

    def download(rows, dest, python_version):
        fake_wheel(dest, {"bitsandbytes/__init__.py": b"", **libs})

    monkeypatch.setattr(bundle, "download", download)
    monkeypatch.setattr(bundle, "build_self", lambda dest: None)
    monkeypatch.setattr(bundle, "tree_bytes", lambda: 1000)
    rows = [("bitsandbytes", "0.50.2", "imported")]
    dest = tmp_path / "wheels"
    dest.mkdir()
    (dest / "BUNDLE.txt").write_text("# wheels for CPython 3.12, the old folder\n")
    with pytest.raises(SystemExit, match="budget"):
        bundle.write_folder(rows, dest, "3.12", budget_mib=0.0001)
    with pytest.raises(SystemExit, match="libbitsandbytes_cuda126.so"):
        bundle.write_folder(rows, dest, "3.12", budget_mib=60, cuda="126")
    assert [p.name for p in dest.iterdir()] == ["BUNDLE.txt"]
    assert "the old folder" in (dest / "BUNDLE.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]  # no half-made folder

    bundle.write_folder(rows, dest, "3.12", budget_mib=60)
    (wheel,) = dest.glob("*.whl")
    kept = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    assert sorted(kept) == sorted(n for n in libs if "cuda128" not in n)
    assert "CPython 3.12" in (dest / "BUNDLE.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]  # no part folder left

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="did not write"):
        bundle.write_folder(rows, other, "3.12", budget_mib=60)
    assert (other / "notes.txt").read_text() == "keep me"
