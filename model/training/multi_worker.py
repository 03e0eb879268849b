"""Training across machines: TensorFlow's MultiWorkerMirroredStrategy with our own step.

Keras 3's `fit` cannot run under MultiWorkerMirroredStrategy with two or more
workers (keras-team/keras#20585). So there, and only there, the trainer
drives the epochs itself, as TF Model Garden's Orbit trainers do: the step
runs under `strategy.run` in a `tf.function`; Keras's TensorFlow optimizer
all-reduces the gradients through the replica context; Keras's losses already
divide by the replicas in sync, so their sum over replicas is the global
mean. Everything else is the single-machine run's own: the compiled
optimizer, schedule and loss, the precision policy, and Keras's callbacks
(checkpoints, resume backups, TensorBoard, CSV history), called here as
`fit` would call them.

Workers find each other through `TF_CONFIG`. The chief (task `chief`, or
`worker` 0 without one) writes the run folder; the other workers write what
the protocol needs into temporary folders and remove them. A worker that
cannot reach its peers stops with a message instead of hanging: a watchdog
process while joining, TensorFlow's peer health checks after.
"""

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from model import ACCURACY, TOP_K_ACCURACY, VAL_ACCURACY, VAL_TOP_K_ACCURACY, top_k

# Errors by which TensorFlow's collectives report a peer that died or left.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


@contextlib.contextmanager
def deadline(seconds, cluster):
    """Ends this process with a one-line error if the block has not finished in time.

    The watch runs in another process (`model.training.watchdog`): while TensorFlow
    waits for peers, no Python code of this one runs.
    """
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "model.training.watchdog", str(os.getpid()), str(seconds),
         cluster.name, json.dumps(cluster.peers())],
        # From the folder that holds `model/`, so that `-m` finds it uninstalled too.
        stdin=subprocess.PIPE, cwd=pathlib.Path(__file__).resolve().parents[2])
    try:
        yield
    finally:
        watchdog.stdin.close()  # tells it we are through
        watchdog.wait()


def make_strategy():
    """MultiWorkerMirroredStrategy with TensorFlow's own peer health checks.

    No collective timeout: TensorFlow makes a thread per collective for it
    and documents it as a debugging aid. A peer that dies mid-run is found by
    the strategy's health check (a ping every 30 s), which aborts the
    collectives with an error that `PEER_ERRORS` names; joining is watched by
    `deadline`.
    """
    return tf.distribute.MultiWorkerMirroredStrategy()


@contextlib.contextmanager
def worker_folder(run, cluster):
    """Where this worker writes: the run folder on the chief, else a temporary one.

    A temporary folder starts with a copy of the chief's resume backup, so
    that every worker restores the same epoch; it is removed at the end.
    """
    from model.training.run_dir import RunDir
    if cluster.is_chief:
        yield run
        return
    path = tempfile.mkdtemp(prefix=f"twoplusone-{cluster.task_type}{cluster.task_id}-")
    try:
        own = RunDir(path)
        if os.path.isdir(run.backup):
            shutil.copytree(run.backup, own.backup)
        yield own
    finally:
        shutil.rmtree(path, ignore_errors=True)


class CustomLoop:
    """Trains a compiled Keras model with a step under `strategy.run`.

    Args:
        network: a model compiled under `strategy.scope()`.
        strategy: the distribution strategy.
        jit_compile: compile each replica's forward and backward pass with XLA.
    """

    def __init__(self, network, strategy, *, jit_compile=False):
        self.network = network
        self.strategy = strategy
        self.top_k = top_k(network.output_shape[-1])
        self._gradients = tf.function(self._replica_gradients, jit_compile=bool(jit_compile))
        self._step = tf.function(self._distributed_step)
        self._sync = tf.function(self._distributed_sync)
        self._sum = tf.function(self._distributed_sum)

    def _replica_gradients(self, clips, labels):
        network = self.network
        with tf.GradientTape() as tape:
            logits = network(clips, training=True)
            # Already divided by the replicas in sync: the sum over replicas
            # is the mean over the global batch.
            loss = network.loss(labels, logits)
            if network.losses:
                loss += tf.add_n(network.losses) / self.strategy.num_replicas_in_sync
            scaled = network.optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled, network.trainable_variables), logits

    def _replica_step(self, clips, labels):
        loss, gradients, logits = self._gradients(clips, labels)
        self.network.optimizer.apply(gradients, self.network.trainable_variables)
        # One vector, so that the step's figures cross the workers in one collective.
        return tf.stack([tf.cast(loss, tf.float32),
                         *hits(labels, tf.cast(logits, tf.float32), self.top_k),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    def _distributed_step(self, iterator):
        values = self.strategy.run(self._replica_step, args=next(iterator))
        return self.strategy.reduce("SUM", values, axis=None)

    def _distributed_sync(self):
        floats = [v for v in self.network.non_trainable_variables if "float" in str(v.dtype)]
        if not floats:
            return

        def replica():
            context = tf.distribute.get_replica_context()
            return context.all_reduce("MEAN", [tf.identity(variable.value) for variable in floats])

        means = self.strategy.run(replica)
        # Every worker holds the same means now; each sets its own copies.
        for variable, mean in zip(floats, means):
            variable.assign(self.strategy.experimental_local_results(mean)[0])

    def _distributed_sum(self, values):
        def replica():
            return tf.distribute.get_replica_context().all_reduce(
                "SUM", [tf.identity(value) for value in values])
        return [self.strategy.experimental_local_results(value)[0]
                for value in self.strategy.run(replica)]

    def all_reduce_sum(self, arrays):
        """Sums arrays over the workers (each counted once per local replica, which
        cancels in any ratio of two sums)."""
        return [value.numpy() for value in self._sum([tf.constant(a) for a in arrays])]

    def fit(self, dataset, *, epochs, steps, initial_epoch, callbacks, validate=None,
            precise=None, report=print):
        """Runs epochs `initial_epoch..epochs-1` of `steps` steps; returns the epochs run.

        Args:
            dataset: a distributed dataset that repeats.
            callbacks: a `keras.callbacks.CallbackList` bound to the model.
            validate: called after each epoch; returns `val_*` logs, or None.
            precise: a `PreciseBatchNorm` that pools over the workers, run on
                every worker after each epoch, before validation.
            report: prints a line per epoch.
        """
        iterator = iter(dataset)
        with self.strategy.scope():  # a resume backup builds the optimizer's variables
            callbacks.on_train_begin()
        ran = 0
        for epoch in range(initial_epoch, epochs):
            started = time.time()
            callbacks.on_epoch_begin(epoch)
            totals = np.zeros(4)
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                values = self._step(iterator).numpy().astype(np.float64)
                totals += values
                callbacks.on_train_batch_end(step, {"loss": values[0]})
            # Each worker's BatchNorm averages saw only its own batches; their
            # mean is what the checkpoint and every worker keep.
            self._sync()
            if precise:
                precise()
            loss, correct, in_top, count = totals
            logs = {"loss": loss / steps, ACCURACY: correct / count,
                    TOP_K_ACCURACY: in_top / count}
            logs.update(validate() if validate else {})
            callbacks.on_epoch_end(epoch, logs)
            ran += 1
            report(f"epoch {epoch + 1}/{epochs}: "
                   + ", ".join(f"{k} {v:.4f}" for k, v in logs_seen(self.network, logs).items())
                   + f" ({time.time() - started:.1f} s)")
            if self.network.stop_training:
                break
        callbacks.on_train_end()
        return ran


def logs_seen(network, logs):
    """An epoch's logs as its callbacks left them: with what they added (the input wait).

    Keras's `CallbackList` hands its callbacks a copy of the logs; its
    `History`, last in the list, keeps that copy.
    """
    history = getattr(network, "history", None)
    if history is None or not getattr(history, "history", None):
        return logs
    return {**logs, **{key: values[-1] for key, values in history.history.items()}}


def hits(labels, logits, k):
    """How many of a batch's one-hot `labels` are the top class, and among the top `k`."""
    truth = tf.argmax(labels, axis=-1)
    correct = tf.equal(tf.argmax(logits, axis=-1), truth)
    return (tf.reduce_sum(tf.cast(correct, tf.float32)),
            tf.reduce_sum(tf.cast(tf.math.in_top_k(truth, logits, k), tf.float32)))


def weights_digest(network):
    """A sha256 of every weight, for workers to show they ended in agreement."""
    digest = hashlib.sha256()
    for weight in network.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def validation(network, dataset):
    """A function that scores `network` on a finite dataset, on this worker alone."""
    predict = tf.function(lambda clips: tf.cast(network(clips, training=False), tf.float32))

    def validate():
        total = correct = in_top = count = 0.0
        for clips, labels in dataset:
            logits = predict(clips)
            batch = float(tf.shape(labels)[0])
            total += float(network.loss(labels, logits)) * batch  # the compiled loss
            right, in_top_k = hits(labels, logits, top_k(logits.shape[-1]))
            correct += float(right)
            in_top += float(in_top_k)
            count += batch
        return {"val_loss": total / count, VAL_ACCURACY: correct / count,
                VAL_TOP_K_ACCURACY: in_top / count}

    return validate
