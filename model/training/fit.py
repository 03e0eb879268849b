"""The fit of a run: Keras's `fit` on one machine, our loop across machines.

`Plan` is what a fit needs to know of a run, decided before the model is
built; `make_strategy` and `set_numerics` choose the devices and numbers it
runs with. `fit_one_machine` and `fit_across_workers` (which drives
`model.training.multi_worker`'s loop) train a compiled network on the
`model.training.data.Datasets` they are given and hand a `Fitted` to
evaluation. Importing this module is light: TensorFlow loads when a fit starts.
"""

import dataclasses
import sys
import time
import warnings

from model.training.config import TrainError


@dataclasses.dataclass(frozen=True)
class Plan:
    """What both fits need to know of a run, decided before the model is built."""

    config: dict
    folder: object              # model.training.run_dir.RunDir
    cluster: object             # model.training.multi_worker.Cluster, or None on one machine
    specs: object               # preprocess.reader.RunClips: training, validation, evaluation
    val_split: str | None
    num_classes: int
    global_batch: int
    done: int                   # epochs a resumed run had completed
    train_videos: int

    @property
    def steps_per_pass(self):
        from model.training import recipe
        return recipe.steps_for(self.train_videos * self.config["samples_per_video"],
                                self.global_batch)

    @property
    def steps(self):
        return self.config["steps_per_epoch"] or self.steps_per_pass

    @property
    def bn_batches(self):
        """Precise BatchNorm's batches: as asked, but at most one pass."""
        return min(self.config["precise_bn_batches"], self.steps_per_pass)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """What a fit hands to evaluation.

    `precise` recomputes the BatchNorm statistics of `network` before it is
    evaluated, or is None where the fit already left them pooled.
    """

    network: object
    precise: object
    facts: dict
    precise_bn_batches: int     # batches its statistics pool (0: no BatchNorm)


def make_strategy(config, cluster):
    """The strategy of the run: one machine's by name, or the cluster's once it has joined."""
    from model.training import multi_worker, recipe
    if cluster is None:
        return recipe.make_strategy(config["strategy"])
    with multi_worker.deadline(config["collective_timeout"], cluster):
        return multi_worker.make_strategy()


def set_numerics(config, replicas):
    """The dtype policy, seeds and determinism; returns the policy's name."""
    import keras
    import tensorflow as tf

    from model.training.precision import set_precision
    policy = set_precision(config["precision"], replicas)
    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return policy


def fit_facts(epochs, seconds, precise, wait):
    """What `metrics.json` says of this launch's fit; `wait` is its `InputWait`."""
    from model.training import input_wait
    return {"epochs_this_run": epochs, "seconds_this_run": round(seconds, 1),
            "seconds_per_epoch": round(seconds / epochs, 1) if epochs else None,
            "precise_bn_seconds": [round(s, 2) for s in precise.seconds],
            **input_wait.facts(wait.shares)}


def fit_one_machine(network, strategy, plan, datasets):
    """Keras's `fit` on one device or mirrored over this machine's devices.

    BackupAndRestore makes the identical command resume; precise BN statistics
    before each validation make its numbers mean what they say.
    """
    from model.training import recipe
    from model.training.input_wait import InputWait
    from model.training.launches import LaunchLog
    from model.training.precise_bn import PreciseBatchNorm
    precise = PreciseBatchNorm(network, datasets.statistics, plan.bn_batches,
                               strategy=strategy)
    # First: its step times leave out the other callbacks' work, and the later
    # ones (history.csv, TensorBoard, the epoch line) record its share.
    started = time.time()
    # Its stall watch runs from before the fit, which takes a batch to build the model.
    with InputWait(datasets.arrivals, data_service=plan.config["data_service"]) as wait:
        history = network.fit(datasets.training,
                              epochs=plan.config["epochs"], steps_per_epoch=plan.steps,
                              validation_data=datasets.validation,
                              shuffle=False,  # the reader shuffles
                              callbacks=[wait, precise,
                                         # before the backup: a kill between them repeats
                                         # an epoch's time rather than losing it
                                         LaunchLog(plan.folder.launches, plan.global_batch),
                                         *recipe.make_callbacks(plan.folder)],
                              verbose=1 if sys.stdout.isatty() else 2)
    epochs = len(history.epoch)
    return Fitted(network, precise, fit_facts(epochs, time.time() - started, precise, wait),
                  precise.num_batches if precise.layers else 0)


def fit_across_workers(network, strategy, plan, datasets):
    """The epochs of a multi-worker run, with our step and Keras's callbacks.

    Each worker reads its own shards, for training and for precise BatchNorm,
    whose statistics are pooled over all workers after each epoch and saved
    in the checkpoint. A peer that dies stops this worker with a `TrainError`.
    The chief gets the last checkpoint back, outside the strategy, to
    evaluate: no peer takes part any more.
    """
    import keras

    from model.training import multi_worker, recipe
    from model.training.input_wait import InputWait
    from model.training.launches import LaunchLog
    from model.training.precise_bn import PreciseBatchNorm
    config, cluster = plan.config, plan.cluster
    loop = multi_worker.CustomLoop(network, strategy, jit_compile=config["jit_compile"])
    precise = PreciseBatchNorm(network, datasets.statistics, plan.bn_batches,
                               all_reduce=loop.all_reduce_sum)
    if not cluster.is_chief:  # its checkpoints go to a temporary folder, unvalidated
        warnings.filterwarnings("ignore", message="Can save best model only")
    # Each step takes one batch of this worker's pipeline for each of its replicas.
    wait = InputWait(datasets.arrivals,
                     batches_per_step=strategy.num_replicas_in_sync // cluster.num_workers,
                     data_service=config["data_service"])
    started = time.time()
    wait.start()  # its stall watch, from before the first batch
    try:
        with multi_worker.worker_folder(plan.folder, cluster) as own:
            callbacks = keras.callbacks.CallbackList(
                [wait, LaunchLog(own.launches, plan.global_batch), *recipe.make_callbacks(own)],
                add_history=True, model=network,
                epochs=config["epochs"], steps=plan.steps, verbose=0)
            val_ds = datasets.validation
            epochs = loop.fit(datasets.training, epochs=config["epochs"], steps=plan.steps,
                              initial_epoch=plan.done, callbacks=callbacks,
                              validate=val_ds and multi_worker.validation(network, val_ds),
                              precise=precise,
                              report=(lambda line: print(f"train: {line}", flush=True))
                              if cluster.is_chief else (lambda line: None))
        print(f"train: {cluster.name} weights sha256 "
              f"{multi_worker.weights_digest(network)}", flush=True)
    except multi_worker.PEER_ERRORS as error:
        raise TrainError(
            f"{cluster.name} lost a peer ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:200]}); relaunch the same command on "
            f"every worker to resume from epoch {plan.folder.resume_epoch()}") from None
    finally:
        wait.close()  # its stall watch ends however the fit does
    facts = fit_facts(epochs, time.time() - started, precise, wait)
    if not cluster.is_chief:
        print(f"train: {cluster.name} done", flush=True)
        return Fitted(None, None, facts, 0)
    return Fitted(keras.saving.load_model(plan.folder.last_checkpoint, compile=False), None,
                  facts, precise.num_batches if precise.layers else 0)
