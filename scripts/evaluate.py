"""Evaluates a trained run on any records: another split, another dataset's, other views.

    python scripts/evaluate.py --model runs/r18 --records records/ucf101 --split test
    python scripts/evaluate.py --model runs/r18 --records records/ucf101 --split test \\
        --eval_clips 10 --eval_crops 3 --output_dir evaluations/r18_10x3

Writes what training's final evaluation writes, metrics.json and
confusion_matrix.png, into a folder of its own (by default
RUN_eval/RECORDS_SPLIT_CLIPSxCROPS beside the run); the run folder is only
read. With the run's own test records and views its figures equal the run's
metrics.json. Records must hold the run's classes in the run's order.
"""

import dataclasses
import json
import os
import sys
import time

from model import import_tensorflow, quiet_tensorflow_logs  # light: no TensorFlow yet
from preprocess import errors

quiet_tensorflow_logs()  # before TensorFlow loads: no CUDA-probe errors on CPU machines
from model.inference import evaluation  # noqa: E402  (numpy, no TensorFlow)
from model.training.run_dir import RunDir, fingerprint  # noqa: E402
from preprocess import manifest as manifest_lib  # noqa: E402


def build_parser():
    parser = errors.ArgumentParser(prog="python scripts/evaluate.py",
                                   description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="run folder written by train.py")
    add("--records", required=True, help="folder written by python -m preprocess")
    add("--split", default="test", help="split to evaluate (default: test)")
    add("--eval_clips", type=int, help="clips per video, evenly spaced (default: the run's)")
    add("--eval_crops", type=int, choices=(1, 3),
        help="crops per clip: centre, or along the long side (default: the run's)")
    add("--output_dir", help="folder of the report (default: RUN_eval/"
                             "RECORDS_SPLIT_CLIPSxCROPS beside the run)")
    add("--batch_size", type=int, help="clips per batch (default: the run's batch size)")
    add("--skip_corrupt", action="store_true",
        help="skip unreadable records (logged) instead of failing")
    return parser


def main(argv=None):
    return errors.run_command(evaluate, argv)


def evaluate(argv):
    args = build_parser().parse_args(argv)
    run, config, class_names = check_run(args.model)
    import_tensorflow()  # the clips' spec needs it; without its start-up notices
    spec = views(config, args)
    manifest = check_records(args.records, args.split, class_names, spec)
    output_dir = check_output_dir(args, run, spec)

    import keras

    import model.network.layers  # noqa: F401  registers our layers for loading
    from preprocess import reader
    reader.check_shards(manifest_lib.shard_paths(args.records, manifest, args.split),
                        manifest["splits"][args.split], args.skip_corrupt)
    network = keras.saving.load_model(run.model, compile=False)
    started = time.perf_counter()
    try:
        report, confusion = evaluation.evaluate_split(
            network, args.records, args.split, spec, class_names,
            batch_size=args.batch_size or config["batch_size"], skip_corrupt=args.skip_corrupt)
    except Exception as error:  # frames that fail their CRCs: one line, as train.py's
        unreadable = reader.describe_read_error(error, args.records)
        if unreadable is None:
            raise
        raise errors.UserError(unreadable) from None
    seconds = time.perf_counter() - started
    os.makedirs(output_dir, exist_ok=True)
    report_files = RunDir(output_dir)  # the same file names as a run's report
    evaluated = {"run": os.path.abspath(run.path), "model": os.path.abspath(run.model),
                 "records": os.path.abspath(args.records),
                 "records_fingerprint": fingerprint(args.records), "split": args.split,
                 "views": spec.views}
    evaluation.write_report(report_files.metrics, report_files.confusion_matrix, args.split,
                            report, confusion, class_names, evaluated=evaluated)
    print_summary(args.split, report, spec, report_files, seconds)
    return 0


def check_run(path):
    """The run folder, its config and its classes; refuses a folder train.py did not finish."""
    run = RunDir(path)
    run.require(run.config, run.classes, run.model)
    with open(run.classes) as handle:
        return run, run.read_config()["config"], json.load(handle)


def views(config, args):
    """The run's evaluation clips, with the clips and crops the command line asks for."""
    from preprocess.reader import ClipSpec
    if args.eval_clips is not None and args.eval_clips < 1:
        raise errors.UsageError(f"--eval_clips must be at least 1, not {args.eval_clips}")
    if args.batch_size is not None and args.batch_size < 1:
        raise errors.UsageError(f"--batch_size must be at least 1, not {args.batch_size}")
    spec = ClipSpec.for_run(config).evaluation
    return dataclasses.replace(
        spec, num_clips=spec.num_clips if args.eval_clips is None else args.eval_clips,
        num_crops=spec.num_crops if args.eval_crops is None else args.eval_crops)


def check_records(records, split, class_names, spec):
    """The records' manifest, once their split, classes and frame size fit the run."""
    manifest = manifest_lib.read_manifest(records)
    manifest_lib.shard_paths(records, manifest, split)  # the split exists and has videos
    theirs = manifest["classes"]
    if theirs != class_names:
        if set(theirs) == set(class_names):
            what = "the run's classes in another order"
        else:
            missing = [c for c in class_names if c not in theirs]
            extra = [c for c in theirs if c not in class_names]
            what = ", ".join(filter(None, [
                f"lack {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                if missing else "",
                f"add {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"
                if extra else ""]))
            what = f"other classes than the run's ({what})"
        raise errors.UsageError(f"{records} holds {what}; preprocess them with the run's "
                                "classes.json as --class_names")
    manifest_lib.check_frame_size(
        manifest, records, spec.image_size,
        "the run's {size}-pixel clips are larger than the {smallest}-pixel frames in "
        "{records}", "preprocess them with --image_size {size} or more")
    return manifest


def check_output_dir(args, run, spec):
    """The report's folder, which must lie outside the run folder."""
    if args.output_dir is None:
        records = os.path.basename(os.path.normpath(args.records))
        args.output_dir = os.path.join(
            os.path.normpath(run.path) + "_eval",
            f"{records}_{args.split}_{spec.num_clips}x{spec.num_crops}")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise errors.UsageError(f"--output_dir {args.output_dir} is a file; name a folder")
    inside = os.path.realpath(args.output_dir)
    run_path = os.path.realpath(run.path)
    if os.path.commonpath([inside, run_path]) == run_path:
        raise errors.UsageError(f"--output_dir {args.output_dir} is inside the run folder, "
                                "which evaluate.py never changes; choose a folder outside it")
    return args.output_dir


def print_summary(split, report, spec, report_files, seconds):
    print(f"evaluate: {evaluation.accuracy_summary(split, report)}, {spec.num_clips} clip(s) "
          f"x {spec.num_crops} crop(s)", flush=True)
    print(f"evaluate: {report['num_videos']} videos, {report['num_clips']} clips in "
          f"{seconds:.1f} s ({report['num_videos'] / seconds:.2f} videos/s, "
          f"{report['num_clips'] / seconds:.1f} clips/s)", flush=True)
    print(f"evaluate: metrics {report_files.metrics}", flush=True)
    print(f"evaluate: plot {report_files.confusion_matrix}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
