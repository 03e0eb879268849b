"""The datasets a training run reads: its training clips, precise BatchNorm's, validation's.

`make_datasets` cuts them from the records with the run's `RunClips`
(`preprocess.reader`), labels them one-hot for the loss and hands them to the
fit (`model.training.fit`). On one machine Keras's `fit` spreads global batches
over the replicas; across machines each worker reads its own shards. With
`--data_service` a tf.data service's workers cut the training clips
(`model.training.data_service`); everything else is read here. The training
batches end in a probe that notes when each left the pipeline
(`model.training.input_wait`). Importing this module is light: TensorFlow
loads when a dataset is made.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What a fit reads.

    Args:
        training: training batches, repeated: global batches on one machine;
            across machines a distributed dataset whose workers read their own
            shards.
        statistics: precise BatchNorm's batches, the same clips on every pass.
        validation: the validation split's batches, or None without a
            validation split or on a worker that does not validate.
        arrivals: a `model.training.input_wait.Arrivals`: when each training
            batch left its pipeline.
    """

    training: object
    statistics: object
    validation: object
    arrivals: object = None


def make_datasets(plan, strategy):
    """The datasets of a run (a `model.training.fit.Plan`) under its strategy.

    With `--data_service`, its dispatcher must answer within
    `--data_service_timeout` seconds, or a `DataServiceError` says so.
    """
    from model.training import data_service
    from model.training.input_wait import Arrivals
    cluster = plan.cluster
    arrivals = Arrivals()
    if plan.config["data_service"]:
        data_service.wait_for_dispatcher(plan.config["data_service"],
                                         plan.config["data_service_timeout"])
    if cluster is None:
        return Datasets(
            statistics=training_batches(plan, plan.global_batch, for_statistics=True),
            training=training_batches(plan, plan.global_batch, arrivals=arrivals),
            validation=validation_batches(plan, plan.global_batch), arrivals=arrivals)
    return Datasets(
        # One input pipeline per worker, each of its own shards (or all of them
        # sharing one service job), its batches split over the worker's replicas.
        training=strategy.distribute_datasets_from_function(lambda context: training_batches(
            plan, context.get_per_replica_batch_size(plan.global_batch),
            input_shard=(context.input_pipeline_id, context.num_input_pipelines),
            arrivals=arrivals)),
        # Each worker's statistics of its own shards, pooled by the loop after each epoch.
        statistics=training_batches(plan, plan.config["batch_size"],
                                    (cluster.index, cluster.num_workers), for_statistics=True),
        # The chief alone validates: the other workers' checkpoints are temporary.
        validation=validation_batches(plan, plan.global_batch) if cluster.is_chief else None,
        arrivals=arrivals)


def training_batches(plan, batch_size, input_shard=None, for_statistics=False,
                     arrivals=None):
    """Training clips with one-hot labels, repeated.

    With `for_statistics`, the clips of precise BatchNorm: the same clips on
    every pass, whatever the threads do, so that statistics depend only on the
    seed and the weights; always read here. Otherwise, with `--data_service`,
    the service's workers cut the batches, and `input_shard` is the service's
    to decide. `arrivals` (an `input_wait.Arrivals`) notes when each batch
    leaves, as the last stage.
    """
    import tensorflow as tf

    from model.training import data_service
    from preprocess import reader
    config = plan.config
    service = None if for_statistics else config["data_service"]
    dataset = reader.make_dataset(
        config["records"], config["train_split"], plan.specs.training, batch_size=batch_size,
        repeat=True, seed=config["seed"], reshuffle=not for_statistics,
        # Statistics read their batches anew each time: a small buffer fills fast.
        shuffle_buffer=64 if for_statistics else 256,
        deterministic=True if for_statistics else (config["deterministic"] or None),
        input_shard=None if service else input_shard, skip_corrupt=config["skip_corrupt"],
        # A service cannot ship the ranged read (a Python function) to its workers;
        # whole records are fair too, every shard being a random sample of its split.
        ranged=False if service else None)
    if service:  # the trainers of a run share one job: each batch goes to one of them
        dataset = data_service.distribute(dataset, service, data_service.job_name(
            config, batch_size, plan.done, plan.cluster))
    dataset = dataset.map(lambda clips, labels: (clips, tf.one_hot(labels, plan.num_classes)))
    return arrivals.probe(dataset) if arrivals else dataset


def validation_batches(plan, batch_size):
    """Validation clips with one-hot labels, or None without a validation split."""
    import tensorflow as tf

    from preprocess import reader
    if plan.val_split is None:
        return None
    dataset = reader.make_dataset(plan.config["records"], plan.val_split,
                                  plan.specs.validation, batch_size=batch_size,
                                  skip_corrupt=plan.config["skip_corrupt"])
    return dataset.map(lambda clips, labels: (clips, tf.one_hot(labels, plan.num_classes)))
