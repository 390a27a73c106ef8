import json

import pytest
import torch

from ractd_cli.artifacts import list_artifacts, load_artifact, remove, resolve, save_artifact
from ractd_cli.errors import RactdError


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"net.w": torch.randn(4, 3, generator=g), "net.b": torch.randn(3, generator=g), "norm.min": torch.zeros(2)}


def test_round_trip_is_bit_exact_and_keeps_provenance():
    t = _tensors()
    a = save_artifact(t, kind="teacher", task="fake-easy", config={"down_dims": [8, 16]}, dataset="d", parents=["abc"], steps=3)
    b = load_artifact(a.id, kind="teacher", task="fake-easy")
    assert set(b.tensors) == set(t)
    for k in t:
        assert torch.equal(b.tensors[k], t[k])
    assert b.meta["config"] == {"down_dims": [8, 16]}
    assert b.meta["parents"] == ["abc"] and b.meta["dataset"] == "d" and b.meta["steps"] == 3
    assert b.group("net").keys() == {"w", "b"}


def test_id_is_content_hash_same_content_same_id():
    a = save_artifact(_tensors(0), kind="teacher", task="fake-easy", config={})
    b = save_artifact(_tensors(0), kind="teacher", task="fake-easy", config={})
    c = save_artifact(_tensors(1), kind="teacher", task="fake-easy", config={})
    assert a.id == b.id != c.id


def test_resolve_by_prefix_path_and_latest():
    a = save_artifact(_tensors(0), kind="teacher", task="fake-easy", config={})
    save_artifact(_tensors(1), kind="reward", task="fake-easy", config={})
    assert resolve(a.id[:6]) == a.path
    assert resolve(str(a.path)) == a.path
    assert resolve("latest", kind="teacher", task="fake-easy") == a.path
    with pytest.raises(RactdError, match="run `ractd distill --env fake-easy` first"):
        resolve("latest", kind="student", task="fake-easy")
    with pytest.raises(RactdError, match="train one first"):
        resolve("latest", kind="student")


def test_wrong_kind_or_task_refused():
    a = save_artifact(_tensors(), kind="teacher", task="fake-easy", config={})
    with pytest.raises(RactdError, match="is a teacher, not a student"):
        load_artifact(a.id, kind="student")
    with pytest.raises(RactdError, match="trained for task fake-easy, not fake-hard"):
        load_artifact(a.id, task="fake-hard")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_artifact_gives_clean_error(damage):
    a = save_artifact(_tensors(), kind="teacher", task="fake-easy", config={})
    data = a.path.read_bytes()
    if damage == "truncate":
        a.path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        a.path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        a.path.write_bytes(b"\x00" * 5)
    with pytest.raises(RactdError, match="corrupted|not a readable"):
        load_artifact(a.path)


def test_interrupted_write_leaves_no_artifact(monkeypatch):
    import ractd_cli.artifacts as art

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(art.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(_tensors(), kind="teacher", task="fake-easy", config={})
    assert list_artifacts() == []
    d = art.models_dir()
    assert [p for p in d.iterdir()] == []


def test_header_is_plain_json_not_pickle():
    a = save_artifact(_tensors(), kind="student", task="fake-easy", config={"x": 1})
    n = int.from_bytes(a.path.read_bytes()[:8], "little")
    header = json.loads(a.path.read_bytes()[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["ractd"])
    assert meta["kind"] == "student" and meta["id"] == a.id


def test_remove():
    a = save_artifact(_tensors(), kind="teacher", task="fake-easy", config={})
    assert remove(a.id[:5]) == [a.path]
    assert not a.path.exists()
    with pytest.raises(RactdError):
        remove("nope")
