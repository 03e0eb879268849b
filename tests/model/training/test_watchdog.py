"""The watchdog: a worker that cannot join in time is killed with a line naming its lost peers."""

import json
import socket
import subprocess
import sys

from conftest import REPO
from model.training import watchdog


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_names_the_peers_that_accept_no_connection():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = f"127.0.0.1:{listening.getsockname()[1]}"
        down = f"127.0.0.1:{_closed_port()}"
        assert watchdog.unreachable({"worker 1": up, "worker 2": down, "chief 0": "nowhere"}) \
            == [f"worker 2 ({down})", "chief 0 (nowhere)"]


def _watch(worker, seconds, peers):
    return subprocess.Popen(
        [sys.executable, "-m", "model.training.watchdog", str(worker.pid), str(seconds),
         "worker 0", json.dumps(peers)],
        cwd=REPO, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_still_waiting_at_the_deadline_is_killed_with_the_reason():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    down = f"127.0.0.1:{_closed_port()}"
    watch = _watch(worker, 0.3, {"worker 1": down})
    assert watch.wait(timeout=60) == 2  # its stdin, the worker's pipe, still open
    err = watch.stderr.read()
    watch.stdin.close()
    assert worker.wait(timeout=10) == -9
    assert err.strip() == (f"error: worker 0 waited 0 s for its peers and cannot reach "
                           f"worker 1 ({down}); start the same command with its TF_CONFIG "
                           "on every worker, or raise --collective_timeout")


def test_a_worker_that_joined_closes_the_pipe_and_is_left_alone():
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watch = _watch(worker, 30, {})
        _, err = watch.communicate(timeout=60)  # closes the pipe, as the worker does
        assert watch.returncode == 0 and err == ""
        assert worker.poll() is None  # still running
    finally:
        worker.kill()
        worker.wait()
