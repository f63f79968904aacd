"""Planted data files: a CIFAR batch is read with an unpickler that admits numpy arrays and plain data only."""
import os
import pickle

import numpy as np
import pytest

from conftest import write_cifar10
from lab.datasets import DataError, load_raw


class _MakesFolder:
    """Unpickling this calls os.mkdir(path): what a planted batch file would do with os.system."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_a_planted_cifar_batch_runs_no_code_and_is_named_in_one_line(tmp_path, where):
    folder = write_cifar10(tmp_path / "data", n_train=10, n_test=2)
    marker = tmp_path / "ran"
    payload = _MakesFolder(marker)
    planted = payload if where == "top" else {"data": np.zeros((2, 3072), np.uint8), "labels": [payload, 1]}
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(planted, f)
    with pytest.raises(DataError) as err:
        load_raw("cifar10", tmp_path / "data", download=False)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and "data_batch_1" in message and "posix.mkdir" in message


def test_a_codecs_call_other_than_latin1_bytes_is_refused(tmp_path):
    import codecs

    class Zipped:
        def __reduce__(self):
            return (codecs.encode, (b"x", "zlib_codec"))

    folder = write_cifar10(tmp_path, n_train=10, n_test=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [Zipped()]}, f, protocol=2)
    with pytest.raises(DataError, match="test_batch"):
        load_raw("cifar10", tmp_path, download=False)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_still_load(tmp_path, protocol):
    folder = write_cifar10(tmp_path, n_train=10, n_test=2)
    img = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    raw = pickle.dumps({b"data": img, b"labels": [np.int64(7), 2], b"batch_label": b"testing batch 1 of 1"},
                       protocol=protocol)
    if protocol == 2:  # as the official Python 2 files name numpy's rebuilder
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (folder / "test_batch").write_bytes(raw)
    _, test = load_raw("cifar10", tmp_path, download=False)
    assert test.labels.tolist() == [7, 2] and test.images.reshape(2, -1).numpy().tolist() == img.tolist()
