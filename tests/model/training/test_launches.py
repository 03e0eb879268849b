"""model/training/launches.py: each launch's epochs, clips and seconds, added up across resumes."""

import json

from model.training import launches
from model.training.launches import LaunchLog


class Clock:
    """A stand-in for `time.perf_counter` that moves only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def at(self, now):
        self.now = float(now)
        return self


def run_epoch(log, clock, epoch, batch_times, end=None):
    clock.at(batch_times[0] - 1)
    log.on_epoch_begin(epoch)
    for step, now in enumerate(batch_times):
        clock.at(now)
        log.on_train_batch_end(step)
    if end is not None:
        clock.at(end)
        log.on_epoch_end(epoch)


def test_a_killed_launch_and_its_resume_add_up(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(launches.time, "perf_counter", clock)
    monkeypatch.setattr(launches, "SAVE_SECONDS", 0)  # save after every step
    path = str(tmp_path / "launches.json")

    # The first launch: one epoch of 3 steps, then 2 steps of the next, then a kill.
    first = LaunchLog(path, clips_per_step=8)
    first.on_train_begin()
    run_epoch(first, clock, 0, [2, 3, 4], end=5)
    run_epoch(first, clock, 1, [7, 8])  # killed at 8 s: no epoch end, no train end
    saved = launches.read_launches(path)
    assert saved == [dict(saved[0], first_epoch=0, last_epoch=1, steps=5, clips=40,
                          training_seconds=3.0 + 2.0, seconds=8.0)]

    # The resumed launch repeats epoch 1 whole, on twice the replicas.
    clock.at(100)
    second = LaunchLog(path, clips_per_step=16)
    second.on_train_begin()
    run_epoch(second, clock, 1, [102, 103, 104], end=105)
    clock.at(106)
    second.on_train_end()

    saved = launches.read_launches(path)
    assert [launch["first_epoch"] for launch in saved] == [0, 1]
    assert saved[1]["seconds"] == 6.0 and saved[1]["clips"] == 48
    assert launches.totals(path) == {
        "launches": 2, "epochs": 2, "seconds_total": 14.0, "training_seconds_total": 8.0,
        "clips_trained": 40 + 48, "clips_per_second": round(88 / 8.0, 2)}
    json.loads(open(path).read())  # whole JSON: written by rename


def test_no_launches_yet(tmp_path):
    assert launches.totals(str(tmp_path / "launches.json")) == {
        "launches": 0, "epochs": 0, "seconds_total": 0, "training_seconds_total": 0,
        "clips_trained": 0, "clips_per_second": None}
