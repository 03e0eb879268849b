"""A run's config: every default of `train.py`, its presets, its flags and their checks.

`resolve_config(argv)` turns a command line into the full, explicit config
of a run (command line over `--config` file over preset over `BASE`), checked
before any work, so a new flag is one line of `BASE` and one of
`build_parser` here, never more of `train.py`; a config file sets the same
settings (`model.training.config_file`). Importing this module is light (no
TensorFlow): a command line is checked before TensorFlow loads.
"""

import argparse
import dataclasses
import shlex
import sys

from model import PRECISIONS, STRATEGIES
from model.network import MODEL_NAMES
from model.network import weights as named_weights
from model.training import config_file, data_service
from preprocess.errors import ArgumentParser, UserError
from preprocess.manifest import MIN_CROP_SCALE

# -----------------------------------------------------------------------------
# Every default in one place. A preset fills in what the command line leaves
# unset; `BASE` fills in the rest.
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
    preset="tutorial",        # the TensorFlow tutorial's experiment, which this project reproduces
    width_multiplier=1.0,     # the paper's channel counts
    dropout=0.0,              # none, as the tutorial's model; R(2+1)D presets set their own
    warmup_epochs=0.0,        # none: the tutorial's constant rate has no warm-up
    weight_decay=0.0,         # none: Adam as the tutorial runs it
    label_smoothing=0.0,      # none: plain cross-entropy, as the tutorial
    step_jitter=0,            # training frame step varies by up to this much
    crop="resized",           # Inception-style random resized crops, or "random" crops
    crop_scale=MIN_CROP_SCALE,  # smallest area fraction of a resized crop
    flip=True,                # random flips, in the model; off where direction is the label
    samples_per_video=1,      # training clips per video read (repeated augmentation)
    precision="auto",         # model.training.precision: bf16 on 8.0+ GPUs, fp16 on 7.x, fp32 on CPUs
    jit_compile=False,        # XLA; worth it on GPUs, slow to compile on CPUs
    strategy="auto",          # mirrored over several local GPUs, else one device
    collective_timeout=300,   # multi_worker: seconds for the peers to join
    data_service=None,        # None: clips cut here; grpc://HOST:PORT: by a tf.data service
    data_service_timeout=30,  # seconds for its dispatcher to answer: ample if up, brief on a typo
    allow_cpu=False,          # train on the CPU although an NVIDIA GPU is there
    seed=0,                   # fixed, so that a rerun draws the same weights and clips
    deterministic=False,      # bit-exact reruns: deterministic ops and input order; slower
    eval_clips=1,             # clips per test video, averaged
    eval_crops=1,             # 1 (centre) or 3 (left, centre, right)
    steps_per_epoch=0,        # 0: one pass over the training videos (x samples_per_video)
    train_split="train",      # the split names python -m preprocess writes
    val_split="val",          # falls back to test when the records have no val
    test_split="test",        # falls back to val when the records have no test
    skip_corrupt=False,       # a corrupt record stops the run, naming the shard to replace
    precise_bn_batches=200,   # training batches that re-estimate BatchNorm statistics
    eval_checkpoint="last",   # the model evaluated and exported: last, or best on val
    init_from=None,           # weights to start from: a name of model.network.weights, .pth, .keras, run
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
        note = "; presets set their own: see --print_config" if varies else ""
        return f"{action.help} (default: {tutorial[action.dest]}{note})"


def build_parser(description=None):
    parser = ArgumentParser(
        prog="python train.py", description=description,
        argument_default=None, formatter_class=DefaultsFormatter)
    add = parser.add_argument
    # Required unless --print_config, which needs neither (resolve_command_line checks).
    add("--records", help="folder written by python -m preprocess (required, unless "
        "--print_config)")
    add("--output_dir", help="run folder: checkpoints, logs, reports, exports (required, "
        "unless --print_config)")
    add("--config", metavar="FILE",
        help="settings from a YAML or JSON file: the flags' names without --, and "
             "`preset`; a run's config.json is one. Flags given here override it, it "
             "overrides its preset. --records, --output_dir and --overwrite come from "
             "the command line only")
    add("--print_config", action="store_true",
        help="print the resolved settings as YAML, which --config reads back, and exit "
             "without training (--records and --output_dir not needed); e.g. python "
             "train.py --preset r2plus1d_18 --print_config shows that preset's settings")
    add("--overwrite", action="store_true",
        help="empty the run folder and train again (default: a finished run is left as "
             "it is, an interrupted one resumes, another config is refused)")
    add("--preset", choices=sorted(PRESETS), help="defaults to start from; "
        "--preset NAME --print_config shows one's settings")
    add("--model", choices=MODEL_NAMES, help="which network")
    add("--width_multiplier", type=float, help="scales R(2+1)D channel counts")
    add("--dropout", type=float, help="dropout before the logits (R(2+1)D)")
    add("--init_from", help="start from these weights: published ones by name ("
        f"{', '.join(named_weights.NAMED_WEIGHTS)}; downloaded once into Keras's cache, "
        "$KERAS_HOME, and checked against their hash), a torchvision-layout R(2+1)D "
        "checkpoint (.pth, read without PyTorch), a .keras file or a run folder of ours; "
        "the classifier is new when the class count differs. A resumed run continues from "
        "its own checkpoint instead")
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
    add("--data_service", metavar="grpc://HOST:PORT",
        help="cut the training clips on the workers of the tf.data service whose "
             "dispatcher is at this address (python -m model.training.data_service; "
             "README: Bigger machines); evaluation, validation and precise BatchNorm "
             "read on this machine")
    add("--data_service_timeout", type=int,
        help="seconds to wait for --data_service's dispatcher to answer before stopping "
             "with an error")
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


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """A checked command line: the run's config, and whether to print it instead."""

    config: dict
    print_config: bool


def resolve_config(argv, description=None):
    """Command line over config file over preset over base: the full config of a run.

    Args:
        argv: the command line, without the program.
        description: the first paragraph of `--help`. Defaults to None.
    """
    return resolve_command_line(argv, description).config


def resolve_command_line(argv, description=None):
    """The command line, read and checked; see `resolve_config`.

    With `--print_config`, `--records` and `--output_dir` may be missing, and
    are then missing from the config.
    """
    parser = build_parser(description)
    args = vars(parser.parse_args(argv))
    path, print_config = args.pop("config"), bool(args.pop("print_config"))
    given = {k: v for k, v in args.items() if v is not None}
    missing = [f"--{key}" for key in ("records", "output_dir") if key not in given]
    if missing and not print_config:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    from_file = (config_file.read_settings(path, parser, nullable=[
        key for key, value in BASE.items() if value is None]) if path else {})
    preset = given.get("preset", from_file.get("preset", BASE["preset"]))
    config = {**BASE, **PRESETS[preset], **from_file, **given}
    config["overwrite"] = bool(config.get("overwrite"))
    config["allow_cpu"] = bool(config["allow_cpu"])
    check_config(config, given={**{key: path for key in from_file},
                                **{key: None for key in given}})  # a flag wins
    if "preset" in given and from_file:  # once the command is accepted: an error comes alone
        _note_preset_under_file(preset, from_file, given, path)
    return CommandLine(config, print_config)


def _note_preset_under_file(preset, from_file, given, path):
    """Says which of a `--preset` flag's settings the `--config` file's own lines replace.

    The order of precedence (flags, file, preset) means a preset named on the
    command line sets only what the file leaves out: a run's `config.json`
    leaves out nothing.
    """
    hidden = [key for key, value in PRESETS[preset].items()
              if key in from_file and key not in given and from_file[key] != value]
    if hidden:
        shown = ", ".join(f"{key} {from_file[key]}" for key in hidden[:4])
        more = f" and {len(hidden) - 4} more" if len(hidden) > 4 else ""
        print(f"train: note: --preset {preset} sets only what {path} leaves out; the file's "
              f"own values win for {shown}{more} (pass those as flags to change them)",
              file=sys.stderr, flush=True)


def format_settings(config, argv=()):
    """The settings of a resolved config as YAML that `--config` reads back the same.

    Args:
        config: a resolved config.
        argv: the command line it was resolved from, named in a comment.
    """
    return config_file.dump_settings(config, build_parser(), header=(
        f"The settings of: python train.py {shlex.join(argv)}\n"
        "Train with: python train.py --config THIS_FILE --records RECORDS --output_dir RUN"))


def check_config(config, given=None):
    """Every value and combination, before any work: one `TrainError` naming the fix.

    Args:
        config: a resolved config.
        given: the keys the user gave, each to the `--config` file's path
            if that file gave it, so that a message can tell a value the user
            passed from one their preset set, and a flag from a file's line.
            Defaults to None: every value was passed as a flag.
    """
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
        (config["data_service"] is None
         or not data_service.address_problem(config["data_service"]),
         lambda: data_service.address_problem(config["data_service"])),
        (config["data_service"] is None or not config["deterministic"],
         "--deterministic cannot be used with --data_service, whose workers hand out "
         "batches in the order they finish them; drop one of the two"),
        (config["data_service_timeout"] >= 1,
         "--data_service_timeout must be at least 1 second"),
        (config["strategy"] != "multi_worker" or not config["overwrite"],
         "--overwrite cannot be used with --strategy multi_worker, where workers start "
         "at different moments; empty the --output_dir first, then launch every worker"),
        (config["model"] != "tutorial" or (config["width_multiplier"] == 1.0
                                           and config["dropout"] == 0.0),
         lambda: _refused(config, given, ("width_multiplier", "dropout"),
                          "the tutorial model has a fixed width and no dropout",
                          "or choose an r2plus1d --model")),
        (misfit is None, misfit),
        (not named or config["width_multiplier"] == 1.0,
         lambda: _refused(config, given, ("width_multiplier",),
                          f"--init_from {config['init_from']} fixes the network's width")),
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
            raise TrainError(message() if callable(message) else message)


def _refused(config, given, keys, rule, alternative=None):
    """The message of a rule that refuses values other than BASE's for `keys`.

    A value the user passed is to be dropped: a flag from the command line,
    a line from the `--config` file. One their preset set is named with the
    preset, and to be passed back to BASE's, since there is no flag of
    theirs to drop; so is one the user passed over a preset that sets it too,
    which dropping would bring back.
    """
    given = {key: None for key in keys} if given is None else given
    by_preset = [key for key in keys if config[key] != BASE[key]
                 and key not in given and key in PRESETS[config["preset"]]]
    passed = [key for key in keys if key not in by_preset and config[key] != BASE[key]]
    if not by_preset and not passed:
        passed = list(keys)
    # What the user gave over a preset that sets it too is to be set back, not dropped.
    resets = [key for key in passed
              if PRESETS[config["preset"]].get(key, BASE[key]) != BASE[key]]
    flags = [f"--{key}" for key in passed if key not in resets and not given.get(key)]
    fixes = ([f"pass --{key} {BASE[key]}" for key in by_preset]
             + [f"set {key}: {BASE[key]} in {given[key]}" if given.get(key)
                else f"pass --{key} {BASE[key]}" for key in resets]
             + ([f"drop {' and '.join(flags)}"] if flags else [])
             + [f"drop the line {key}: from {given[key]}" for key in passed
                if key not in resets and given.get(key)])
    head = (f"--preset {config['preset']} sets "
            + " and ".join(f"--{key} {config[key]}" for key in by_preset) + "; "
            if by_preset else "")
    return (f"{head}{rule}; {(', ' if by_preset else ' and ').join(fixes)}"
            + (f" {alternative}" if alternative else ""))
