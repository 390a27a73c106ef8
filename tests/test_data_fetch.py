"""fetch(): local generation into a genuine Minari dataset, no-op re-fetch, safe --force, offline errors."""

from __future__ import annotations

import dataclasses
import importlib
import time

import numpy as np
import pytest

from ractd_cli.data import dataset_path, fetch, load_episodes, local_dataset_id, read_metadata
from ractd_cli.errors import RactdError

fetch_mod = importlib.import_module("ractd_cli.data.fetch")  # the module, not the function

ractd_bimodal = pytest.importorskip("ractd_bimodal")


class CountingAdapter(ractd_bimodal.BimodalAdapter):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.calls = 0
        self.fail = fail

    def generate(self, task, *, steps, seed, progress=None):
        import torch

        self.calls += 1
        self.threads = torch.get_num_threads()  # what the generator ran on
        if self.fail:
            raise RuntimeError("generator broke")
        return super().generate(task, steps=steps, seed=seed, progress=progress)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    return tmp_path


def _spec(adapter):
    return adapter.tasks["bimodal"]


def test_local_fetch_writes_a_minari_dataset(cache, monkeypatch):
    import minari

    a = CountingAdapter()
    done = []
    did = fetch(a, _spec(a), source="local", steps=300, seed=1, force=False, progress=done.append)
    assert did == local_dataset_id(_spec(a)) == "ractd/bimodal/local-v0"
    assert sum(done) >= 300
    assert (cache / "datasets" / did / "data" / "main_data.hdf5").is_file()
    assert not list((cache / "datasets").glob(".staging-*"))
    # Minari itself reads it, with the adapter's reference scores in its metadata
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(cache / "datasets"))
    ds = minari.load_dataset(did)
    assert ds.total_steps >= 300
    np.testing.assert_allclose(minari.get_normalized_score(ds, np.array([0.5])), [0.5])
    meta = read_metadata(did)
    assert meta["ref_min_score"] == 0.0 and meta["ref_max_score"] == 1.0
    assert meta["ractd"]["task"] == "bimodal" and meta["ractd"]["steps"] == 300 and meta["ractd"]["seed"] == 1
    eps = load_episodes(a, _spec(a), did)
    assert len(eps) == ds.total_episodes and eps[0].states.shape[1] == 2


def test_refetch_is_a_noop_and_force_rebuilds(cache):
    a = CountingAdapter()
    spec = _spec(a)
    did = fetch(a, spec, source="local", steps=200, seed=0, force=False)
    h5 = dataset_path(did) / "data" / "main_data.hdf5"
    stamp = h5.stat().st_mtime_ns
    assert fetch(a, spec, source="local", steps=None, seed=0, force=False) == did
    assert fetch(a, spec, source="local", steps=200, seed=0, force=False) == did
    assert a.calls == 1 and h5.stat().st_mtime_ns == stamp
    # asking for a different recipe without --force is an error, not a silent mismatch
    with pytest.raises(RactdError, match="--force"):
        fetch(a, spec, source="local", steps=400, seed=0, force=False)
    with pytest.raises(RactdError, match="--force"):
        fetch(a, spec, source="local", steps=None, seed=5, force=False)
    time.sleep(0.01)
    fetch(a, spec, source="local", steps=400, seed=0, force=True)
    assert a.calls == 2
    assert read_metadata(did)["ractd"]["steps"] == 400
    leftovers = [p.name for p in (cache / "datasets").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_the_generator_runs_on_one_thread_unless_told_and_the_dataset_says_so(cache):
    """SAC's data depend on torch's thread count, so a local generator runs on one thread whatever
    the machine's cores (or --threads N), the caller's count is restored, and the dataset records
    it; asking an existing dataset for another count explicitly needs --force."""
    import torch

    before = torch.get_num_threads()
    a = CountingAdapter()
    spec = _spec(a)
    did = fetch(a, spec, source="local", steps=200, seed=0, force=False)
    assert a.threads == 1 and torch.get_num_threads() == before
    assert fetch_mod.store.local_recipe(did)["made_on"] == read_metadata(did)["ractd"]["made_on"]
    assert fetch_mod.store.local_recipe("ractd/bimodal/missing-v0") == {}
    made = read_metadata(did)["ractd"]["made_on"]
    assert made["threads"] == 1 and made["torch"] == torch.__version__
    from ractd_cli.artifacts import cpu_name

    assert made["cpu"] == cpu_name() and made["cpu"]  # which CPU made it: two of one kernel family may differ
    assert fetch(a, spec, source="local", steps=200, seed=0, threads=1, force=False) == did and a.calls == 1
    with pytest.raises(RactdError, match=r"threads=1 \(asked 2\).*--force"):
        fetch(a, spec, source="local", steps=200, seed=0, threads=2, force=False)
    fetch(a, spec, source="local", steps=200, seed=0, threads=2, force=True)
    assert a.threads == 2 and torch.get_num_threads() == before
    assert read_metadata(did)["ractd"]["made_on"]["threads"] == 2
    assert fetch(a, spec, source="local", steps=200, seed=0, force=False) == did and a.calls == 2  # not asked: kept


def test_failed_force_keeps_the_old_dataset(cache):
    good = CountingAdapter()
    spec = _spec(good)
    did = fetch(good, spec, source="local", steps=200, seed=0, force=False)
    with pytest.raises(RuntimeError):
        fetch(CountingAdapter(fail=True), spec, source="local", steps=200, seed=0, force=True)
    assert read_metadata(did)["ractd"]["steps"] == 200
    assert len(load_episodes(good, spec, did)) > 0
    assert not list((cache / "datasets").glob(".staging-*"))


def test_remote_fetch_fails_fast_offline(cache, monkeypatch):
    a = CountingAdapter()
    spec = dataclasses.replace(_spec(a), minari_ids=("D4RL/pointmaze/umaze-v2",))
    # nothing listens on this loopback port: the probe must refuse quickly, before any hub client runs
    monkeypatch.setattr(fetch_mod, "remote_endpoint", lambda: ("127.0.0.1", 9))
    import minari

    downloads = []
    monkeypatch.setattr(minari, "download_dataset", lambda *a, **k: downloads.append(a))
    with pytest.raises(RactdError, match="--source local"):
        fetch(a, spec, source="minari", steps=None, seed=0, force=False)
    assert downloads == []  # refused by the probe, before any hub client ran
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RactdError, match="HF_HUB_OFFLINE"):
        fetch(a, spec, source="minari", steps=None, seed=0, force=False)
    assert not (cache / "datasets" / "D4RL").exists()


def test_source_errors(cache):
    a = CountingAdapter()
    with pytest.raises(RactdError, match="--source local"):
        fetch(a, _spec(a), source="minari", steps=None, seed=0, force=False)  # bimodal has no remote
    no_local = dataclasses.replace(_spec(a), local_generation="")
    with pytest.raises(RactdError, match="cannot generate"):
        fetch(a, no_local, source="local", steps=10, seed=0, force=False)
    with pytest.raises(RactdError, match="unknown --source"):
        fetch(a, _spec(a), source="s3", steps=None, seed=0, force=False)  # type: ignore[arg-type]
    with pytest.raises(RactdError, match="no dataset"):
        load_episodes(a, _spec(a), "ractd/bimodal/missing-v0")


def test_load_rejects_data_of_other_dimensions(cache):
    a = CountingAdapter()
    did = fetch(a, _spec(a), source="local", steps=50, seed=0, force=False)
    wrong = dataclasses.replace(_spec(a), obs_dim=3)
    with pytest.raises(RactdError, match="does not fit"):
        load_episodes(a, wrong, did)


def test_bad_fetch_arguments_are_usage_errors_from_library_and_cli(cache):
    """--source and --steps are checked in one place, with one exit code (2), whether the dataset
    exists or not and whether the library or the command line is called."""
    from typer.testing import CliRunner

    from ractd_cli.cli import app
    from ractd_cli.errors import UsageError

    a = CountingAdapter()
    spec = _spec(a)
    for kwargs in (dict(source="web", steps=None), dict(source="local", steps=0), dict(source="local", steps=-3)):
        with pytest.raises(UsageError):
            fetch(a, spec, seed=0, force=False, **kwargs)
    fetch(a, spec, source="local", steps=200, seed=0, force=False)  # now it exists: still a usage error
    with pytest.raises(UsageError):
        fetch(a, spec, source="local", steps=0, seed=0, force=False)
    runner = CliRunner()
    with pytest.raises(UsageError):
        fetch(a, spec, source="local", steps=200, seed=0, threads=0, force=False)
    for args in (["--source", "web"], ["--source", "local", "--steps", "0"], ["--source", "local", "--threads", "0"]):
        r = runner.invoke(app, ["fetch", "bimodal", *args])
        assert r.exit_code == 2, r.output


def test_cli_refetch_shows_no_generation_bar(cache):
    """A second `ractd fetch --source local` only checks the recipe: it says where the dataset is,
    without a "generating" bar stuck at 0 (the bar is for work that happens)."""
    from typer.testing import CliRunner

    from ractd_cli.cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "200"])
    assert first.exit_code == 0 and "generating bimodal" in first.output, first.output
    again = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "200"])
    assert again.exit_code == 0 and "generating bimodal" not in again.output and " steps, in" in again.output, again.output
    changed = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "300"])
    assert changed.exit_code != 0 and "--force" in changed.output, changed.output
    import json

    info = json.loads(runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--json"]).stdout)
    assert info["made_on"]["threads"] == 1  # the generator's thread count, whatever this machine's cores
