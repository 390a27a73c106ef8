"""`pip install "ractd[all]"` as a package index would serve it: the wheels of ractd and of every
plugin in one folder, installed into a fresh virtual environment with ``--no-index --find-links``.

Only ractd's own distributions come from the folder. Their third-party dependencies (torch, MuJoCo,
...) are those of the test's own environment, made visible to the new one through a ``.pth`` file,
so that the install needs no network and takes seconds; pip still resolves every requirement, the
extras and each plugin's dependency on ractd included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
EXTRAS = {"maze2d": "ractd-maze2d", "mujoco": "ractd-mujoco", "kitchen": "ractd-kitchen", "bimodal": "ractd-bimodal"}
OURS = ("ractd", "__editable__")  # what the new environment must not see of the test's own


def _run(*args: str | Path, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    sources = tmp_path_factory.mktemp("sources")
    # each project builds from a copy (setuptools writes build/ and *.egg-info beside its sources);
    # --no-build-isolation: setuptools is already here, no index needed
    skip = shutil.ignore_patterns(".*", "build", "dist", "out", "*.egg-info", "__pycache__", "tests", "plugins", "scripts", "docs")
    for project in (ROOT, *PLUGINS):
        copy = shutil.copytree(project, sources / project.name, ignore=skip)
        _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", out, copy, cwd=sources)
    return out


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode().splitlines()


def test_every_task_family_is_an_extra_and_every_plugin_needs_ractd(wheels):
    names = {w.name.split("-")[0]: w for w in wheels.glob("*.whl")}
    assert set(names) == {"ractd", *(d.replace("-", "_") for d in EXTRAS.values())}
    host = _metadata(names["ractd"])
    provides = {line.split(": ", 1)[1] for line in host if line.startswith("Provides-Extra: ")}
    assert {*EXTRAS, "all", "hf"} <= provides
    requires = [line for line in host if line.startswith("Requires-Dist: ")]
    for extra, dist in EXTRAS.items():
        assert any(line.startswith(f"Requires-Dist: {dist}") and f'extra == "{extra}"' in line for line in requires), extra
    for dist in EXTRAS.values():
        assert any(line.startswith("Requires-Dist: ractd>=") for line in _metadata(names[dist.replace("-", "_")])), dist


def test_pip_install_all_from_the_wheels_lists_every_task(wheels, tmp_path):
    # the test environment's third-party packages, without ractd's own distributions
    deps = tmp_path / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.lower().startswith(OURS) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    new_site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (new_site / "deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index", "--find-links", wheels, "ractd[all]", env=env)
    envs = json.loads(_run(venv / "bin" / "ractd", "envs", "--json", env={**env, "RACTD_CACHE_DIR": str(tmp_path / "cache")}).stdout)
    loaded = {a["name"]: a for a in envs["adapters"]}
    assert set(EXTRAS) <= set(loaded), envs
    assert all(loaded[name]["tasks"] and not loaded[name]["error"] for name in EXTRAS), envs
    assert {loaded[name]["distribution"] for name in EXTRAS} == set(EXTRAS.values())
    # a tiny chain runs from the installed wheels
    chain = {**env, "RACTD_CACHE_DIR": str(tmp_path / "cache")}
    ractd = venv / "bin" / "ractd"
    _run(ractd, "fetch", "bimodal", "--source", "local", "--steps", "300", env=chain)
    _run(ractd, "train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3", env=chain)
    _run(ractd, "train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "3", env=chain)
    _run(ractd, "distill", "--env", "bimodal", "--preset", "tiny", "--steps", "2", env=chain)
    rollout = json.loads(_run(ractd, "rollout", "--env", "bimodal", "--episodes", "2", "--json", env=chain).stdout)
    assert rollout["episodes"] == 2 and rollout["model_kind"] == "student"
    # the shipped recipes are in the wheel
    recipes = json.loads(_run(venv / "bin" / "ractd", "recipes", "--json", env=env).stdout)["recipes"]
    assert {"maze2d-umaze", "maze2d-medium", "maze2d-large"} <= {r["name"] for r in recipes}
    # ractd itself comes from the wheel, not from this checkout
    where = _run(python, "-c", "import ractd_cli; print(ractd_cli.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv), where
