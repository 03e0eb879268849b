"""Ends a worker that cannot join its cluster in time, from outside the worker.

Joining a MultiWorkerMirroredStrategy cluster blocks inside TensorFlow, holding
the interpreter, until every peer is up; no timeout of TensorFlow's covers it,
and neither a Python thread nor a signal handler gets to run. So the worker
starts this small process (no TensorFlow here), which waits on a pipe: the
worker closing it (done, or dead) ends the watch; a timeout prints which
peers cannot be reached and kills the worker.

    python -m model.training.watchdog PID SECONDS NAME PEERS_JSON
"""

import json
import os
import select
import signal
import socket
import sys


def unreachable(peers):
    """The `name (address)` of each peer that accepts no connection now."""
    missing = []
    for name, address in peers.items():
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except (OSError, ValueError):
            missing.append(f"{name} ({address})")
    return missing


def main(argv=None):
    pid, seconds, name, peers = (argv or sys.argv[1:])[:4]
    ready, _, _ = select.select([sys.stdin], [], [], float(seconds))
    if ready:  # the worker joined, or ended: either way, nothing to do
        return 0
    missing = unreachable(json.loads(peers))
    print(f"error: {name} waited {float(seconds):.0f} s for its peers "
          + (f"and cannot reach {', '.join(missing)}" if missing else "to join")
          + "; start the same command with its TF_CONFIG on every worker, or raise "
          "--collective_timeout", file=sys.stderr, flush=True)
    os.kill(int(pid), signal.SIGKILL)
    return 2


if __name__ == "__main__":
    sys.exit(main())
