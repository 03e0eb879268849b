"""Training across machines: real worker processes on 127.0.0.1 with TF_CONFIG.

Each test launches `train.py --strategy multi_worker` as separate processes
that find each other through free local ports, as two machines would.
"""

import csv
import glob
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import REPO, two_class_records
from model.training import multi_worker

# A tiny R(2+1)D on two motion classes; deterministic, so reruns agree.
ARGS = ["--model", "r2plus1d_10", "--width_multiplier", "0.25", "--num_frames", "8",
        "--frame_step", "3", "--image_size", "48", "--batch_size", "4",
        "--learning_rate", "2e-3", "--no-flip", "--eval_clips", "1", "--seed", "0",
        "--deterministic", "--precise_bn_batches", "4", "--collective_timeout", "30"]


# This folder, and the shared helpers', on the path of a process started from the repository.
TESTS = os.pathsep.join([str(pathlib.Path(__file__).parent), str(REPO / "tests")])


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return two_class_records(tmp_path_factory.mktemp("multi_worker_records"), "--num_shards", "2")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _launch(records, run_dir, ports, index, *extra):
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                 "task": {"type": "worker", "index": index}}
    # Each worker stands for a machine: on a GPU machine, each gets its own GPU
    # (or, with fewer GPUs than workers, none), never a shared one.
    env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES=worker_device(index, len(ports)))
    return subprocess.Popen(
        [sys.executable, "train.py", "--records", str(records), "--output_dir",
         str(run_dir), "--strategy", "multi_worker", *ARGS, *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_device(index, workers):
    """`CUDA_VISIBLE_DEVICES` of a worker: its own GPU when there is one for each."""
    try:
        listed = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True,
                                text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        listed = []
    return str(index) if len(listed) >= workers else ""


def _finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _history(run_dir):
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _digest(out):
    return re.search(r"weights sha256 ([0-9a-f]{64})", out)[1]


def _temporary_folders(index):
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"twoplusone-worker{index}-*")))


@pytest.mark.slow
def test_two_workers_train_one_run_like_one_machine(records, tmp_path):
    before = _temporary_folders(1)
    ports = _free_ports(2)
    run_dir = tmp_path / "run"
    workers = [_launch(records, run_dir, ports, index, "--epochs", "6") for index in (0, 1)]
    (code0, out0, err0), (code1, out1, err1) = [_finish(w) for w in workers]
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    for name in ("metrics.json", "model.keras", "history.csv", "config.json",
                 "checkpoints/last.keras", "learning_curves.png"):
        assert (run_dir / name).exists(), name
    assert "worker 1 done" in out1 and "video accuracy" not in out1  # evaluated once
    assert _digest(out0) == _digest(out1)  # every weight, BatchNorm averages included
    assert _temporary_folders(1) == before  # worker 1 left nothing behind
    history = _history(run_dir)
    assert [int(row["epoch"]) for row in history] == list(range(6))
    losses = [float(row["loss"]) for row in history]
    assert losses[-1] < 0.8 * losses[0], losses
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["num_videos"] == 16
    assert json.loads((run_dir / "config.json").read_text())["replicas"] == 2



def custom_step_against_fit(policy="float32", jit_compile=False):
    """One step of `CustomLoop` under MirroredStrategy over two logical CPUs, and one
    step of Keras's `fit` on one device, from the same weights on the same global batch."""
    import keras
    import numpy as np
    import tensorflow as tf
    keras.mixed_precision.set_dtype_policy(policy)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]

    def compiled():
        keras.utils.set_random_seed(1)
        network = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, "relu"),
                                    keras.layers.Dense(3)])
        network.compile(optimizer=keras.optimizers.SGD(0.5),
                        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                  label_smoothing=0.1))
        return network

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        ours = compiled()
    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat())
    callbacks = keras.callbacks.CallbackList([], add_history=True, model=ours)
    multi_worker.CustomLoop(ours, strategy, jit_compile=jit_compile).fit(
        batches, epochs=1, steps=1, initial_epoch=0, callbacks=callbacks,
        report=lambda line: None)
    theirs = compiled()
    history = theirs.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return (ours.history.history["loss"][0], history.history["loss"][0],
            max(float(np.abs(a - b).max())
                for a, b in zip(ours.get_weights(), theirs.get_weights())),
            max(float(np.abs(a - b).max())
                for a, b in zip(theirs.get_weights(), compiled().get_weights())))


@pytest.mark.slow
@pytest.mark.parametrize("policy,jit_compile,tolerance", [
    ("float32", False, 1e-6), ("mixed_bfloat16", False, 2e-2), ("float32", True, 1e-5)])
def test_the_step_under_two_replicas_is_fits_step_on_the_global_batch(policy, jit_compile,
                                                                       tolerance):
    code = ("from test_multi_worker import custom_step_against_fit\n"
            f"print(*custom_step_against_fit({policy!r}, {jit_compile}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=TESTS))
    assert result.returncode == 0, result.stderr[-3000:]
    our_loss, fit_loss, weight_gap, step_size = map(float, result.stdout.split()[-4:])
    assert abs(our_loss - fit_loss) < tolerance * fit_loss, (our_loss, fit_loss)
    assert step_size > 1e-3  # the step moved the weights...
    assert weight_gap < tolerance * step_size, (weight_gap, step_size)  # ...as fit's did


@pytest.mark.slow
def test_a_killed_worker_and_a_relaunch_resume_the_run(records, tmp_path):
    ports = _free_ports(2)
    run_dir = tmp_path / "run"
    workers = [_launch(records, run_dir, ports, index, "--epochs", "8") for index in (0, 1)]
    deadline = time.time() + 300
    while len(_history(run_dir)) < 2 and time.time() < deadline:
        assert workers[0].poll() is None, _finish(workers[0])[2][-3000:]
        time.sleep(0.2)
    workers[1].kill()
    killed_at = time.time()
    code, _, err = _finish(workers[0])
    assert code != 0 and time.time() - killed_at < 60
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost a peer" in errors[0] and "relaunch" in errors[0], err
    saved = len(_history(run_dir))
    assert 2 <= saved < 8

    ports = _free_ports(2)
    workers = [_launch(records, run_dir, ports, index, "--epochs", "8") for index in (0, 1)]
    (code0, out0, err0), (code1, out1, err1) = [_finish(w) for w in workers]
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    assert f"resuming {run_dir} from epoch {saved}" in out0
    assert _digest(out0) == _digest(out1)  # both restored the same epoch
    assert [int(row["epoch"]) for row in _history(run_dir)] == list(range(8))
    assert (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_stops_with_a_message(records, tmp_path):
    ports = _free_ports(2)
    started = time.time()
    worker = _launch(records, tmp_path / "run", ports, 0, "--epochs", "1",
                     "--collective_timeout", "5")
    code, _, err = _finish(worker, timeout=300)
    assert code != 0 and time.time() - started < 120
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert f"cannot reach worker 1 (127.0.0.1:{ports[1]})" in errors[0]
    assert "--collective_timeout" in errors[0]


def test_too_few_shards_for_the_workers_fail_before_joining(records, tmp_path):
    worker = _launch(records, tmp_path / "run", _free_ports(3), 0, "--epochs", "1")
    code, _, err = _finish(worker, timeout=300)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-3000:]
    assert "2 shard(s) for 3 workers" in errors[0] and "--num_shards 3" in errors[0]
    assert not (tmp_path / "run").exists()
