"""The trainer: records in, a trained, evaluated and exported (2+1)D ResNet out.

    python train.py --records records/ --output_dir runs/tutorial
    python train.py --records records/ --output_dir runs/r18 --preset r2plus1d_18

Reads top to bottom: config -> data -> model -> compile -> fit -> evaluate ->
export. Killing a run and launching the identical command resumes from the
last completed epoch. Everything it writes lands in --output_dir. With
`--strategy multi_worker` the same run spans the machines TF_CONFIG lists,
and `model.multi_worker` drives the epochs where Keras's `fit` cannot.
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
import warnings

# Light imports only: TensorFlow loads after the command line is checked and
# the environment it reads at import is set (see main).
from model import MODEL_NAMES, PRECISIONS, STRATEGIES, quiet_tensorflow_logs
from preprocess.errors import ArgumentParser, UserError

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
    # R(2+1)D-18 fine-tuned from torchvision's Kinetics-400 weights (downloaded once
    # by name): the clips the weights were trained on (16x112x112, Kinetics
    # normalisation inside the model), a small SGD rate with a short warm-up and few
    # epochs, as published fine-tuning recipes do: VMZ's finetune_ucf101.sh
    # (R(2+1)D from Kinetics: a rate 100x below its Kinetics training, a few epochs,
    # strong weight decay) and the video self-supervision repos' R(2+1)D-18 UCF101
    # fine-tuning (SGD 0.01, momentum 0.9, decay 5e-4).
    "r2plus1d_18_kinetics": dict(model="r2plus1d_18", init_from="kinetics400", num_frames=16,
                                 frame_step=2, image_size=112, crop="random", batch_size=32,
                                 epochs=15, optimizer="sgd", learning_rate=0.01,
                                 schedule="cosine", warmup_epochs=1, weight_decay=5e-4,
                                 label_smoothing=0.1, dropout=0.5, flip=True, eval_clips=10,
                                 eval_crops=3),
    # R(2+1)D-34 fine-tuned from IG-65M then Kinetics-400 (the strongest public
    # R(2+1)D weights: 80.0% Kinetics video top-1 at 32 frames, VMZ's
    # c2/tutorials/model_zoo.md), trained and evaluated on the 32-frame clips the
    # weights saw. The recipe is VMZ's UCF101 fine-tuning of R(2+1)D-34 at 32 frames
    # (c2/scripts/finetune_ucf101.sh with c2/tools/train_net.py's defaults):
    # consecutive frames (sampling rate 1), 112 crops of 128x171 frames, Nesterov
    # SGD with momentum 0.9, no dropout, no label smoothing, 4 clips a GPU at a rate
    # of 1e-4 a GPU (train_net.py multiplies it by the GPU count: on its 8 GPUs,
    # 8e-4 for 32 clips; pass --learning_rate 8e-4 when mirroring over 8). Its L2
    # decay of 5e-3 becomes a decoupled decay of 5e-2 (L2's pull builds up
    # 1/(1-0.9) times through the momentum). VMZ runs 8 x 100k clips with the rate
    # cut 10x every 200k; here 20 passes over UCF101's 9.5k training videos (~190k
    # clips, its first step at full rate), with a cosine decay in place of its later,
    # 10-1000x smaller rates. Evaluation: 10 clips x 3 crops a video.
    "r2plus1d_34_ig65m": dict(model="r2plus1d_34", init_from="ig65m_kinetics400", num_frames=32,
                              frame_step=1, image_size=112, crop="random", batch_size=4,
                              epochs=20, optimizer="sgd", learning_rate=1e-4,
                              schedule="cosine", weight_decay=5e-2, flip=True, eval_clips=10,
                              eval_crops=3),
    # The same from the 8-frame weights (74.9% Kinetics video top-1): 16 clips a GPU
    # in the memory of 4 of 32 frames, at the rate VMZ's recipe gives 16 clips (4e-4).
    "r2plus1d_34_ig65m_clip8": dict(model="r2plus1d_34", init_from="ig65m_kinetics400_clip8",
                                    num_frames=8, frame_step=1, image_size=112, crop="random",
                                    batch_size=16, epochs=20, optimizer="sgd",
                                    learning_rate=4e-4, schedule="cosine", weight_decay=5e-2,
                                    flip=True, eval_clips=10, eval_crops=3),
    # The one-command demo: a narrow R(2+1)D-10 that learns motion in minutes on a CPU.
    # Its classes include left against right, so no flips. Precise BN over 10
    # batches (80 clips) instead of a whole pass (30): a third of its cost an epoch.
    "demo": dict(model="r2plus1d_10", width_multiplier=0.25, num_frames=8, frame_step=6,
                 image_size=64, batch_size=8, epochs=60, optimizer="adam",
                 learning_rate=2e-3, schedule="cosine", warmup_epochs=1, eval_clips=3,
                 flip=False, precise_bn_batches=10),
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
    precision="auto",         # model.precision: bf16 on 8.0+ GPUs, fp16 on 7.x, fp32 on CPUs
    jit_compile=False,        # XLA; worth it on GPUs, slow to compile on CPUs
    strategy="auto",
    collective_timeout=300,   # multi_worker: seconds for the peers to join
    allow_cpu=False,          # train on the CPU although an NVIDIA GPU is there
    seed=0,
    deterministic=False,      # bit-exact reruns: deterministic ops and input order; slower
    eval_clips=1,             # clips per test video, averaged
    eval_crops=1,             # 1 (centre) or 3 (left, centre, right)
    steps_per_epoch=0,        # 0: one pass over the training videos (x samples_per_video)
    train_split="train",
    val_split="val",          # falls back to test when the records have no val
    test_split="test",        # falls back to val when the records have no test
    skip_corrupt=False,
    precise_bn_batches=200,   # training batches that re-estimate BatchNorm statistics
    eval_checkpoint="last",   # the model evaluated and exported: last, or best on val
    init_from=None,           # weights to start from: a name of model.weights, .pth, .keras, run
    bn_epsilon=None,          # None: 1e-3, or the weights' own (1e-5 torchvision, 1e-3 IG-65M)
)
class TrainError(UserError):
    """A request the trainer cannot carry out; the message says what to fix."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, read from the one place defaults live."""

    def _get_help_string(self, action):
        tutorial = {**BASE, **PRESETS[BASE["preset"]]}
        if action.dest not in tutorial:
            return action.help
        varies = action.dest != "preset" and any(action.dest in preset
                                                 for preset in PRESETS.values())
        note = "; presets set their own" if varies else ""
        return f"{action.help} (default: {tutorial[action.dest]}{note})"


def build_parser():
    parser = ArgumentParser(
        prog="python train.py", description=__doc__.split("\n\n")[0],
        argument_default=None, formatter_class=DefaultsFormatter)
    add = parser.add_argument
    add("--records", required=True, help="folder written by python -m preprocess")
    add("--output_dir", required=True, help="run folder: checkpoints, logs, reports, exports")
    add("--overwrite", action="store_true",
        help="empty the run folder and train again (default: a finished run is left as "
             "it is, an interrupted one resumes, another config is refused)")
    add("--preset", choices=sorted(PRESETS), help="defaults to start from")
    add("--model", choices=MODEL_NAMES, help="which network")
    add("--width_multiplier", type=float, help="scales R(2+1)D channel counts")
    add("--dropout", type=float, help="dropout before the logits (R(2+1)D)")
    from model.weights import NAMED_WEIGHTS
    add("--init_from", help="start from these weights: published ones by name ("
        f"{', '.join(NAMED_WEIGHTS)}; downloaded once into Keras's cache, $KERAS_HOME, and "
        "checked against their hash), a torchvision-layout R(2+1)D checkpoint (.pth, read "
        "without PyTorch), a .keras file or a run folder of ours; the classifier is new "
        "when the class count differs. A resumed run continues from its own checkpoint "
        "instead")
    add("--bn_epsilon", type=float, help="BatchNorm epsilon of R(2+1)D; None is 1e-3, or "
        "the weights' own with --init_from's PyTorch weights (1e-3 for IG-65M's, 1e-5 for "
        "torchvision's and other files)")
    add("--num_frames", type=int, help="frames per clip")
    add("--frame_step", type=int, help="stored frames between clip frames")
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
    add("--epochs", type=int, help="passes over the training split")
    add("--steps_per_epoch", type=int, help="0: one pass over the training videos")
    add("--optimizer", choices=("adam", "sgd"), help="Adam (AdamW with --weight_decay) "
        "or SGD with Nesterov momentum 0.9")
    add("--learning_rate", type=float, help="peak rate (per global batch)")
    add("--schedule", choices=("constant", "cosine"), help="learning-rate schedule")
    add("--warmup_epochs", type=float, help="linear warm-up before the cosine decay")
    add("--weight_decay", type=float, help="decoupled weight decay")
    add("--label_smoothing", type=float, help="label smoothing of the cross-entropy")
    add("--precision", choices=PRECISIONS,
        help="dtype policy; auto is mixed_bfloat16 on GPUs of compute capability 8.0 or "
             "more, mixed_float16 on one GPU of 7.x, float32 elsewhere")
    add("--jit_compile", action="store_true", default=None, help="compile with XLA")
    add("--strategy", choices=STRATEGIES, help="tf.distribute strategy; auto "
        "mirrors over all local GPUs when there are several; multi_worker trains on "
        "the machines TF_CONFIG lists")
    add("--collective_timeout", type=int, help="multi_worker: seconds to wait for the "
        "peers to join before stopping with an error")
    add("--seed", type=int, help="seed of weights, shuffling and augmentation")
    add("--deterministic", action="store_true", default=None,
        help="make a rerun bit-exact (deterministic ops and input order; slower)")
    add("--eval_clips", type=int, help="clips per test video, averaged")
    add("--eval_crops", type=int, choices=(1, 3), help="crops per evaluation clip")
    add("--precise_bn_batches", type=int,
        help="before each validation, the final evaluation and export, recompute every "
             "BatchNorm's statistics over this many training batches (at most one pass) "
             "with the current weights, as PySlowFast's precise BN; 0 keeps Keras's "
             "moving averages, which lag weights that still move")
    add("--eval_checkpoint", choices=("last", "best"),
        help="the model evaluated on the test split and exported: the last epoch's, or "
             "the best on validation accuracy. Last, because with precise BN its "
             "statistics are sound, while picking the best of many epochs on a small "
             "validation split rewards noise")
    add("--train_split", help="split to train on")
    add("--val_split", help="split to validate on each epoch (test when missing)")
    add("--test_split", help="split of the final evaluation (val when missing)")
    add("--skip_corrupt", action="store_true", default=None,
        help="skip unreadable records instead of failing")
    add("--allow_cpu", action="store_true", default=None,
        help="train even when this machine has an NVIDIA GPU that TensorFlow cannot see")
    return parser


def resolve_config(argv):
    """Command line over preset over base: the full, explicit config of a run."""
    given = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None}
    preset = given.get("preset", BASE["preset"])
    config = {**BASE, **PRESETS[preset], **given}
    config["overwrite"] = bool(config.get("overwrite"))
    config["allow_cpu"] = bool(config["allow_cpu"])
    check_config(config)
    return config


def check_config(config):
    """Every value and combination, before any work: one `TrainError` naming the fix."""
    from model import weights as named_weights
    # Named weights fix their network: a --model that does not fit is refused
    # here, before TensorFlow loads and before any download.
    kind = config["init_from"] and named_weights.source_kind(config["init_from"])
    named = kind == "named"
    misfit = named_weights.mismatch(config["init_from"], config["model"])
    if misfit:
        presets = [p for p, v in PRESETS.items() if v.get("init_from") == config["init_from"]]
        misfit = f"--init_from {misfit}" + (f" (or --preset {presets[0]})" if presets else "")
    rules = [
        (config["num_frames"] >= 1 and config["frame_step"] >= 1
         and config["batch_size"] >= 1 and config["image_size"] >= 1,
         "--num_frames, --frame_step, --batch_size and --image_size must be positive"),
        (config["epochs"] >= 1, "--epochs must be at least 1"),
        (config["steps_per_epoch"] >= 0, "--steps_per_epoch must be 0 (one pass) or more"),
        (config["learning_rate"] > 0, "--learning_rate must be positive"),
        (config["warmup_epochs"] >= 0, "--warmup_epochs must not be negative"),
        (config["warmup_epochs"] == 0 or config["schedule"] == "cosine",
         "--warmup_epochs needs --schedule cosine (a constant rate has no warm-up)"),
        (config["warmup_epochs"] <= config["epochs"] or config["schedule"] == "constant",
         f"--warmup_epochs ({config['warmup_epochs']}) must not exceed --epochs "
         f"({config['epochs']})"),
        (config["weight_decay"] >= 0, "--weight_decay must not be negative"),
        (0 <= config["label_smoothing"] < 1, "--label_smoothing must be in [0, 1)"),
        (0 <= config["dropout"] < 1, "--dropout must be in [0, 1)"),
        (config["width_multiplier"] > 0, "--width_multiplier must be positive"),
        (0 < config["crop_scale"] <= 1, "--crop_scale must be in (0, 1]"),
        (config["step_jitter"] >= 0, "--step_jitter must not be negative"),
        (config["samples_per_video"] >= 1, "--samples_per_video must be at least 1"),
        (config["eval_clips"] >= 1, "--eval_clips must be at least 1"),
        (config["precise_bn_batches"] >= 0, "--precise_bn_batches must be 0 (off) or more"),
        (config["collective_timeout"] >= 1, "--collective_timeout must be at least 1 second"),
        (config["strategy"] != "multi_worker" or not config["overwrite"],
         "--overwrite cannot be used with --strategy multi_worker, where workers start "
         "at different moments; empty the --output_dir first, then launch every worker"),
        (config["model"] != "tutorial" or (config["width_multiplier"] == 1.0
                                           and config["dropout"] == 0.0),
         "the tutorial model has a fixed width and no dropout; drop --width_multiplier "
         "and --dropout or choose an r2plus1d --model"),
        (misfit is None, misfit),
        (not named or config["width_multiplier"] == 1.0,
         f"--init_from {config['init_from']} fixes the network's width; drop "
         "--width_multiplier"),
        (config["model"] != "tutorial" or kind != "torch",
         "PyTorch weights do not fit the tutorial model; give --init_from a run folder "
         "or .keras file of it, or choose an r2plus1d --model"),
        (config["bn_epsilon"] is None or config["bn_epsilon"] > 0,
         "--bn_epsilon must be positive"),
        (config["bn_epsilon"] is None or config["model"] != "tutorial",
         "the tutorial model has one BatchNorm of Keras's defaults; drop --bn_epsilon"),
        (config["model"] != "tutorial" or config["image_size"] >= 16,
         "the tutorial model halves frames four times: give --image_size 16 or more"),
    ]
    for ok, message in rules:
        if not ok:
            raise TrainError(message)


def main(argv=None):
    try:
        config = resolve_config(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Must precede TensorFlow's import: quiet C++ logs; and oneDNN's bf16 Conv3D
    # CPU kernels give NaN gradients for some shapes (TF 2.21), so bf16 on a
    # CPU-only machine runs TensorFlow's own kernels.
    quiet_tensorflow_logs()
    if config["precision"] == "mixed_bfloat16" and not _has_accelerator_hint():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        run(config)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        import tensorflow as tf

        from model.run_dir import RunDir
        from model.training import NaNLossError
        if isinstance(error, tf.errors.DataLossError):
            print(f"error: {describe_data_loss(config['records'])}", file=sys.stderr)
            return 2
        if isinstance(error, NaNLossError):
            last = RunDir(config["output_dir"]).last_checkpoint
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
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # set: it decides, whatever devices exist
        return visible.strip() not in ("", "-1")
    return os.path.exists("/dev/nvidia0")


# -----------------------------------------------------------------------------
# The run, top to bottom.
# -----------------------------------------------------------------------------

def run(config):
    """Trains, evaluates and exports one run; returns its metrics (None on a non-chief worker)."""
    # Keras warns whenever a finite dataset ends, which validation sets do by design.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    from model import export, multi_worker, run_dir
    from model.precision import check_gpu_visible
    from preprocess.reader import ClipSpec

    # --- Check everything before any work: devices, cluster, records, run folder.
    check_gpu_visible(config["allow_cpu"])
    cluster = multi_worker.Cluster() if config["strategy"] == "multi_worker" else None
    manifest, val_split, test_split = check_records(config, cluster)
    folder = run_dir.RunDir(config["output_dir"])
    identity = run_dir.identity(config, config["records"])
    if not config["overwrite"] and folder.is_complete(identity):
        return report_complete(folder)
    chief = cluster is None or cluster.is_chief
    if chief:  # the other workers only read the run folder
        folder.prepare(identity, config["overwrite"])
    done = folder.resume_epoch()
    if config["init_from"] and not done:
        check_init_from(config)
    strategy = make_strategy(config, cluster)

    # --- Precision, seeds, batch.
    replicas = strategy.num_replicas_in_sync
    policy = set_numerics(config, replicas)
    if done:
        print(f"train: resuming {folder.path} from epoch {done} of {config['epochs']}",
              flush=True)

    # --- Data: clips are cut from the records at read time, by each fit.
    class_names = manifest["classes"]
    plan = Plan(config, folder, cluster, ClipSpec.for_run(config), val_split,
                len(class_names), config["batch_size"] * replicas, done,
                manifest["splits"][config["train_split"]]["num_videos"])

    # --- Model and compile, under the strategy's scope.
    with strategy.scope():
        network = compile_network(make_network(config, len(class_names), folder), config,
                                  plan.steps)
    announce(config, network, policy, strategy, plan)
    if chief:
        record_run(folder, config, identity, done, policy=policy, replicas=replicas,
                   global_batch=plan.global_batch, classes=class_names,
                   views=plan.specs[2].views, manifest=run_dir.manifest_summary(manifest))
        folder.write_architecture(network)

    # --- Fit: Keras's fit on one machine, our loop across machines.
    fit = fit_across_workers if cluster else fit_one_machine
    fitted = fit(network, strategy, plan)
    if not chief:
        return None

    # --- Evaluate (several clips per test video, averaged), export, report: the
    # metrics last, since they mark the run complete.
    network, evaluated = model_to_evaluate(fitted, config, folder)
    # On the model the strategy built, every replica evaluates; a model read back
    # from a checkpoint, outside the strategy, evaluates on one device.
    report, confusion = evaluate(network, config, plan.specs[2], test_split, class_names,
                                 strategy if network is fitted.network and not cluster
                                 else None)
    export.export_model(network, folder, class_names, config["num_frames"],
                        config["image_size"])
    metrics = write_reports(folder, test_split, report, confusion, class_names,
                            fitted.facts, {**evaluated, "views": plan.specs[2].views})
    print_summary(folder, test_split, report, evaluated)
    return metrics


# -----------------------------------------------------------------------------
# The steps of a run, in the order run() takes them.
# -----------------------------------------------------------------------------

def check_records(config, cluster=None):
    """Reads the manifest and checks the request against it; returns it and the splits.

    Returns:
        `(manifest, val_split or None, test_split)`.
    """
    from preprocess import manifest as manifest_lib
    records = config["records"]
    manifest = manifest_lib.read_manifest(records)
    splits = manifest["splits"]
    train_shards = manifest_lib.shard_paths(records, manifest, config["train_split"])
    if cluster:  # each worker reads its own shards
        manifest_lib.check_shards_per_worker(records, config["train_split"],
                                             len(train_shards), cluster.num_workers)
    val_split = _pick_split(splits, config["val_split"], config["test_split"])
    test_split = _pick_split(splits, config["test_split"], config["val_split"])
    if test_split is None:
        raise TrainError(f"{records} has no {config['test_split']} or {config['val_split']} "
                         "split with videos to evaluate on; preprocess with one (e.g. "
                         "--per_class train=30,val=10,test=10)")
    if config["eval_checkpoint"] == "best" and val_split in (None, test_split):
        raise TrainError(f"--eval_checkpoint best needs a validation split apart from the "
                         f"{test_split} split, and {records} has none; use "
                         "--eval_checkpoint last or preprocess with a val split")
    smallest_side = min((min(size) for size in manifest["geometry"]["frame_sizes"]),
                        default=0)
    if config["image_size"] > smallest_side:
        raise TrainError(f"--image_size {config['image_size']} is larger than the "
                         f"{smallest_side}-pixel frames in {records}; lower it, or "
                         "preprocess with a larger --image_size")
    return manifest, val_split, test_split


def _pick_split(splits, wanted, fallback):
    for name in (wanted, fallback):
        if name in splits and splits[name]["num_videos"]:
            return name
    return None


def report_complete(folder):
    """A finished run asked again: says where its results are and changes nothing."""
    with open(folder.metrics) as handle:
        metrics = json.load(handle)
    print(f"train: {folder.path} is a finished run of this configuration; nothing to do "
          f"(pass --overwrite to train it again)", flush=True)
    print(f"train: metrics {folder.metrics}", flush=True)
    print(f"train: model {folder.model} and {folder.saved_model}", flush=True)
    return metrics


def set_numerics(config, replicas):
    """The dtype policy, seeds and determinism; returns the policy's name."""
    import keras
    import tensorflow as tf

    from model.precision import set_precision
    policy = set_precision(config["precision"], replicas)
    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return policy


def announce(config, network, policy, strategy, plan):
    """One line naming the model, the devices, the precision and the strategy chosen."""
    from model.precision import describe_devices
    print(f"train: {config['model']} ({network.count_params():,} parameters) on "
          f"{describe_devices()}: {policy}, {type(strategy).__name__} with "
          f"{strategy.num_replicas_in_sync} replica(s), global batch {plan.global_batch}, "
          f"{plan.steps} steps per epoch", flush=True)


def check_init_from(config):
    """The --init_from file or folder exists and is of a kind we read, before any work."""
    from model import pretrained
    pretrained.source_kind(config["init_from"])


def make_strategy(config, cluster):
    """The strategy of the run: one machine's by name, or the cluster's once it has joined."""
    from model import multi_worker, training
    if cluster is None:
        return training.make_strategy(config["strategy"])
    with multi_worker.deadline(config["collective_timeout"], cluster):
        return multi_worker.make_strategy()


@dataclasses.dataclass(frozen=True)
class Plan:
    """What both fits need to know of a run, decided before the model is built."""

    config: dict
    folder: object              # model.run_dir.RunDir
    cluster: object             # model.multi_worker.Cluster, or None on one machine
    specs: tuple                # ClipSpec.for_run: (training, validation, evaluation)
    val_split: str | None
    num_classes: int
    global_batch: int
    done: int                   # epochs a resumed run had completed
    train_videos: int

    @property
    def steps_per_pass(self):
        from model import training
        return training.steps_for(self.train_videos * self.config["samples_per_video"],
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


def training_batches(plan, batch_size, input_shard=None, for_statistics=False):
    """Training clips with one-hot labels, repeated.

    With `for_statistics`, the clips of precise BatchNorm: the same clips on
    every pass, whatever the threads do, so that statistics depend only on the
    seed and the weights.
    """
    import tensorflow as tf

    from preprocess import reader
    config = plan.config
    dataset = reader.make_dataset(
        config["records"], config["train_split"], plan.specs[0], batch_size=batch_size,
        repeat=True, seed=config["seed"], reshuffle=not for_statistics,
        # Statistics read their batches anew each time: a small buffer fills fast.
        shuffle_buffer=64 if for_statistics else 256,
        deterministic=True if for_statistics else (config["deterministic"] or None),
        input_shard=input_shard, skip_corrupt=config["skip_corrupt"])
    return dataset.map(lambda clips, labels: (clips, tf.one_hot(labels, plan.num_classes)))


def validation_batches(plan, batch_size):
    """Validation clips with one-hot labels, or None without a validation split."""
    import tensorflow as tf

    from preprocess import reader
    if plan.val_split is None:
        return None
    dataset = reader.make_dataset(plan.config["records"], plan.val_split, plan.specs[1],
                                  batch_size=batch_size,
                                  skip_corrupt=plan.config["skip_corrupt"])
    return dataset.map(lambda clips, labels: (clips, tf.one_hot(labels, plan.num_classes)))


def fit_facts(epochs, seconds, precise):
    return {"epochs_this_run": epochs, "seconds_this_run": round(seconds, 1),
            "seconds_per_epoch": round(seconds / epochs, 1) if epochs else None,
            "precise_bn_seconds": [round(s, 2) for s in precise.seconds]}


def fit_one_machine(network, strategy, plan):
    """Keras's `fit` on one device or mirrored over this machine's devices.

    BackupAndRestore makes the identical command resume; precise BN statistics
    before each validation make its numbers mean what they say.
    """
    from model import training
    from model.precise_bn import PreciseBatchNorm
    precise = PreciseBatchNorm(network, training_batches(plan, plan.global_batch,
                                                         for_statistics=True),
                               plan.bn_batches, strategy=strategy)
    started = time.time()
    history = network.fit(training_batches(plan, plan.global_batch),
                          epochs=plan.config["epochs"], steps_per_epoch=plan.steps,
                          validation_data=validation_batches(plan, plan.global_batch),
                          shuffle=False,  # the reader shuffles
                          callbacks=[precise, *training.make_callbacks(plan.folder)],
                          verbose=1 if sys.stdout.isatty() else 2)
    epochs = len(history.epoch)
    return Fitted(network, precise, fit_facts(epochs, time.time() - started, precise),
                  precise.num_batches if precise.layers else 0)


def fit_across_workers(network, strategy, plan):
    """The epochs of a multi-worker run, with our step and Keras's callbacks.

    Each worker reads its own shards, for training and for precise BatchNorm,
    whose statistics are pooled over all workers after each epoch and saved
    in the checkpoint. A peer that dies stops this worker with a `TrainError`.
    The chief gets the last checkpoint back, outside the strategy, to
    evaluate: no peer takes part any more.
    """
    import keras

    from model import multi_worker, training
    from model.precise_bn import PreciseBatchNorm
    config, cluster = plan.config, plan.cluster
    train_ds = strategy.distribute_datasets_from_function(lambda context: training_batches(
        plan, context.get_per_replica_batch_size(plan.global_batch),
        input_shard=(context.input_pipeline_id, context.num_input_pipelines)))
    own_shards = (cluster.index, cluster.num_workers)
    loop = multi_worker.CustomLoop(network, strategy, jit_compile=config["jit_compile"])
    precise = PreciseBatchNorm(network, training_batches(plan, config["batch_size"], own_shards,
                                                         for_statistics=True),
                               plan.bn_batches, all_reduce=loop.all_reduce_sum)
    if not cluster.is_chief:  # its checkpoints go to a temporary folder, unvalidated
        warnings.filterwarnings("ignore", message="Can save best model only")
    started = time.time()
    try:
        with multi_worker.worker_folder(plan.folder, cluster) as own:
            callbacks = keras.callbacks.CallbackList(
                training.make_callbacks(own), add_history=True, model=network,
                epochs=config["epochs"], steps=plan.steps, verbose=0)
            val_ds = validation_batches(plan, plan.global_batch) if cluster.is_chief else None
            epochs = loop.fit(train_ds, epochs=config["epochs"], steps=plan.steps,
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
    facts = fit_facts(epochs, time.time() - started, precise)
    if not cluster.is_chief:
        print(f"train: {cluster.name} done", flush=True)
        return Fitted(None, None, facts, 0)
    return Fitted(keras.saving.load_model(plan.folder.last_checkpoint, compile=False), None,
                  facts, precise.num_batches if precise.layers else 0)


def make_network(config, num_classes, run):
    """The network a run trains: fresh, from --init_from, or a resumed run's own."""
    import model as models
    from model import pretrained
    if run.resume_epoch() and os.path.exists(run.architecture):
        # BackupAndRestore restores the weights and optimizer; the architecture
        # is the run's own, so --init_from is not read again.
        return run.read_architecture()
    options = {} if config["model"] == "tutorial" else dict(
        width_multiplier=config["width_multiplier"], dropout=config["dropout"])
    if config["bn_epsilon"] is not None:
        options["bn_epsilon"] = config["bn_epsilon"]
    source = config["init_from"]
    kind = source and pretrained.source_kind(source)
    build = functools.partial(models.build_model, config["model"], num_classes,
                              config["num_frames"], config["image_size"], flip=config["flip"])
    if kind in ("named", "torch"):  # a name is downloaded once, then read from the cache
        return build(weights=source, **options)
    if not kind:
        return build(**options)
    loaded = pretrained.load_keras_source(source)
    if config["model"] != "tutorial":  # built as the source was, --bn_epsilon still wins
        options = {**pretrained.architecture_options(loaded), **options}
    network = build(**options)
    copied, head = pretrained.copy_weights(loaded, network)
    print(f"weights: {len(copied)} layers from {source}; "
          + ("its classifier kept" if head else "a new classifier"), flush=True)
    return network


def compile_network(network, config, steps):
    """The run's schedule, optimizer, loss and metrics; call under the strategy's scope."""
    from model import training
    rate = training.learning_rate(config["learning_rate"], config["schedule"],
                                  config["epochs"], steps, config["warmup_epochs"])
    return training.compile_model(
        network, optimizer=config["optimizer"], learning_rate=rate,
        weight_decay=config["weight_decay"], label_smoothing=config["label_smoothing"],
        jit_compile=config["jit_compile"])


def record_run(run, config, identity, resuming, **facts):
    """The resolved config next to the checkpoints, once the model is known to build."""
    from model import pretrained
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

    from model import evaluation
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
    from model import evaluation
    replicas = strategy.num_replicas_in_sync if strategy else 1
    return evaluation.evaluate_split(network, config["records"], test_split, spec, class_names,
                                     batch_size=config["batch_size"] * replicas,
                                     skip_corrupt=config["skip_corrupt"], strategy=strategy)


def write_reports(run, test_split, report, confusion, class_names, training_facts,
                  evaluated):
    """The learning curves, the confusion matrix and, last, `metrics.json`."""
    from model import evaluation
    evaluation.plot_learning_curves(run.history, run.learning_curves)
    return evaluation.write_report(run.metrics, run.confusion_matrix, test_split, report,
                                   confusion, class_names, training=training_facts,
                                   evaluated=evaluated)


def print_summary(run, test_split, report, evaluated):
    from model import TOP_K_ACCURACY
    print(f"train: {test_split} video accuracy {report['accuracy']:.3f} "
          f"(clip {report['clip_accuracy']:.3f}, top-5 {report[TOP_K_ACCURACY]:.3f}, "
          f"mean class {report['mean_class_accuracy']:.3f}) over {report['num_videos']} "
          f"videos, {evaluated['checkpoint']} model (epoch {evaluated['epoch']})",
          flush=True)
    print(f"train: metrics {run.metrics}", flush=True)
    print(f"train: plots {run.learning_curves}, {run.confusion_matrix}", flush=True)
    print(f"train: model {run.model} and {run.saved_model}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
