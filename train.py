"""The trainer: records in, a trained, evaluated and exported (2+1)D ResNet out.

    python train.py --records records/ --output_dir runs/tutorial
    python train.py --records records/ --output_dir runs/r18 --preset r2plus1d_18

Reads top to bottom: config -> data -> model -> compile -> fit -> evaluate ->
export. Killing a run and launching the identical command resumes from the
last completed epoch. Everything it writes lands in --output_dir. With
`--strategy multi_worker` the same run spans the machines TF_CONFIG lists,
and `model.training.multi_worker` drives the epochs where Keras's `fit` cannot.
This file wires the parts together: every default, preset and flag lives in
`model.training.config`, the datasets in `model.training.data`, the fits in
`model.training.fit`.
"""

import contextlib
import json
import os
import sys
import warnings

# Light imports only: TensorFlow loads after the command line is checked and
# the environment it reads at import is set (see main).
from model import import_tensorflow, quiet_tensorflow_logs
from model.inference import evaluation
from model.network import pretrained
from model.network.build import build_for_run
from model.training import config as config_lib
from model.training import data, experiments, fit, run_dir
from model.training.cluster import Cluster
from preprocess import manifest as manifest_lib
from preprocess.folder_lock import FolderLock
from preprocess.errors import USAGE_STATUS, UserError, out_of_room, run_command

NAN_LOSS_STATUS = 3  # a run that diverged: not a misuse, and worth telling apart


def main(argv=None):
    """The command line in, the exit status out: 2 for what the user can fix, 3 for NaNs."""
    return run_command(command, sys.argv[1:] if argv is None else argv)


def command(argv):
    """Checks the command line, sets the environment TensorFlow reads, then runs."""
    request = config_lib.resolve_command_line(argv, description=__doc__.split("\n\n")[0])
    config = request.config
    if request.print_config:  # the settings only: no TensorFlow, no run folder
        print(config_lib.format_settings(config, argv), end="", flush=True)
        return 0
    # Must precede TensorFlow's import: quiet C++ logs; and oneDNN's bf16 Conv3D
    # CPU kernels give NaN gradients for some shapes (TF 2.21), so bf16 on a
    # CPU-only machine runs TensorFlow's own kernels.
    quiet_tensorflow_logs()
    if config["precision"] == "mixed_bfloat16" and not _has_accelerator_hint():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        run(config)
    except UserError:
        raise  # run_command prints it in one line
    except Exception as error:
        status = report_failure(error, config)
        if status is None:
            raise
        return status
    return 0


def report_failure(error, config):
    """One `error:` line for a failure the user can act on, and its exit status; else None."""
    from model.training import recipe
    from preprocess.reader import describe_read_error
    unreadable = describe_read_error(error, config["records"])
    if unreadable:
        print(f"error: {unreadable}", file=sys.stderr)
        return USAGE_STATUS
    room = out_of_room(error)  # a full disk under history, logs or exports
    if room:
        path = room[0] or config["output_dir"]
        recipe.FAILED_SAVES.append(path)
        print(f"error: {recipe.no_room_error(path, room[1])}", file=sys.stderr)
        return USAGE_STATUS
    if isinstance(error, recipe.NaNLossError):
        last = run_dir.RunDir(config["output_dir"]).last_checkpoint
        kept = (f"the last good checkpoint is {last}" if os.path.exists(last)
                else "no epoch had completed, so there is no checkpoint")
        print(f"error: {error}; lower --learning_rate (now {config['learning_rate']}) "
              f"and run again with --overwrite; {kept}", file=sys.stderr)
        return NAN_LOSS_STATUS
    return None


def _has_accelerator_hint():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # set: it decides, whatever devices exist
        return visible.strip() not in ("", "-1")
    return os.path.exists("/dev/nvidia0")


# -----------------------------------------------------------------------------
# The run, top to bottom.
# -----------------------------------------------------------------------------

def run(config):
    """Trains, evaluates and exports one run; returns its metrics (None on a non-chief worker)."""
    # --- Config: everything that can be checked is, before TensorFlow loads, so a
    # refusal comes at once: the cluster, the records, the run folder and its writer.
    cluster = Cluster() if config["strategy"] == "multi_worker" else None
    manifest = manifest_lib.read_manifest(config["records"])
    val_split, test_split = manifest_lib.check_request(manifest, config,
                                                       cluster and cluster.num_workers)
    folder = run_dir.RunDir(config["output_dir"])
    identity = run_dir.identity(config, config["records"])
    if not config["overwrite"] and folder.is_complete(identity, config["records"]):
        return report_complete(folder)  # read only: it takes no lock and changes nothing
    chief = cluster is None or cluster.is_chief
    # One writer per run folder: the chief, for as long as the run lasts; its
    # workers share the folder, a second run is refused here.
    with FolderLock(folder.path) if chief else contextlib.nullcontext():
        if config["init_from"] and (config["overwrite"] or not folder.resume_epoch()):
            check_init_from(config)  # before --overwrite empties the folder
        if chief:
            folder.prepare(identity, config["overwrite"], config["records"])
        import_tensorflow()
        return train(config, cluster, manifest, folder, identity, val_split, test_split)


def train(config, cluster, manifest, folder, identity, val_split, test_split):
    """The run once its folder is held: data, model, fit, evaluation, export."""
    from model.inference import export
    from model.training import input_wait, launches
    from model.training.precision import check_gpu_visible
    from preprocess.reader import ClipSpec
    # Keras warns whenever a finite dataset ends, which validation sets do by design.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    check_gpu_visible(config["allow_cpu"])
    chief = cluster is None or cluster.is_chief
    done = folder.resume_epoch()
    if chief:  # the history the resumed run appends to ends where its backup does
        folder.repair_history(done)
    strategy = fit.make_strategy(config, cluster)

    # --- Precision, seeds, batch.
    replicas = strategy.num_replicas_in_sync
    policy = fit.set_numerics(config, replicas)
    if done:
        print(f"train: resuming {folder.path} from epoch {done} of {config['epochs']}",
              flush=True)
    class_names = manifest["classes"]
    plan = fit.Plan(config, folder, cluster, ClipSpec.for_run(config), val_split,
                    len(class_names), config["batch_size"] * replicas, done,
                    manifest["splits"][config["train_split"]]["num_videos"])

    # --- Data: clips are cut from the records at read time; each worker reads its own.
    datasets = data.make_datasets(plan, strategy)

    # --- Model and compile, under the strategy's scope.
    with strategy.scope():
        network = compile_network(build_for_run(config, len(class_names), folder), config,
                                  plan.steps)
    announce(config, network, policy, strategy, plan)
    views = plan.specs.evaluation.views
    if chief:
        record_run(folder, config, identity, done, policy=policy, replicas=replicas,
                   global_batch=plan.global_batch, classes=class_names, views=views,
                   manifest=run_dir.manifest_summary(manifest))
        folder.write_architecture(network)

    # --- Fit: Keras's fit on one machine, our loop across machines.
    fit_run = fit.fit_across_workers if cluster else fit.fit_one_machine
    fitted = fit_run(network, strategy, plan, datasets)
    if not chief:
        return None

    # --- Evaluate (several clips per test video, averaged), export, report: the
    # metrics last, since they mark the run complete.
    network, evaluated = model_to_evaluate(fitted, config, folder)
    # On the model the strategy built, every replica evaluates; a model read back
    # from a checkpoint, outside the strategy, evaluates on one device.
    on_replicas = network is fitted.network and not cluster
    report, confusion = evaluate(network, config, plan.specs.evaluation, test_split,
                                 class_names, strategy if on_replicas else None)
    export.export_model(network, folder, class_names, config["num_frames"],
                        config["image_size"])
    training = {**fitted.facts, **launches.totals(folder.launches)}  # over every launch
    evaluated = {**evaluated, "views": views, "split": test_split}
    write_hparams(folder, config, {test_split: report, "training": training,
                                   "evaluated": evaluated})
    metrics = write_reports(folder, test_split, report, confusion, class_names, training,
                            evaluated)
    print_summary(folder, test_split, report, evaluated)
    input_wait.report_input_bound(fitted.facts, config["data_service"])
    return metrics


# -----------------------------------------------------------------------------
# The steps of a run, in the order run() takes them.
# -----------------------------------------------------------------------------

def report_complete(folder):
    """A finished run asked again: says where its results are and changes nothing."""
    with open(folder.metrics) as handle:
        metrics = json.load(handle)
    print(f"train: {folder.path} is a finished run of this configuration; nothing to do "
          f"(pass --overwrite to train it again)", flush=True)
    print(f"train: metrics {folder.metrics}", flush=True)
    print(f"train: model {folder.model} and {folder.saved_model}", flush=True)
    return metrics


def check_init_from(config):
    """The --init_from file or folder exists and is of a kind we read, before any work."""
    pretrained.source_kind(config["init_from"])


def compile_network(network, config, steps):
    """The run's schedule, optimizer, loss and metrics; call under the strategy's scope."""
    from model.training import recipe
    rate = recipe.learning_rate(config["learning_rate"], config["schedule"],
                                config["epochs"], steps, config["warmup_epochs"])
    return recipe.compile_model(
        network, optimizer=config["optimizer"], learning_rate=rate,
        weight_decay=config["weight_decay"], label_smoothing=config["label_smoothing"],
        jit_compile=config["jit_compile"])


def announce(config, network, policy, strategy, plan):
    """One line naming the model, the devices, the precision and the strategy chosen."""
    from model.training.precision import describe_devices
    print(f"train: {config['model']} ({network.count_params():,} parameters) on "
          f"{describe_devices()}: {policy}, {type(strategy).__name__} with "
          f"{strategy.num_replicas_in_sync} replica(s), global batch {plan.global_batch}, "
          f"{plan.steps} steps per epoch", flush=True)


def record_run(run, config, identity, resuming, **facts):
    """The resolved config next to the checkpoints, once the model is known to build."""
    source = {"init_from_sha256": None}
    if config["init_from"]:  # which bytes the run started from (and a name's URL), kept
        source = pretrained.describe_source(config["init_from"],
                                            run.read_config() if resuming else None)
    run.write_config(config, identity, **source, **facts)


def model_to_evaluate(fitted, config, run):
    """The last model with precise BatchNorm statistics, or the best on validation.

    Returns:
        `(model, facts for metrics.json)`.
    """
    import keras
    if config["eval_checkpoint"] == "best":
        epoch = evaluation.best_epoch(run.history)
        # Saved after its validation, so with the statistics that validation used.
        return (keras.saving.load_model(run.best_checkpoint, compile=False),
                {"checkpoint": "best", "epoch": epoch})
    if fitted.precise:
        fitted.precise()  # nothing to do if the last validation already saw these weights
    return fitted.network, {"checkpoint": "last", "epoch": config["epochs"],
                            "precise_bn_batches": fitted.precise_bn_batches}


def evaluate(network, config, spec, test_split, class_names, strategy):
    """Multi-clip video evaluation of the test split; returns the report and confusion.

    `strategy` splits each batch of `--batch_size` clips per replica over its
    replicas; None runs batches of `--batch_size` on one device.
    """
    replicas = strategy.num_replicas_in_sync if strategy else 1
    return evaluation.evaluate_split(network, config["records"], test_split, spec, class_names,
                                     batch_size=config["batch_size"] * replicas,
                                     skip_corrupt=config["skip_corrupt"], strategy=strategy)


def write_hparams(run, config, metrics):
    """The settings and results for TensorBoard's HParams dashboard, in the run's logs."""
    experiments.write_hparams(run.logs, run.path, experiments.run_settings(config),
                              experiments.run_results(metrics, config))


def write_reports(run, test_split, report, confusion, class_names, training_facts,
                  evaluated):
    """The learning curves, the confusion matrix and, last, `metrics.json`."""
    evaluation.plot_learning_curves(run.history, run.learning_curves)
    return evaluation.write_report(run.metrics, run.confusion_matrix, test_split, report,
                                   confusion, class_names, training=training_facts,
                                   evaluated=evaluated)


def print_summary(run, test_split, report, evaluated):
    print(f"train: {evaluation.accuracy_summary(test_split, report)}, "
          f"{evaluated['checkpoint']} model (epoch {evaluated['epoch']})", flush=True)
    print(f"train: metrics {run.metrics}", flush=True)
    print(f"train: plots {run.learning_curves}, {run.confusion_matrix}", flush=True)
    print(f"train: model {run.model} and {run.saved_model}", flush=True)


def exit_process(status):
    """Ends the process with `status`, at once after a save that failed.

    HDF5 flushes a file it failed to write (a full disk) once more as the
    process exits, which fails again and crashes it. By then the failure is
    reported and the run folder's lock is the OS's to release.
    """
    recipe = sys.modules.get("model.training.recipe")
    if recipe and recipe.FAILED_SAVES:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    exit_process(main())
