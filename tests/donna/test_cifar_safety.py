"""CIFAR-10 batches are read without running code: a crafted batch is refused in one line, real ones load."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from donna.data import get_dataset, read_cifar10

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class RunsACommand:
    """What an attacker pickles: unpickling it calls ``os.system`` (it would create ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_cifar(root: Path, per_batch: int = 12, protocol: int = 4, bytes_keys: bool = False) -> Path:
    """A CIFAR-10 folder of generated batches (as ``tests/donna/test_data.py`` makes them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def key(name: str) -> str | bytes:
        return name.encode() if bytes_keys else name

    for name in NAMES:
        entry = {key("data"): rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 key("labels"): [i % 10 for i in range(per_batch)], key("batch_label"): name}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    meta = {key("label_names"): [f"class{i}" for i in range(10)], key("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol,bytes_keys", [(2, True), (4, False), (5, False)])
def test_generated_batches_load_in_every_pickle_protocol(tmp_path, protocol, bytes_keys):
    write_cifar(tmp_path, protocol=protocol, bytes_keys=bytes_keys)
    (train_x, train_y), (test_x, test_y), classes = read_cifar10(tmp_path)
    assert train_x.shape == (60, 3, 32, 32) and test_x.shape == (12, 3, 32, 32)
    assert train_y.tolist()[:12] == list(range(10)) + [0, 1] and classes[9] == "class9"
    expected = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    data = expected[b"data" if bytes_keys else "data"]
    assert np.array_equal(test_x.numpy().reshape(12, -1), data)  # the same pixels, in the same order


def test_a_batch_that_would_run_a_command_is_refused(tmp_path):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": RunsACommand(marker), "labels": [0]}))
    with pytest.raises(ValueError, match=r"data_batch_3 refused: it asks for (posix|os)\.system"):
        get_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    pickle.loads((folder / "data_batch_3").read_bytes())  # the same file unpickled plainly does run it
    assert marker.exists()


def test_the_cli_refuses_a_crafted_meta_file_in_one_line(tmp_path):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": RunsACommand(marker)}, protocol=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "donna.cli", "build-predictor", "--data", "cifar10", "--data-dir",
                           str(tmp_path), "--workdir", str(tmp_path / "run"), "--quiet"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and not marker.exists()
    assert proc.stderr.count("\n") == 1 and "batches.meta refused" in proc.stderr, proc.stderr


@pytest.mark.parametrize("damage,message", [
    (lambda f: f.write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]})), "uint8 array"),
    (lambda f: f.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]})), "0..9"),
    (lambda f: f.write_bytes(pickle.dumps([1, 2, 3])), "not the dict"),
    (lambda f: f.write_bytes(b"\x80\x04garbage"), "not a CIFAR-10 batch"),
    (lambda f: f.unlink(), "missing data_batch_2"),
])
def test_damaged_batches_name_the_file(tmp_path, damage, message):
    folder = write_cifar(tmp_path)
    damage(folder / "data_batch_2")
    with pytest.raises(ValueError, match=message) as err:
        read_cifar10(tmp_path)
    assert "data_batch_2" in str(err.value)
