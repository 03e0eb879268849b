"""The trainer: records in, a trained, evaluated and exported (2+1)D ResNet out.

    python train.py --records records/ --output_dir runs/tutorial
    python train.py --records records/ --output_dir runs/r18 --preset r2plus1d_18

Reads top to bottom: config -> data -> model -> compile -> fit -> evaluate ->
export. Killing a run and launching the identical command resumes from the
last completed epoch. Everything it writes lands in --output_dir.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings

# -----------------------------------------------------------------------------
# Config: every default in one place. A preset fills in what the command line
# leaves unset; `base` fills in the rest.
# -----------------------------------------------------------------------------
PRESETS = {
    # The TensorFlow tutorial's experiment: 10 frames every 15th, 224x224, Adam 1e-4.
    # Its records are padded 224 squares, so a 224 random crop is the whole frame.
    "tutorial": dict(model="tutorial", num_frames=10, frame_step=15, image_size=224,
                     batch_size=8, epochs=50, optimizer="adam", learning_rate=1e-4,
                     schedule="constant", crop="random"),
    # R(2+1)D-18 as in the paper's UCF101 runs: 16x112x112 clips, SGD with a
    # cosine schedule after a linear warm-up, 10-clip x 3-crop evaluation.
    # Random 112 crops of the 128x171 frames, as the paper trains.
    "r2plus1d_18": dict(model="r2plus1d_18", num_frames=16, frame_step=2, image_size=112,
                        crop="random",
                        batch_size=32, epochs=45, optimizer="sgd", learning_rate=0.05,
                        schedule="cosine", warmup_epochs=5, weight_decay=1e-4,
                        label_smoothing=0.1, dropout=0.5, eval_clips=10, eval_crops=3),
    # The one-command demo: a narrow R(2+1)D-10 that learns motion in minutes on a CPU.
    # Its classes include left against right, so no flips.
    "demo": dict(model="r2plus1d_10", width_multiplier=0.25, num_frames=8, frame_step=6,
                 image_size=64, batch_size=8, epochs=60, optimizer="adam",
                 learning_rate=2e-3, schedule="cosine", warmup_epochs=1, eval_clips=3,
                 flip=False),
}
BASE = dict(
    preset="tutorial",
    width_multiplier=1.0,
    dropout=0.0,
    warmup_epochs=0.0,
    weight_decay=0.0,
    label_smoothing=0.0,
    step_jitter=0,            # training frame step varies by up to this much
    crop="resized",           # Inception-style random resized crops, or "random" crops
    crop_scale=0.4,           # smallest area fraction of a resized crop
    flip=True,                # random flips, in the model; off where direction is the label
    samples_per_video=1,      # training clips per video read (repeated augmentation)
    precision="auto",         # mixed_float16 on tensor-core GPUs, float32 on CPUs
    jit_compile=False,        # XLA; worth it on GPUs, slow to compile on CPUs
    strategy="auto",
    seed=0,
    deterministic=False,      # bit-exact reruns: deterministic ops and input order; slower
    eval_clips=1,             # clips per test video, averaged
    eval_crops=1,             # 1 (centre) or 3 (left, centre, right)
    steps_per_epoch=0,        # 0: one pass over the training videos (x samples_per_video)
    train_split="train",
    val_split="val",          # falls back to test when the records have no val
    test_split="test",        # falls back to val when the records have no test
    skip_corrupt=False,
)
# Options that do not change what a run computes; a resume may differ in them.
NOT_IDENTITY = ("output_dir", "overwrite", "strategy")


class TrainError(ValueError):
    """A request the trainer cannot carry out; the message says what to fix."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python train.py", description=__doc__.split("\n\n")[0],
        argument_default=None)
    add = parser.add_argument
    add("--records", required=True, help="folder written by python -m preprocess")
    add("--output_dir", required=True, help="run folder: checkpoints, logs, reports, exports")
    add("--overwrite", action="store_true", help="start over in a run folder of another config")
    add("--preset", choices=sorted(PRESETS), help="defaults to start from (tutorial)")
    add("--model", help="tutorial, r2plus1d_10, r2plus1d_18 or r2plus1d_34")
    add("--width_multiplier", type=float, help="scales R(2+1)D channel counts")
    add("--dropout", type=float, help="dropout before the logits (R(2+1)D)")
    add("--num_frames", type=int, help="frames per clip")
    add("--frame_step", type=int, help="source frames between clip frames")
    add("--step_jitter", type=int, help="training frame step varies by up to this")
    add("--image_size", type=int, help="clip frame side")
    add("--crop", choices=("resized", "random"),
        help="training crops: random resized (scale and aspect jitter) or plain random "
             "crops of --image_size (no rescaling, the fastest)")
    add("--crop_scale", type=float, help="smallest area fraction of resized crops")
    add("--flip", action=argparse.BooleanOptionalAction,
        help="random horizontal flips in training, done by the model on the device "
             "(--no-flip where direction matters)")
    add("--samples_per_video", type=int,
        help="training clips cut from each video read, each with its own start, crop "
             "and flip (repeated augmentation); an epoch sees this many clips per video")
    add("--batch_size", type=int, help="clips per replica and step")
    add("--epochs", type=int)
    add("--steps_per_epoch", type=int, help="0: one pass over the training videos")
    add("--optimizer", choices=("adam", "sgd"))
    add("--learning_rate", type=float, help="peak rate (per global batch)")
    add("--schedule", choices=("constant", "cosine"))
    add("--warmup_epochs", type=float)
    add("--weight_decay", type=float)
    add("--label_smoothing", type=float)
    add("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    add("--jit_compile", action="store_true", default=None, help="compile with XLA")
    add("--strategy", choices=("auto", "one_device", "mirrored", "multi_worker", "tpu"))
    add("--seed", type=int)
    add("--deterministic", action="store_true", default=None,
        help="make a rerun bit-exact (deterministic ops and input order; slower)")
    add("--eval_clips", type=int, help="clips per test video, averaged")
    add("--eval_crops", type=int, choices=(1, 3), help="crops per evaluation clip")
    add("--train_split")
    add("--val_split")
    add("--test_split")
    add("--skip_corrupt", action="store_true", default=None,
        help="skip unreadable records instead of failing")
    return parser


def resolve_config(argv):
    """Command line over preset over base: the full, explicit config of a run."""
    given = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    preset = given.get("preset", BASE["preset"])
    config = {**BASE, **PRESETS[preset], **given}
    config["overwrite"] = bool(config.get("overwrite"))
    if config["num_frames"] < 1 or config["frame_step"] < 1 or config["batch_size"] < 1:
        raise TrainError("--num_frames, --frame_step and --batch_size must be positive")
    if config["epochs"] < 1:
        raise TrainError("--epochs must be at least 1")
    if not 0 < config["crop_scale"] <= 1:
        raise TrainError("--crop_scale must be in (0, 1]")
    if config["samples_per_video"] < 1:
        raise TrainError("--samples_per_video must be at least 1")
    return config


def main(argv=None):
    try:
        config = resolve_config(sys.argv[1:] if argv is None else argv)
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Must precede TensorFlow's import: quiet C++ logs; and oneDNN's bf16 Conv3D
    # CPU kernels give NaN gradients for some shapes (TF 2.21), so bf16 on a
    # CPU-only machine runs TensorFlow's own kernels.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if config["precision"] == "mixed_bfloat16" and not _has_accelerator_hint():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        run(config)
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # our own one-line errors from the packages
        import tensorflow as tf

        from model.training import NaNLossError, UnsupportedStrategyError
        from preprocess.manifest import ManifestError
        if isinstance(error, (ManifestError, UnsupportedStrategyError)):
            print(f"error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, tf.errors.DataLossError):
            print(f"error: {describe_data_loss(config['records'])}", file=sys.stderr)
            return 2
        if isinstance(error, NaNLossError):
            last = os.path.join(config["output_dir"], "checkpoints", "last.keras")
            kept = (f"the last good checkpoint is {last}" if os.path.exists(last)
                    else "no epoch had completed, so there is no checkpoint")
            print(f"error: {error}; lower --learning_rate (now {config['learning_rate']}) "
                  f"and run again with --overwrite; {kept}", file=sys.stderr)
            return 3
        raise
    return 0


def describe_data_loss(records):
    """Names the shards that fail their CRC, which TensorFlow's own error does not."""
    from preprocess import manifest as manifest_lib
    from preprocess.reader import find_corrupt_shards
    manifest = manifest_lib.read_manifest(records)
    paths = [os.path.join(records, shard) for info in manifest["splits"].values()
             for shard in info["shards"]]
    corrupt = find_corrupt_shards(paths)
    names = ", ".join(f"{path} ({reason})" for path, reason in corrupt.items())
    return (f"corrupt records in {names or records}; copy or preprocess them again, "
            "or pass --skip_corrupt to skip unreadable records")


def _has_accelerator_hint():
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES", "").strip(" -1")) or \
        os.path.exists("/dev/nvidia0")


def fingerprint(records_dir):
    import tensorflow as tf
    with tf.io.gfile.GFile(os.path.join(records_dir, "manifest.json"), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()[:16]


def prepare_run_dir(config, identity):
    """Refuses to resume a run of another config; `--overwrite` starts it afresh."""
    run_dir = config["output_dir"]
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as handle:
            previous = json.load(handle).get("identity")
        if previous != identity:
            if not config["overwrite"]:
                changed = sorted(k for k in set(previous or {}) | set(identity)
                                 if (previous or {}).get(k) != identity.get(k))
                raise TrainError(f"{run_dir} holds a run of another configuration "
                                 f"({', '.join(changed)} differ); pass --overwrite to "
                                 "start over or choose another --output_dir")
            shutil.rmtree(run_dir)
    elif config["overwrite"] and os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)


def run(config):
    # Keras warns whenever a finite dataset ends, which validation sets do by design.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    import keras
    import tensorflow as tf

    import model as models
    from model import evaluation, export, training
    from model.precision import set_precision
    from preprocess import manifest as manifest_lib
    from preprocess import reader

    run_dir, records = config["output_dir"], config["records"]
    # The strategy first: an unsupported one fails before any work.
    strategy = training.make_strategy(config["strategy"])

    # -------------------------------------------------------------------------
    # Records: check the request against the manifest before any work.
    # -------------------------------------------------------------------------
    manifest = manifest_lib.read_manifest(records)
    splits = manifest["splits"]
    class_names = manifest["classes"]
    val_split = _pick_split(splits, config["val_split"], config["test_split"])
    test_split = _pick_split(splits, config["test_split"], config["val_split"])
    manifest_lib.shard_paths(records, manifest, config["train_split"])
    if test_split is None:
        raise TrainError(f"{records} has no {config['test_split']} or {config['val_split']} "
                         "split with videos to evaluate on; preprocess with one (e.g. "
                         "--per_class train=30,val=10,test=10)")
    smallest_side = min((min(size) for size in manifest["geometry"]["frame_sizes"]),
                        default=0)
    if config["image_size"] > smallest_side:
        raise TrainError(f"--image_size {config['image_size']} is larger than the "
                         f"{smallest_side}-pixel frames in {records}; lower it, or "
                         "preprocess with a larger --image_size")

    identity = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    identity["records_fingerprint"] = fingerprint(records)
    prepare_run_dir(config, identity)

    # -------------------------------------------------------------------------
    # Precision, seeds, batch.
    # -------------------------------------------------------------------------
    policy = set_precision(config["precision"])
    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    replicas = strategy.num_replicas_in_sync
    global_batch = config["batch_size"] * replicas
    with open(os.path.join(run_dir, "config.json"), "w") as handle:
        json.dump({"identity": identity, "config": config, "policy": policy,
                   "replicas": replicas, "global_batch": global_batch,
                   "classes": class_names, "manifest": manifest_summary(manifest),
                   "versions": {"twoplusone": "0.1.0", "tensorflow": tf.__version__,
                                "keras": keras.__version__,
                                "python": platform.python_version()}},
                  handle, indent=2)
    done = training.resume_epoch(run_dir)
    if done:
        print(f"train: resuming {run_dir} from epoch {done} of {config['epochs']}",
              flush=True)

    # -------------------------------------------------------------------------
    # Data: clips are cut from the records at read time.
    # -------------------------------------------------------------------------
    clip = dict(num_frames=config["num_frames"], frame_step=config["frame_step"],
                image_size=config["image_size"], skip_corrupt=config["skip_corrupt"])
    num_classes = len(class_names)

    def one_hot(clips, labels):
        return clips, tf.one_hot(labels, num_classes)

    train_ds = reader.make_dataset(
        records, config["train_split"], batch_size=global_batch, training=True,
        repeat=True, step_jitter=config["step_jitter"],
        flip=False,  # the model flips, on the device: see model.layers.RandomFlipClips
        samples_per_video=config["samples_per_video"],
        crop_scale=(config["crop_scale"], 1.0) if config["crop"] == "resized" else None,
        seed=config["seed"], deterministic=config["deterministic"] or None, **clip,
    ).map(one_hot)
    val_ds = None
    if val_split:
        val_ds = reader.make_dataset(records, val_split, batch_size=global_batch,
                                     training=False, **clip).map(one_hot)
    steps = config["steps_per_epoch"] or training.steps_for(
        splits[config["train_split"]]["num_videos"] * config["samples_per_video"],
        global_batch)

    # -------------------------------------------------------------------------
    # Model and compile, under the strategy's scope.
    # -------------------------------------------------------------------------
    options_for_model = {} if config["model"] == "tutorial" else dict(
        width_multiplier=config["width_multiplier"], dropout=config["dropout"])
    with strategy.scope():
        network = models.build_model(config["model"], num_classes, config["num_frames"],
                                     config["image_size"], flip=config["flip"],
                                     **options_for_model)
        rate = training.learning_rate(config["learning_rate"], config["schedule"],
                                      config["epochs"], steps, config["warmup_epochs"])
        network.compile(
            optimizer=training.make_optimizer(config["optimizer"], rate,
                                              config["weight_decay"]),
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=config["label_smoothing"]),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                     keras.metrics.TopKCategoricalAccuracy(
                         k=min(5, num_classes), name="top5_accuracy")],
            jit_compile=config["jit_compile"])
    print(f"train: {config['model']} ({network.count_params():,} parameters), "
          f"{policy}, {replicas} replica(s), global batch {global_batch}, "
          f"{steps} steps per epoch", flush=True)

    # -------------------------------------------------------------------------
    # Fit. BackupAndRestore makes the identical command resume.
    # -------------------------------------------------------------------------
    started = time.time()
    history = network.fit(train_ds, epochs=config["epochs"], steps_per_epoch=steps,
                          validation_data=val_ds, shuffle=False,  # the reader shuffles
                          callbacks=training.make_callbacks(run_dir),
                          verbose=1 if sys.stdout.isatty() else 2)
    trained_epochs = len(history.epoch)
    seconds = time.time() - started

    # -------------------------------------------------------------------------
    # Evaluate: several clips per test video, averaged, in inference mode.
    # -------------------------------------------------------------------------
    eval_ds = reader.make_dataset(records, test_split, batch_size=global_batch,
                                  training=False, num_clips=config["eval_clips"],
                                  num_crops=config["eval_crops"], with_video_id=True,
                                  **clip)
    clip_probs, clip_labels, video_ids = evaluation.predict_videos(network, eval_ds)
    report, confusion = evaluation.classification_report(clip_probs, clip_labels,
                                                         video_ids, class_names)
    metrics = {test_split: report,
               "training": {"epochs_this_run": trained_epochs,
                            "seconds_this_run": round(seconds, 1),
                            "seconds_per_epoch": round(seconds / trained_epochs, 1)
                            if trained_epochs else None}}
    metrics_path = os.path.join(run_dir, "metrics.json")
    with open(metrics_path, "w") as handle:
        json.dump(metrics, handle, indent=2)
    history_csv = os.path.join(run_dir, "history.csv")
    evaluation.plot_learning_curves(history_csv, os.path.join(run_dir, "learning_curves.png"))
    evaluation.plot_confusion_matrix(confusion, class_names,
                                     os.path.join(run_dir, "confusion_matrix.png"),
                                     title=f"{test_split}: video accuracy "
                                           f"{report['accuracy']:.1%}")

    # -------------------------------------------------------------------------
    # Export: .keras, SavedModel with a uint8 serving signature, class names.
    # -------------------------------------------------------------------------
    paths = export.export_model(network, run_dir, class_names, config["num_frames"],
                                config["image_size"])
    print(f"train: {test_split} video accuracy {report['accuracy']:.3f} "
          f"(clip {report['clip_accuracy']:.3f}, top-5 {report['top5_accuracy']:.3f}, "
          f"mean class {report['mean_class_accuracy']:.3f}) over {report['num_videos']} "
          f"videos", flush=True)
    print(f"train: metrics {metrics_path}", flush=True)
    print(f"train: plots {os.path.join(run_dir, 'learning_curves.png')}, "
          f"{os.path.join(run_dir, 'confusion_matrix.png')}", flush=True)
    print(f"train: model {paths['keras']} and {paths['saved_model']}", flush=True)
    return metrics


def _pick_split(splits, wanted, fallback):
    for name in (wanted, fallback):
        if name in splits and splits[name]["num_videos"]:
            return name
    return None


def manifest_summary(manifest):
    # What inference needs to turn a new video into frames the same way.
    return {k: manifest[k] for k in ("source", "split_spec", "geometry", "fps", "max_frames",
                                     "encoding", "created", "schema_version")}


if __name__ == "__main__":
    sys.exit(main())
