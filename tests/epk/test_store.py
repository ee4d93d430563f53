"""Trajectory save/load: round trips, streaming stores, and clear errors for bad stores."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from kernelens.epk import StoreError, Trajectory, fit
from kernelens.epk import store as store_mod


def _same(t1: Trajectory, t2: Trajectory, *, same_run: bool = True) -> None:
    assert t1.num_steps == t2.num_steps
    assert (t1.header.run_id == t2.header.run_id) == same_run
    assert replace(t1.header, run_id="") == replace(t2.header, run_id="")
    for s in range(t1.num_steps + 1):
        for k, v in t1.weights(s).items():
            assert torch.equal(v, t2.weights(s)[k])
    for s in range(t1.num_steps):
        a, b = t1.step(s), t2.step(s)
        for name in ("indices", "inputs", "targets", "outputs", "output_grads"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        assert a.loss == b.loss and a.rules == b.rules and a.hyper == b.hyper
        if a.preconditioners is not None:
            for k, v in a.preconditioners.items():
                assert torch.equal(v, b.preconditioners[k])
    for k, v in t1.static().items():
        assert torch.equal(v, t2.static()[k])


def test_save_load_round_trip(train, tmp_path):
    traj = train("adam_l2")
    path = traj.save(tmp_path / "run", shard_bytes=2000)  # several shards
    manifest = json.loads((path / "manifest.json").read_text())
    assert len(manifest["files"]) > 2
    loaded = Trajectory.load(path, traj.model, verify=True)
    assert loaded.path == path
    _same(traj, loaded)
    # a disk trajectory saves again (copying shard by shard)
    again = Trajectory.load(loaded.save(tmp_path / "copy"), traj.model)
    _same(traj, again)


def test_streaming_store_equals_memory_recording(tanh_mlp, toy_data, tmp_path):
    X, y = toy_data()
    runs = []
    for store in (None, tmp_path / "stream"):
        torch.manual_seed(0)
        model = tanh_mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        runs.append(fit(model, X, y, optimizer=opt, epochs=2, batch_size=5, store=store))
    assert runs[0].path is None and runs[1].path == tmp_path / "stream"
    _same(runs[0], runs[1], same_run=False)  # two recordings of the same training


def test_overwrite_protection(train, tmp_path):
    traj = train("sgd")
    traj.save(tmp_path / "run")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        traj.save(tmp_path / "run")
    traj.save(tmp_path / "run", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a trajectory store"):
        traj.save(tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_failed_save_leaves_nothing_half_written(train, tmp_path, monkeypatch):
    traj = train("sgd")
    traj.save(tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    calls = {"n": 0}
    real = store_mod.write_atomic

    def failing(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(store_mod, "write_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        traj.save(tmp_path / "run", overwrite=True, shard_bytes=1000)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left over
    Trajectory.load(tmp_path / "run", traj.model, verify=True)


def test_corrupted_file_is_detected_by_checksum(train, tmp_path):
    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    shard = path / "steps-00000000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    loaded = Trajectory.load(path, traj.model)  # sizes still match
    with pytest.raises(StoreError, match="checksum of 'steps-00000000.safetensors'"):
        loaded.weights(1)
    with pytest.raises(StoreError, match="checksum"):
        Trajectory.load(path, traj.model, verify=True)


def test_truncated_and_missing_files(train, tmp_path):
    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    shard = path / "steps-00000000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match="truncated or corrupted.*bytes"):
        Trajectory.load(path, traj.model)
    shard.unlink()
    with pytest.raises(StoreError, match="truncated.*missing"):
        Trajectory.load(path, traj.model)


def test_foreign_and_broken_manifests(train, tmp_path):
    model = train("sgd").model
    with pytest.raises(StoreError, match="does not exist"):
        Trajectory.load(tmp_path / "nowhere", model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        Trajectory.load(tmp_path / "empty", model)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        Trajectory.load(tmp_path / "bad", model)
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"format": "someone-else"}))
    with pytest.raises(StoreError, match="not a kernelens trajectory manifest"):
        Trajectory.load(tmp_path / "bad", model)
    (tmp_path / "bad" / "manifest.json").write_text(
        json.dumps({"format": store_mod.FORMAT, "version": 99})
    )
    with pytest.raises(StoreError, match="version 99"):
        Trajectory.load(tmp_path / "bad", model)


def test_loading_with_a_different_model(train, tmp_path):
    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    wider = nn.Sequential(nn.Linear(2, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    with pytest.raises(ValueError, match=r"different model.*'0.weight' is \(7, 2\)"):
        Trajectory.load(path, wider)
    renamed = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Identity(), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match="'2.weight' is missing from the model"):
        Trajectory.load(path, renamed)
    single = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))  # float32
    with pytest.raises(ValueError, match="torch.float32 in the model but"):
        Trajectory.load(path, single)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Trajectory.load(path, "model")


def test_step_index_errors(train):
    traj = train("sgd")
    with pytest.raises(IndexError, match=r"weights index 7 is out of range \[0, 6\]"):
        traj.weights(7)
    with pytest.raises(IndexError, match=r"step index 6 is out of range \[0, 5\]"):
        traj.step(6)
    with pytest.raises(TypeError, match="must be an int"):
        traj.step(1.0)


def test_recorder_refuses_a_non_empty_store(tanh_mlp, toy_data, tmp_path):
    X, y = toy_data()
    model = tanh_mlp()
    fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
        batch_size=6, store=tmp_path / "run")  # fmt: skip
    model = tanh_mlp()
    with pytest.raises(FileExistsError, match="not empty"):
        fit(model, X, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            batch_size=6, store=tmp_path / "run")  # fmt: skip


def _edit_manifest(path, edit, *, reseal=False):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    if reseal:  # a deliberate forgery that also recomputes the manifest checksum
        store_mod.write_manifest(path, manifest)
    else:
        (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["steps"][1]["hyper"][0].update(lr=2 * m["steps"][1]["hyper"][0]["lr"]),
        lambda m: m["steps"][1]["rules"][0].update(alpha=2 * m["steps"][1]["rules"][0]["alpha"]),
        lambda m: m["header"].update(num_examples=m["header"]["num_examples"] + 5),
    ],
    ids=["lr", "rule", "num_examples"],
)
def test_edited_manifest_is_refused(train, tmp_path, edit):
    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    _edit_manifest(path, edit)
    with pytest.raises(StoreError, match="manifest.*was edited after it was written"):
        Trajectory.load(path, traj.model, verify=True)
    with pytest.raises(StoreError, match="edited"):
        Trajectory.load(path, traj.model)


def test_shard_from_another_run_is_refused(train, tmp_path):
    a, b = train("sgd", seed=0), train("sgd", seed=1)
    pa, pb = a.save(tmp_path / "a"), b.save(tmp_path / "b")
    name = "steps-00000000.safetensors"
    (pa / name).write_bytes((pb / name).read_bytes())
    entry_b = next(e for e in json.loads((pb / "manifest.json").read_text())["files"]
                   if e["name"] == name)  # fmt: skip

    def take_entry(m):
        m["files"] = [entry_b if e["name"] == name else e for e in m["files"]]

    with pytest.raises(StoreError):  # the copied entry alone breaks the manifest checksum
        _edit_manifest(pa, take_entry)
        Trajectory.load(pa, a.model)
    _edit_manifest(pa, take_entry, reseal=True)
    with pytest.raises(StoreError, match="belongs to another recording"):
        Trajectory.load(pa, a.model, verify=True)
    loaded = Trajectory.load(pa, a.model)  # lazily: refused at first use
    with pytest.raises(StoreError, match="belongs to another recording"):
        loaded.weights(1)


def test_pickle_posing_as_a_shard_raises_store_error(train, tmp_path):
    import hashlib
    import pickle

    traj = train("sgd")
    path = traj.save(tmp_path / "run")
    name = "steps-00000000.safetensors"
    data = pickle.dumps({"w.0.0.weight": torch.zeros(6, 2)})
    (path / name).write_bytes(data)

    def fix_entry(m):
        for e in m["files"]:
            if e["name"] == name:
                e.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    _edit_manifest(path, fix_entry, reseal=True)
    with pytest.raises(StoreError, match="not a safetensors file"):
        Trajectory.load(path, traj.model, verify=True)
    with pytest.raises(StoreError, match="not a safetensors file"):
        Trajectory.load(path, traj.model).weights(1)
