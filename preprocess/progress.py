"""Progress of a local preprocessing job: videos done of all, videos per second, ETA.

Workers append one byte per finished video to a file the launcher watches, so
the count comes from the workers themselves in every mode of the local
runner (one process, threads, or processes). The launcher shows one updating
tqdm line on a terminal, or a log line every few seconds when output goes to
a file. Remote runners (Dataflow, Flink, Spark) have their own UI; nothing is
set up for them.
"""

import os
import sys
import tempfile
import threading
import time


def tick(path):
    """Counts one finished video (called by a worker)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


class Progress:
    """Watches the count file while the job runs; `path` is what workers tick.

    Args:
        total: videos the job will finish.
        stream: where to report; a terminal gets a tqdm line.
        log_every: seconds between log lines when `stream` is not a terminal.
    """

    def __init__(self, total, *, stream=None, log_every=5.0, poll=0.5):
        self.total = total
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self.poll = poll
        fd, self.path = tempfile.mkstemp(prefix="twoplusone-progress-")
        os.close(fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def done(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def __enter__(self):
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        os.remove(self.path)

    def line(self):
        done = self.done()
        seconds = time.perf_counter() - self._started
        rate = done / seconds if seconds > 0 else 0.0
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "unknown"
        return f"preprocess: {done}/{self.total} videos, {rate:.2f} videos/s, ETA {eta}"

    def _watch(self):
        if self.stream.isatty():
            from tqdm import tqdm
            with tqdm(total=self.total, unit="video", desc="preprocess",
                      file=self.stream, dynamic_ncols=True) as bar:
                while not self._stop.wait(self.poll):
                    bar.update(self.done() - bar.n)
                bar.update(self.done() - bar.n)
            return
        last = -1
        while not self._stop.wait(self.log_every):
            if self.done() != last:
                last = self.done()
                print(self.line(), file=self.stream, flush=True)
        if self.done() != last:  # where the job ended, unless just said
            print(self.line(), file=self.stream, flush=True)
