"""A host batch through every local replica: split in order, run in parallel, gathered back.

Under `MirroredStrategy`, Keras's `predict_on_batch` feeds the whole batch to
every replica, and a plain call runs it on the first device alone, which on
several GPUs is slow and may not fit its memory. Evaluation and precise
BatchNorm use this instead: each replica gets a contiguous slice of the batch,
and the per-replica results come back in replica order, so concatenating them
keeps the batch's order. A batch must split evenly: a replica with no clip
would fail in BatchNorm, so callers pad (`model.inference.evaluation.logits_function`).

    forward = PerReplica(strategy, lambda clips: model(clips, training=False))
    pieces = forward(clips)   # one result per replica, in batch order
"""

import tensorflow as tf


class PerReplica:
    """Runs `fn` on every local replica of `strategy`, each on its slice of a batch.

    Args:
        strategy: a `tf.distribute` strategy, or None for one device.
        fn: a function of one batch slice, run in replica context; it may
            return any nest of tensors.
    """

    def __init__(self, strategy, fn):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if strategy else 1
        if self.replicas == 1:
            self._run = tf.function(fn, reduce_retracing=True)
        else:
            self._run = tf.function(lambda values: strategy.run(fn, args=(values,)),
                                    reduce_retracing=True)

    def __call__(self, batch):
        """`fn`'s results, one per replica (or one in all), in the batch's order."""
        if self.replicas == 1:
            return [self._run(batch)]
        if int(batch.shape[0]) % self.replicas:
            raise ValueError(f"a batch of {batch.shape[0]} does not split over "
                             f"{self.replicas} replicas; pad it to a multiple")
        size = int(batch.shape[0]) // self.replicas
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: batch[context.replica_id_in_sync_group * size:
                                  (context.replica_id_in_sync_group + 1) * size])
        outputs = self._run(values)
        leaves = [self.strategy.experimental_local_results(leaf)
                  for leaf in tf.nest.flatten(outputs)]
        return [tf.nest.pack_sequence_as(outputs, [leaf[i] for leaf in leaves])
                for i in range(self.replicas)]
