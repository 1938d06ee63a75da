"""The torch-free route of docs/export.md, run as written: a wheel built from the checkout,
installed with `--no-deps` into a fresh venv (no system site-packages, so no torch), plus the
packages the page lists; `ovdet detect` then runs an export, printing JSON and writing the
default run folder with the annotated image (OpenCV draws it: no supervision there).

Packages come through pip (its index, find-links and cache as configured); the test skips only
when pip cannot reach them. About 20 s with a warm pip cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "ConnectionError", "Max retries exceeded")


def documented_commands() -> list[str]:
    """The bash block of docs/export.md that follows "A machine without torch"."""
    text = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    block = re.search(r"A machine without torch.*?```bash\n(.*?)```", text, re.S)
    assert block, "docs/export.md lost its torch-free section"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, dict]:
    """(venv bin folder, environment) after the page's pip commands ran in a copy of the checkout."""
    base = tmp_path_factory.mktemp("torch-free")
    checkout = base / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "ovdet", checkout / "ovdet", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    bin_dir = base / "venv" / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(base / "venv"),
               OVDET_CACHE=str(base / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for command in documented_commands():
        if not command.startswith("pip "):
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode and any(e in proc.stdout + proc.stderr for e in NETWORK_ERRORS):
            pytest.skip(f"pip cannot reach its index: {command}")
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return bin_dir, env


@pytest.fixture(scope="module")
def owlvit_export(tmp_path_factory, tiny_owlvit) -> Path:
    from ovdet.export.exporter import export_detector

    out = tmp_path_factory.mktemp("export") / "owlvit"
    export_detector(str(tiny_owlvit), out)
    return out


def test_the_venv_has_no_torch_and_no_supervision(venv, tmp_path):
    bin_dir, env = venv  # run outside the checkout: `python -c` puts the current folder on sys.path
    for module in ("torch", "transformers", "supervision"):
        proc = subprocess.run([str(bin_dir / "python"), "-c", f"import {module}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, module
    proc = subprocess.run([str(bin_dir / "python"), "-c", "import ovdet; print(ovdet.__file__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "site-packages" in proc.stdout and str(ROOT) not in proc.stdout  # the wheel, not the checkout


def test_documented_detect_runs_from_the_wheel(venv, owlvit_export, chelsea_path, tmp_path):
    bin_dir, env = venv
    detect = [str(bin_dir / "ovdet"), "detect", str(chelsea_path), "--classes", "cat,dog", "--model",
              str(owlvit_export)]
    assert any(c.startswith("ovdet detect") and "--model exports/" in c for c in documented_commands())

    printed = subprocess.run(detect + ["--json", "-"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert printed.returncode == 0, printed.stderr[-2000:]
    records = json.loads(printed.stdout)
    assert records[0]["image"] == str(chelsea_path) and records[0]["detections"]
    assert not (tmp_path / "runs").exists()

    saved = subprocess.run(detect, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert saved.returncode == 0 and "Traceback" not in saved.stderr, saved.stderr[-2000:]
    run = tmp_path / "runs" / "detect" / "exp"
    assert sorted(p.name for p in run.iterdir()) == ["chelsea.jpg", "results.json"]
    from PIL import Image

    assert Image.open(run / "chelsea.jpg").size == (451, 300)
