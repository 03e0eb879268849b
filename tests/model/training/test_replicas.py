"""A host batch through every local replica: sliced in order, gathered back in order."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from model.training.replicas import PerReplica

HERE = pathlib.Path(__file__).parent


def _rows_and_sums(values):
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return {"rows": values * 2.0, "sums": tf.reduce_sum(values, axis=1),
            "replica": tf.convert_to_tensor(replica)}


@pytest.mark.parametrize("strategy", [None, "one_device"])
def test_one_replica_runs_the_whole_batch(strategy):
    if strategy:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    forward = PerReplica(strategy, _rows_and_sums)
    assert forward.replicas == 1
    batch = tf.reshape(tf.range(15, dtype=tf.float32), [5, 3])  # any size: nothing to split
    (out,) = forward(batch)
    np.testing.assert_array_equal(out["rows"].numpy(), batch.numpy() * 2)
    np.testing.assert_array_equal(out["sums"].numpy(), batch.numpy().sum(1))
    assert int(out["replica"]) == 0


def two_replicas():
    """Under MirroredStrategy over two logical CPUs: each replica's pieces, and the error
    of a batch that does not split."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    forward = PerReplica(strategy, _rows_and_sums)
    pieces = forward(tf.reshape(tf.range(12, dtype=tf.float32), [4, 3]))
    try:
        forward(tf.zeros([3, 3]))
        error = None
    except ValueError as raised:
        error = str(raised)
    return {"replicas": forward.replicas,
            "rows": [p["rows"].numpy().tolist() for p in pieces],
            "sums": [p["sums"].numpy().tolist() for p in pieces],
            "replica_ids": [int(p["replica"]) for p in pieces], "error": error}


@pytest.mark.slow
def test_two_replicas_take_contiguous_slices_and_return_them_in_order():
    code = "import json\nfrom test_replicas import two_replicas\nprint(json.dumps(two_replicas()))\n"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(HERE), str(REPO / "tests")]))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["replicas"] == 2
    assert got["rows"] == [[[0, 2, 4], [6, 8, 10]], [[12, 14, 16], [18, 20, 22]]]
    assert got["sums"] == [[3, 12], [21, 30]]
    assert got["replica_ids"] == [0, 1]  # each slice ran on its own replica
    assert got["error"] == "a batch of 3 does not split over 2 replicas; pad it to a multiple"
