"""Training input on a tf.data service: a dispatcher and two worker processes on
127.0.0.1, a run that trains through them and evaluates on its own, a worker
killed mid-run, and a dispatcher that is not there.

Each service test starts several TensorFlow processes: the sizes are tiny.
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, two_class_records
from model.training import data_service
from model.training.cluster import Cluster
from model.training.config import TrainError, resolve_config
from records import write_records

# A tiny R(2+1)D on two motion classes, as the trainer's own tests run it.
ARGS = ["--model", "r2plus1d_10", "--width_multiplier", "0.25", "--num_frames", "8",
        "--frame_step", "4", "--image_size", "48", "--batch_size", "8", "--no-flip",
        "--eval_clips", "2", "--seed", "0", "--steps_per_epoch", "4",
        "--precise_bn_batches", "2"]
START_SECONDS = 120  # for a server to print its address: TensorFlow loads on 2 busy cores


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    # Four shards: the dispatcher hands them out one at a time, so both workers read.
    return two_class_records(tmp_path_factory.mktemp("service_records"), "--num_shards", "4")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(folder, name, *args):
    """A server process of `python -m model.training.data_service`, and the address it
    printed."""
    log = open(folder / f"{name}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "model.training.data_service", *args], cwd=REPO,
        stdout=subprocess.PIPE, stderr=log, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    log.close()
    ready, _, _ = select.select([process.stdout], [], [], START_SECONDS)
    line = process.stdout.readline() if ready else ""
    found = re.search(r" at (?:grpc://)?\S+?:(\d+)", line)
    if not found:
        process.kill()
        log = (folder / f"{name}.log").read_text()
        raise AssertionError(f"{name} printed {line!r}; its log: {log}")
    return process, int(found.group(1))


class Service:
    """A dispatcher (fault-tolerant, with a work folder) and its workers, on 127.0.0.1."""

    def __init__(self, folder, workers=2):
        self.work_dir = folder / "dispatcher"
        self.dispatcher, port = _start(folder, "dispatcher", "dispatcher", "--port", "0",
                                       "--work_dir", str(self.work_dir))
        self.address = f"grpc://127.0.0.1:{port}"
        self.workers = [_start(folder, f"worker{i}", "worker", "--dispatcher",
                               f"127.0.0.1:{port}", "--port", "0", "--host", "127.0.0.1")[0]
                        for i in range(workers)]

    def journal(self):
        """Everything the dispatcher journaled: datasets and jobs, as bytes."""
        return b"".join(path.read_bytes() for path in self.work_dir.rglob("*") if path.is_file())

    def stop(self):
        for process in [*self.workers, self.dispatcher]:  # ours, by their ids
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    started = Service(tmp_path_factory.mktemp("service"))
    yield started
    started.stop()


def _train(records, run_dir, *extra):
    return subprocess.Popen(
        [sys.executable, "train.py", "--records", str(records), "--output_dir", str(run_dir),
         *ARGS, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


# --- The service itself.

@pytest.mark.slow
def test_two_workers_serve_each_element_once_and_trainers_of_one_job_share_it(service):
    import tensorflow as tf

    # Dynamic sharding: one pass over all workers, every element exactly once.
    served = data_service.distribute(tf.data.Dataset.range(40), service.address, "one-pass")
    assert sorted(int(x) for x in served) == list(range(40))
    # Two trainers naming the same job share it: each element reaches one of them.
    iterators = [iter(data_service.distribute(tf.data.Dataset.range(40), service.address,
                                              "shared")) for _ in range(2)]
    seen, done = ([], []), set()
    while len(done) < 2:
        for k, iterator in enumerate(iterators):
            if k not in done:
                try:
                    seen[k].append(int(next(iterator)))
                except StopIteration:
                    done.add(k)
    assert seen[0] and seen[1]
    assert sorted(seen[0] + seen[1]) == list(range(40))


# --- Training through it.

@pytest.mark.slow
def test_a_run_trains_through_the_service_and_evaluates_every_test_clip_here(
        service, records, tmp_path):
    run_dir = tmp_path / "run"
    trainer = _train(records, run_dir, "--epochs", "2", "--data_service", service.address)
    out, err = trainer.communicate(timeout=600)
    assert trainer.returncode == 0, out + err
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "input_wait" in history[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Evaluation reads the test split here, in order: every clip of every video once.
    assert metrics["test"]["num_videos"] == 16 and metrics["test"]["num_clips"] == 32
    assert len(metrics["training"]["input_wait_per_epoch"]) == 2
    # The training batches came from the service: its dispatcher journaled the run's job.
    config = json.loads((run_dir / "config.json").read_text())["config"]
    job = data_service.job_name(config, 8, 0)
    assert job.encode() in service.journal()


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_run_to_the_other(records, tmp_path):
    own, trainer = Service(tmp_path), None  # not the shared service: a worker of it dies
    try:
        run_dir = tmp_path / "run"
        # More steps after the kill than the trainer holds in its buffers (about 20
        # batches here), so that the second epoch needs the surviving worker.
        trainer = _train(records, run_dir, "--epochs", "2", "--steps_per_epoch", "40",
                         "--data_service", own.address)
        for line in trainer.stdout:  # the first epoch's line: both workers are serving
            if "input_wait" in line:
                break
        time.sleep(2)  # some steps into the second epoch
        own.workers[0].send_signal(signal.SIGKILL)
        out, err = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, out + err
        assert own.workers[0].wait() == -signal.SIGKILL and own.workers[1].poll() is None
        history = (run_dir / "history.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]
    finally:
        if trainer and trainer.poll() is None:  # a hang fails the test, and ends here
            trainer.kill()
            trainer.communicate()
        own.stop()


@pytest.mark.slow
def test_an_unreachable_dispatcher_stops_the_run_in_one_line_within_its_bound(
        records, tmp_path):
    started = time.monotonic()
    trainer = _train(records, tmp_path / "run", "--data_service",
                     f"grpc://127.0.0.1:{_free_port()}", "--data_service_timeout", "3")
    out, err = trainer.communicate(timeout=300)
    result = subprocess.CompletedProcess(trainer.args, trainer.returncode, out, err)
    assert_one_line_error(result, "no tf.data service dispatcher answers at 127.0.0.1",
                          "within 3 s", "--data_service_timeout")
    assert time.monotonic() - started < 120  # TensorFlow's start, then 3 s: no hang


# --- Checks before any work.

def test_a_worker_without_a_dispatcher_stops_in_one_line():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "model.training.data_service", "worker", "--dispatcher",
         f"127.0.0.1:{_free_port()}", "--timeout", "2"], cwd=REPO, capture_output=True,
        text=True, timeout=60)
    assert_one_line_error(result, "no tf.data service dispatcher answers", "--timeout")
    assert 2 <= time.monotonic() - started < 30


def test_the_command_line_is_checked(tmp_path):
    base = ["--records", str(tmp_path), "--output_dir", str(tmp_path / "run")]
    config = resolve_config([*base, "--data_service", "grpc://dispatcher:5050"])
    assert (config["data_service"], config["data_service_timeout"]) == (
        "grpc://dispatcher:5050", 30)
    with pytest.raises(TrainError, match="--deterministic cannot be used with --data_service"):
        resolve_config([*base, "--data_service", "grpc://dispatcher:5050", "--deterministic"])
    for address in ("dispatcher", "grpc://dispatcher", "grpc://dispatcher:port",
                    "http://dispatcher:5050"):
        with pytest.raises(TrainError, match="grpc://HOST:PORT"):
            resolve_config([*base, "--data_service", address])
    with pytest.raises(TrainError, match="--data_service_timeout must be at least 1"):
        resolve_config([*base, "--data_service", "grpc://d:1", "--data_service_timeout", "0"])


def test_the_trainers_of_a_run_share_a_job_and_a_relaunch_starts_its_own(monkeypatch,
                                                                          tmp_path, records):
    run = {"output_dir": "/mnt/runs/k400", "records": str(records), "epochs": 30,
           "data_service_timeout": 30}
    moved = shutil.copytree(records, tmp_path / "mounted" / "elsewhere")
    other = write_records(tmp_path / "other", [dict(
        video_id="v_Grow_g01_c01", class_name="Grow", frames=np.zeros((4, 8, 8, 3), np.uint8))])
    cluster = {"worker": ["a:2222", "b:2222"]}
    trainers = [Cluster({"TF_CONFIG": json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": i}})})
                for i in (0, 1)]
    name = data_service.job_name(run, 8, 0, trainers[0])
    # Both trainers of the run, and what does not change what they compute, name one job.
    assert name == data_service.job_name(dict(run, data_service_timeout=60), 8, 0, trainers[1])
    assert name == data_service.job_name(dict(run, output_dir="/mnt/runs/k400/"), 8, 0,
                                         trainers[1])
    # The same records where another host mounts them.
    assert name == data_service.job_name(dict(run, records=str(moved)), 8, 0, trainers[1])
    # A relaunch from a later epoch, another batch, other settings, other records, another
    # folder, another cluster: each its own.
    others = {data_service.job_name(run, 8, 3, trainers[0]),
              data_service.job_name(run, 4, 0, trainers[0]),
              data_service.job_name(dict(run, epochs=10), 8, 0, trainers[0]),
              data_service.job_name(dict(run, records=str(other)), 8, 0, trainers[0]),
              data_service.job_name(dict(run, output_dir="/mnt/runs/x"), 8, 0, trainers[0]),
              data_service.job_name(run, 8, 0, Cluster({"TF_CONFIG": json.dumps({
                  "cluster": {"worker": ["c:2222", "d:2222"]},
                  "task": {"type": "worker", "index": 0}})}))}
    assert len(others | {name}) == 7
    # One machine: the same relative --output_dir from two folders, or on two hosts.
    relative = dict(run, output_dir="runs/k400")
    here, absolute = data_service.job_name(relative, 8, 0), data_service.job_name(run, 8, 0)
    assert absolute == data_service.job_name(run, 8, 0)  # stable within a launch
    monkeypatch.chdir(tmp_path)
    assert data_service.job_name(relative, 8, 0) != here
    monkeypatch.setattr(data_service.socket, "gethostname", lambda: "another-host")
    assert data_service.job_name(run, 8, 0) != absolute
    assert data_service.parse_address("grpc://10.0.0.2:5050") == ("10.0.0.2", 5050)
    assert data_service.parse_address("host:5050") == ("host", 5050)
