"""Training parts the trainer wires together: strategy, optimizer, callbacks, resume state.

Everything here is a well-kept TensorFlow or Keras feature set up for our
runs: `tf.distribute` strategies, Keras schedules and optimizers, and Keras
callbacks (`BackupAndRestore`, `ModelCheckpoint`, `TensorBoard`, `CSVLogger`).
The two that save write each file under a temporary name and rename it over
the old one, so a save cut short by a full disk or a kill is never read back.
"""

import contextlib
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from model import ACCURACY, STRATEGIES, TOP_K_ACCURACY, VAL_ACCURACY, held_stderr, top_k
from model.training.run_dir import partial_path
from preprocess.errors import UserError, no_room_message


class NaNLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class UnsupportedStrategyError(UserError):
    """A distribution strategy this Keras cannot train with."""


class SaveError(UserError):
    """A checkpoint or backup could not be written (a full disk, a file-size limit)."""


def no_room_error(path, reason):
    """The one line for a write of the run refused for want of room."""
    return SaveError(no_room_message(path, reason, "it resumes from the last complete backup"))


def _save_error(path, error):
    # h5py's own wording buries the cause; the errno names it.
    reason = (os.strerror(error.errno) if getattr(error, "errno", None)
              else (str(error).strip() or type(error).__name__).splitlines()[0][:200])
    return no_room_error(path, reason)


def _renamed_into_place(finals):
    """Renames each `partial_path(final)` that was written over its `final`."""
    for final in finals:
        if os.path.exists(partial_path(final)):
            os.replace(partial_path(final), final)


# Files this process failed to write for want of room. HDF5 keeps such a file
# open and flushes it again as the process exits, which fails the same way and
# crashes it; so a command ends at once after any of them (train.exit_process).
FAILED_SAVES = []


@contextlib.contextmanager
def _saving(finals):
    """Runs a save into `partial_path`s: renamed into place whole, or removed and refused.

    A failed write is one `SaveError`: h5py also reports it from the
    finalizers of every object of the file it could not write, straight to
    stderr ("Exception ignored in ..."), and those reports are dropped. What
    a save that works writes to stderr is passed on.
    """
    failure = None
    with held_stderr() as held:
        try:
            yield
        except OSError as error:
            failure = _save_error(finals[0], error)
    if failure:
        FAILED_SAVES.append(finals[0])
        for final in finals:
            if os.path.exists(partial_path(final)):
                os.remove(partial_path(final))
        raise failure
    sys.stderr.write(held.text())
    _renamed_into_place(finals)


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's `ModelCheckpoint`, whose file is whole or the previous one."""

    def _save_model(self, epoch, batch, logs):
        # Keras 3's one hook that saves: pointed at a temporary name, then renamed.
        final, self.filepath = self.filepath, partial_path(self.filepath)
        try:
            with _saving([final]):
                super()._save_model(epoch, batch, logs)
        finally:
            self.filepath = final


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, whose weights and epoch are whole or the previous ones.

    The weights are renamed into place before the epoch that names them, so a
    kill between the two renames repeats an epoch rather than skipping one.
    """

    def _save_model(self):
        finals = [self._weights_path, self._training_metadata_path]
        self._weights_path, self._training_metadata_path = map(partial_path, finals)
        try:
            with _saving(finals):
                super()._save_model()
        finally:
            self._weights_path, self._training_metadata_path = finals


def make_strategy(name):
    """TensorFlow's own distribution engines on one machine, chosen by name.

    `auto` is `MirroredStrategy` over all local GPUs when there are several,
    else one device. `mirrored` on a machine without GPUs mirrors over its
    logical CPU devices (how tests stand in for several GPUs). `multi_worker`
    is `model.training.multi_worker`'s: it needs the cluster and its own training step.
    """
    if name == "multi_worker":
        raise UnsupportedStrategyError("multi_worker is made by model.training.multi_worker, "
                                       "which also trains with it")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def learning_rate(base, schedule, epochs, steps_per_epoch, warmup_epochs):
    """A constant rate, or Keras's cosine decay with linear warm-up."""
    if schedule == "constant":
        return base
    warmup = int(warmup_epochs * steps_per_epoch)
    total = max(1, epochs * steps_per_epoch - warmup)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else base, decay_steps=total,
        warmup_target=base if warmup else None, warmup_steps=warmup)


def make_optimizer(name, rate, weight_decay=0.0):
    """Adam (AdamW when decaying weights) or SGD with Nesterov momentum."""
    if name == "adam":
        if weight_decay:
            return keras.optimizers.AdamW(rate, weight_decay=weight_decay)
        return keras.optimizers.Adam(rate)
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay or None)
    raise ValueError(f"unknown optimizer {name!r}; choose adam or sgd")


def compile_model(network, *, optimizer, learning_rate, weight_decay, label_smoothing,
                  jit_compile):
    """Compiles with our loss and the accuracy metrics; call under the strategy's scope.

    `learning_rate` is a float or a Keras schedule.
    """
    num_classes = network.output_shape[-1]
    network.compile(
        optimizer=make_optimizer(optimizer, learning_rate, weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name=ACCURACY),
                 keras.metrics.TopKCategoricalAccuracy(k=top_k(num_classes),
                                                       name=TOP_K_ACCURACY)],
        jit_compile=jit_compile)
    return network


class StopOnNaN(keras.callbacks.Callback):
    """Raises `NaNLossError` at the first non-finite loss, before any checkpoint sees it.

    Raising (rather than `stop_training`) skips the epoch-end callbacks, so the
    last good checkpoint and backup stay as they were.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise NaNLossError(f"the loss became {float(loss)} in epoch {self.epoch + 1}")


def make_callbacks(run):
    """Resume backups, last and best checkpoints, TensorBoard and a CSV history.

    Args:
        run: the `model.training.run_dir.RunDir` to write into.
    """
    return [
        StopOnNaN(),
        # The epoch's history row before its backup: a kill between the two leaves
        # a row past the backup, which a resumed run drops (RunDir.repair_history)
        # and writes again, rather than a backup past the last row, which would
        # leave the epoch out of the history for good.
        keras.callbacks.CSVLogger(run.history, append=True),
        # Each save is renamed into place whole, so no second copy is needed.
        BackupAndRestore(run.backup, double_checkpoint=False, delete_checkpoint=False),
        ModelCheckpoint(run.last_checkpoint),
        # A resumed run keeps its best so far: Keras's callback starts from
        # nothing on every launch, and would overwrite best.keras with worse.
        ModelCheckpoint(run.best_checkpoint, monitor=VAL_ACCURACY, mode="max",
                        save_best_only=True, initial_value_threshold=best_so_far(run.history)),
        keras.callbacks.TensorBoard(run.logs),
    ]


def best_so_far(history_csv):
    """The highest validation accuracy `history.csv` holds, or None (none yet)."""
    from model.inference.evaluation import read_history
    if not os.path.exists(history_csv):
        return None
    scores = [float(row[VAL_ACCURACY]) for row in read_history(history_csv).values()
              if row.get(VAL_ACCURACY) not in (None, "")]
    return max(scores, default=None)


def steps_for(num_videos, batch_size):
    return max(1, math.ceil(num_videos / batch_size))
