"""Each launch of a run, kept in its folder, so a resumed run's time and clips add up.

A run that is killed and launched again trains in several launches, and
each launch's fit knows only its own. `LaunchLog`, a Keras callback, writes
every launch's epochs, steps, clips and seconds to the run folder's
`launches.json` after each epoch (and every `SAVE_SECONDS` within one, so a
kill mid-epoch loses little); `totals` sums them for `metrics.json`.
"""

import json
import os
import time

import keras

from model.training import run_dir

SAVE_SECONDS = 30  # within an epoch, how often the launch in progress is saved


class LaunchLog(keras.callbacks.Callback):
    """Appends this launch to `launches.json` and keeps it up to date.

    A launch's `seconds` run from the start of its fit (this callback is
    made as the fit starts) to its last save: training, precise BatchNorm,
    validation and checkpoints; its `training_seconds` only from each
    epoch's start to its last training step, the time its `clips` took.

    Args:
        path: the run folder's `launches.json` (`RunDir.launches`).
        clips_per_step: clips in one step over all replicas and workers (the
            global batch).
    """

    def __init__(self, path, clips_per_step):
        super().__init__()
        self.path = path
        self.clips_per_step = clips_per_step
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.launches = read_launches(self.path)
        self.launch = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "clips_per_step": self.clips_per_step, "first_epoch": None,
                       "last_epoch": None, "steps": 0, "clips": 0,
                       "training_seconds": 0.0, "seconds": 0.0}
        self.launches.append(self.launch)
        self.saved = time.perf_counter()
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.launch["first_epoch"] is None:
            self.launch["first_epoch"] = epoch  # epochs done before this launch
        self.epoch_started = self.last_step = time.perf_counter()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.last_step = time.perf_counter()
        if self.last_step - self.saved >= SAVE_SECONDS:
            self._save(self._with_epoch_so_far())

    def on_epoch_end(self, epoch, logs=None):
        self.launch.update(self._with_epoch_so_far(), last_epoch=epoch + 1)
        self.steps = 0
        self._save(self.launch)

    def on_train_end(self, logs=None):
        self.launch.update(self._with_epoch_so_far())  # the last checkpoints' time too
        self._save(self.launch)

    def _with_epoch_so_far(self):
        """The launch with the steps of the epoch in progress added."""
        return {**self.launch, "steps": self.launch["steps"] + self.steps,
                "clips": self.launch["clips"] + self.steps * self.clips_per_step,
                "training_seconds": self.launch["training_seconds"]
                + (self.last_step - self.epoch_started if self.steps else 0.0),
                "seconds": time.perf_counter() - self.started}

    def _save(self, launch):
        self.saved = time.perf_counter()
        rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in launch.items()}
        launches = json.dumps(self.launches[:-1] + [rounded], indent=2)
        run_dir.write_text(self.path, launches)  # whole: a kill may come at any time


def read_launches(path):
    """The launches `LaunchLog` saved (oldest first), or [] when there are none yet."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return json.load(handle)


def totals(path):
    """What `metrics.json` says of all the run's launches.

    Returns:
        `launches`, the `epochs` the run has completed, `seconds_total` (every
        launch's wall time), `training_seconds_total`, `clips_trained` and
        `clips_per_second` (clips trained / seconds in training steps; None
        before any step).
    """
    launches = read_launches(path)
    training_seconds = sum(launch["training_seconds"] for launch in launches)
    clips = sum(launch["clips"] for launch in launches)
    epochs = [launch["last_epoch"] for launch in launches if launch["last_epoch"]]
    return {"launches": len(launches), "epochs": max(epochs, default=0),
            "seconds_total": round(sum(launch["seconds"] for launch in launches), 1),
            "training_seconds_total": round(training_seconds, 1), "clips_trained": clips,
            "clips_per_second": round(clips / training_seconds, 2) if training_seconds
            else None}
