"""Precise BatchNorm statistics: every BatchNorm's population mean and variance, recomputed.

A BatchNorm layer's moving averages trail weights that still move: after a
few hundred steps of a high learning rate they describe a network that no
longer exists, and inference-mode accuracy swings from one epoch to the next.
PySlowFast's answer (`BN.USE_PRECISE_STATS`) is used here: with the current
weights and no weight update, run some training batches forward and set each
layer's statistics to the true mean and variance of its inputs over them.

    recompute = PreciseBatchNorm(model, train_dataset, num_batches=200)
    recompute()                  # or as a callback: before each validation
"""

import time

import keras
import numpy as np
import tensorflow as tf

from model.training.replicas import PerReplica


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested ones included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


class PreciseBatchNorm(keras.callbacks.Callback):
    """Sets every BatchNorm's moving statistics to their population values over training batches.

    Each batch runs forward in training mode (so each layer sees the inputs it
    sees in training) with momentum 0, so that a layer's moving statistics
    hold that batch's mean and variance; these are pooled on the host,
    weighted by batch size, into the mean and the variance of all the inputs
    (the law of total variance, not an average of batch variances). Weights are
    untouched. As a callback it runs before each validation, so that
    validation, `history.csv` and the checkpoints see the statistics the
    weights deserve.

    Args:
        model: the Keras model.
        dataset: training batches `(clips, labels)`; each recomputation reads
            its first `num_batches` anew, so that with a dataset that repeats
            its clips (`make_dataset(reshuffle=False)`), statistics depend only
            on the weights.
        num_batches: batches to pool per recomputation (0 turns it off).
        all_reduce: for workers that each read their own batches, a function
            that sums a list of arrays over the workers; the pooled statistics
            are then those of every worker's batches, the same on each.
            Defaults to None: this process's batches alone.
        strategy: the one-machine strategy the model was built under; each
            batch is split over its replicas, which run in parallel, and their
            moments are pooled on the host. Defaults to None: one device.
    """

    def __init__(self, model, dataset, num_batches, all_reduce=None, strategy=None):
        super().__init__()
        self.network = model
        self.dataset = dataset
        self.num_batches = num_batches
        self.all_reduce = all_reduce
        self.strategy = strategy
        self.layers = batchnorm_layers(model)
        self._forward = None
        self.fresh_at = None  # optimizer step at the last recomputation
        self.seconds = []

    def on_test_begin(self, logs=None):
        self()

    def _step(self):
        optimizer = getattr(self.network, "optimizer", None)
        return None if optimizer is None else int(optimizer.iterations.numpy())

    def __call__(self):
        """Recomputes the statistics unless there is nothing to do; returns the seconds spent."""
        if not self.layers or not self.num_batches:
            return 0.0
        step = self._step()
        if step is not None and step == self.fresh_at:
            return 0.0  # the weights have not moved since the last recomputation
        started = time.perf_counter()
        batches = iter(self.dataset)
        saved = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 0.0
            # A diverged run's NaN statistics would poison `NaN * 0`.
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
        if self._forward is None:
            self._forward = PerReplica(self.strategy, self._batch_statistics)
        try:
            totals, count = None, 0.0
            for _ in range(self.num_batches):
                for size, stats in self._forward(next(batches)[0]):
                    size = float(size)
                    moments = [(size * m.numpy().astype(np.float64),
                                size * (v.numpy().astype(np.float64)
                                        + np.square(m.numpy().astype(np.float64))))
                               for m, v in stats]
                    totals = moments if totals is None else [
                        (a + m, b + s) for (a, b), (m, s) in zip(totals, moments)]
                    count += size
        finally:
            for layer, momentum in zip(self.layers, saved):
                layer.momentum = momentum
        if self.all_reduce:
            summed = self.all_reduce([np.array([count])] + [a for pair in totals for a in pair])
            count = float(summed[0][0])
            totals = list(zip(summed[1::2], summed[2::2]))
        for layer, (mean_sum, square_sum) in zip(self.layers, totals):
            mean = mean_sum / count
            variance = np.maximum(square_sum / count - np.square(mean), 0.0)
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(variance.astype(np.float32))
        self.fresh_at = step
        seconds = time.perf_counter() - started
        self.seconds.append(seconds)
        return seconds

    def _batch_statistics(self, clips):
        """`(clips, [(mean, variance)] of each layer's inputs)`; on one replica's slice.

        With momentum 0 a layer's moving statistics are its batch's; each
        replica reads its own copy before any cross-replica assignment.
        """
        self.network(clips, training=True)
        return tf.shape(clips)[0], [(tf.identity(layer.moving_mean),
                                     tf.identity(layer.moving_variance))
                                    for layer in self.layers]
