"""Checkpoints: atomic writes, SHA-256 seal, one-line refusals, shipped (legacy) weights, .prev."""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from vardbio.model.checkpoint import (CheckpointError, CheckpointMismatchError,
                                      CorruptCheckpointError, load_verified, load_weights,
                                      previous_path, read_checkpoint, save_model, save_verified)
from vardbio_models.toy import plugin

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return plugin.build({"hidden": 16, "depth": 1})


@pytest.fixture
def saved(model, tmp_path):
    return save_model(model, tmp_path / "model.pt", pretrain_metrics={"train_steps": 3})


def refused(path, error=CheckpointError):
    """The one-line error read_checkpoint raises for `path`."""
    with pytest.raises(error) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_round_trip_and_plain_torch_load(model, saved):
    blob = read_checkpoint(saved)
    assert blob["extra"] == {"pretrain_metrics": {"train_steps": 3}}
    for name, value in model.state_dict().items():
        assert torch.equal(blob["state_dict"][name], value)
    assert torch.load(saved, weights_only=False)["spec"] == model.spec  # still a torch file
    fresh = load_weights(plugin.build({"hidden": 16, "depth": 1}), saved)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    obj = {"step": 7, "x": torch.arange(3)}
    back = load_verified(save_verified(obj, saved.parent / "state.pt"), what="resume state")
    assert back["step"] == 7 and torch.equal(back["x"], obj["x"])


def test_truncated(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    assert "truncated" in refused(saved, CorruptCheckpointError)
    saved.write_bytes(data[:-10])  # cut inside the checksum itself
    assert "truncated" in refused(saved, CorruptCheckpointError)


def test_empty(tmp_path):
    (tmp_path / "empty.pt").touch()
    assert "empty" in refused(tmp_path / "empty.pt", CorruptCheckpointError)


def test_text(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    assert "text file" in refused(path, CorruptCheckpointError)


def test_flipped_bytes_in_the_middle(saved):
    data = bytearray(saved.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
    saved.write_bytes(bytes(data))
    assert "checksum mismatch" in refused(saved, CorruptCheckpointError)


def test_foreign_files(tmp_path):
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps([1, 2, 3]))
    assert "a plain pickle of a list" in refused(plain, CheckpointMismatchError)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)  # a torch file from elsewhere
    assert "keys [weights]" in refused(foreign, CheckpointMismatchError)
    other = save_verified({"identity": "run", "model": {}}, tmp_path / "last.pt")
    assert "not a vardbio model checkpoint" in refused(other, CheckpointMismatchError)
    binary = tmp_path / "random.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "not a checkpoint" in refused(binary, CorruptCheckpointError)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_wrong_model_spec(saved):
    with pytest.raises(CheckpointMismatchError, match="was made for model") as info:
        load_weights(plugin.build({"hidden": 8, "depth": 1}), saved)
    assert "\n" not in str(info.value)


def test_failed_write_leaves_the_old_file_and_no_partial_file(model, saved, monkeypatch):
    before = saved.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)  # fails after the bytes are written
    with pytest.raises(OSError, match="disk full"):
        save_model(model, saved, pretrain_metrics={"train_steps": 4})
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", crash)  # killed just before the rename
    with pytest.raises(OSError, match="disk full"):
        save_model(model, saved, pretrain_metrics={"train_steps": 5})
    monkeypatch.undo()
    with pytest.raises(Exception):
        save_verified({"f": lambda: 0}, saved.parent / "new.pt")  # cannot be pickled
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.pt"]


def test_previous_file_is_kept(model, tmp_path):
    path = tmp_path / "last.pt"
    prev = previous_path(path)
    assert prev.name == "last.prev.pt"
    save_verified({"step": 1}, path, keep_previous=True)
    assert not prev.exists()  # nothing to keep yet
    save_verified({"step": 2}, path, keep_previous=True)
    assert load_verified(path)["step"] == 2 and load_verified(prev)["step"] == 1
    save_verified({"step": 3}, path)  # without the option .prev is left alone
    assert load_verified(prev)["step"] == 1
    save_verified({"step": 4}, path, keep_previous=True)
    assert load_verified(prev)["step"] == 3
    # a current file that fails its checksum is not kept over a good .prev
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    save_verified({"step": 5}, path, keep_previous=True)
    assert load_verified(path)["step"] == 5 and load_verified(prev)["step"] == 3
    save_model(model, tmp_path / "m.pt")
    save_model(model, tmp_path / "m.pt", keep_previous=True)
    assert read_checkpoint(tmp_path / "m.prev.pt")["spec"] == model.spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt",
                                                          "m.prev.pt", "m.pt"]


def test_shipped_weights_load_unverified_and_are_not_rewritten(caplog):
    shipped = sorted(WEIGHTS.glob("*.pt"))
    assert shipped
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped}
    with caplog.at_level(logging.INFO, logger="vardbio.model.checkpoint"):
        for path in shipped:
            assert read_checkpoint(path)["format"] == "vardbio-model-1"
            read_checkpoint(path)  # reported once per file, not per read
    unverified = [r for r in caplog.records if "loaded unverified" in r.getMessage()]
    assert len(unverified) <= len(shipped) and all(r.levelno == logging.INFO for r in unverified)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped} == digests
    # without a legacy test, a file without checksum is refused
    with pytest.raises(CheckpointMismatchError, match="no checksum"):
        load_verified(shipped[0], what="resume state")
