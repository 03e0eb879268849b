"""Progress of local jobs: counts fed by worker processes, a tqdm line or log lines."""

import io
import multiprocessing
import re
import time

import pytest

from conftest import SYNTHETIC, run_cli
from preprocess import progress


def _tick_many(path, count):
    for _ in range(count):
        progress.tick(path)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_workers_feed_the_log_lines():
    stream = io.StringIO()
    with progress.Progress(20, stream=stream, log_every=0.05) as watch:
        workers = [multiprocessing.Process(target=_tick_many, args=(watch.path, 5))
                   for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        time.sleep(0.3)  # a log line after the last video, before the end
    lines = stream.getvalue().splitlines()
    assert lines and lines[-1].startswith("preprocess: 15/20 videos, ")
    counts = [line.split(",")[0] for line in lines]
    assert len(set(counts)) == len(counts), lines  # a count is said once, the last too
    assert re.search(r"\d+\.\d\d videos/s, ETA \d+ s$", lines[-1]), lines[-1]


def test_a_terminal_gets_one_tqdm_line():
    stream = _Terminal()
    with progress.Progress(4, stream=stream, poll=0.01) as watch:
        _tick_many(watch.path, 4)
    text = stream.getvalue()
    assert "\n" not in text.strip() and "4/4" in text and "preprocess" in text


@pytest.mark.slow
def test_a_job_reports_the_videos_its_workers_finished(synthetic_dir, tmp_path):
    result = run_cli("preprocess", "--source", str(synthetic_dir), "--output_dir",
                     str(tmp_path / "out"), "--image_size", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    total = 8 * SYNTHETIC["groups"] * SYNTHETIC["clips_per_group"]
    lines = [line for line in result.stderr.splitlines() if "videos/s, ETA" in line]
    assert lines[-1].startswith(f"preprocess: {total}/{total} videos"), lines
