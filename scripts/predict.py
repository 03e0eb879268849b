"""Predicts the actions in video files, folders of them, or long recordings, with a run of train.py.

    python scripts/predict.py --model runs/demo VIDEO_OR_FOLDER [...] [--list paths.txt]
        [--output predictions.csv] [--top 5] [--batch_size 32] [--workers 2] [--saved_model]
    python scripts/predict.py --model runs/demo --timeline --output_dir timelines LONG.mp4
        [--stride 1] [--threshold 0.5] [--min_seconds 1]

Whole videos: one row per video (path, top classes and probabilities, clips,
seconds, error) as JSON lines or CSV, to --output or stdout, in input order; a
progress bar on a terminal's stderr. Each video's clips are the run's
evaluation clips, so a video's scores equal its evaluation's when it was in
the test records.

--timeline: windows of the model's clip span every --stride seconds, for
each video <name>.windows.jsonl (per-window top classes with start and end
seconds), <name>.segments.jsonl (stretches where one class stays on top) and
<name>.timeline.png in --output_dir, and videos.jsonl there, a row per video
(path, <name>, windows, duration, segments, error); frames stream, so any
length fits.

Probabilities in rows have 4 decimals. A video that cannot be read is a row
with its error (and no classes), and is listed on stderr with its reason,
while the rest go on. Exit status: 0, 1 if any video failed, 2 for a bad
command line.
"""

import contextlib
import os
import sys
import time

from model import import_tensorflow, quiet_tensorflow_logs  # light: no TensorFlow yet
from model.inference import cli
from preprocess import errors

quiet_tensorflow_logs()  # before TensorFlow loads: no CUDA-probe errors on CPU machines
from model.training.run_dir import RunDir  # noqa: E402

# --timeline's own flags and their defaults, which are filled in after parsing so
# that a flag given without --timeline is refused rather than ignored.
TIMELINE_FLAGS = {
    "stride": (1.0, "seconds between window starts"),
    "threshold": (0.5, "least top probability that puts a window in a segment"),
    "min_seconds": (1.0, "shortest segment kept, and longest gap bridged"),
}
OUTPUT_FORMATS = ("jsonl", "csv")


def build_parser():
    parser = errors.ArgumentParser(prog="python scripts/predict.py",
                                   description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("inputs", nargs="*", metavar="VIDEO_OR_FOLDER",
        help="video files, and folders searched recursively for video files")
    add("--model", required=True, help="run folder written by train.py")
    add("--list", help="text file of video paths, one a line")
    add("--saved_model", action="store_true",
        help="run the run's SavedModel instead of model.keras (same logits)")
    add("--top", type=int, default=5, help="classes per row (default: 5)")
    add("--output", help="file for the rows (default: stdout); .csv means CSV")
    add("--format", choices=OUTPUT_FORMATS,
        help="row format (default: from --output's extension, else jsonl)")
    add("--batch_size", type=int, default=32,
        help="clips per model call, gathered across videos (default: 32)")
    add("--workers", type=int, default=min(4, os.cpu_count() or 1),
        help="threads decoding videos while the model runs (default: cores, at most 4)")
    timeline = parser.add_argument_group("timeline of long videos")
    timeline.add_argument("--timeline", action="store_true",
                          help="classify windows along each video, and merge them into "
                               "segments")
    timeline.add_argument("--output_dir", help="folder of the timeline files (required "
                                               "with --timeline)")
    for flag, (default, meaning) in TIMELINE_FLAGS.items():
        timeline.add_argument(f"--{flag}", type=float, help=f"{meaning} (default: {default})")
    return parser


def check_args(args):
    """Refuses a bad request before any work; fills in the defaults that depend on others."""
    for flag, least in (("top", 1), ("batch_size", 1), ("workers", 1)):
        if getattr(args, flag) < least:
            raise errors.UsageError(f"--{flag} must be at least {least}, not "
                                 f"{getattr(args, flag)}")
    if not args.inputs and args.list is None:
        raise errors.UsageError("name video files or folders, or a --list file")
    given = [f"--{flag}" for flag in ("output_dir", *TIMELINE_FLAGS)
             if getattr(args, flag) is not None]
    if args.timeline:
        if args.output_dir is None:
            raise errors.UsageError("--timeline writes its files into --output_dir; add one")
        if args.output is not None:
            raise errors.UsageError("--timeline writes into --output_dir, not --output; "
                                 "drop --output")
        for flag, (default, _) in TIMELINE_FLAGS.items():
            if getattr(args, flag) is None:
                setattr(args, flag, default)
        if args.stride <= 0:
            raise errors.UsageError(f"--stride must be positive, not {args.stride}")
        if not 0 <= args.threshold <= 1:
            raise errors.UsageError(f"--threshold must be in [0, 1], not {args.threshold}")
        if args.min_seconds < 0:
            raise errors.UsageError(f"--min_seconds must be 0 or more, not {args.min_seconds}")
    elif given:
        raise errors.UsageError(f"{given[0]} only works with --timeline; add --timeline or "
                             f"drop {given[0]}")
    for flag, path in (("--output", args.output), ("--output_dir", args.output_dir)):
        wanted = "a file" if flag == "--output" else "a folder"
        if path and os.path.exists(path) and os.path.isdir(path) != (flag == "--output_dir"):
            raise errors.UsageError(f"{flag} {path} exists and is not {wanted}; name {wanted}")
    if args.format is None:
        args.format = "csv" if (args.output or "").lower().endswith(".csv") else "jsonl"
    run = RunDir(args.model)
    run.require(run.config, run.classes, run.saved_model if args.saved_model else run.model)
    return args


def main(argv=None):
    return errors.run_command(predict, argv)


def predict(argv):
    args = check_args(build_parser().parse_args(argv))
    videos = cli.find_videos(args.inputs, args.list)
    import_tensorflow()  # once the command line is checked, without its start-up notices
    from model.inference.predictor import Predictor
    predictor = Predictor(args.model, saved_model=args.saved_model)
    if args.timeline:
        failures = predict_timelines(predictor, videos, args)
    else:
        failures = predict_whole_videos(predictor, videos, args)
    report_failures(failures, len(videos))
    return 1 if failures else 0


def predict_whole_videos(predictor, videos, args):
    """Writes a row per video as it completes, a failed one's with its error; returns the
    failures `[(path, reason)]`."""
    from tqdm import tqdm

    from model.inference.predictor import VIDEO_FIELDS, RowWriter
    if args.output and os.path.dirname(args.output):
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
    failures, clips = [], 0
    started = time.perf_counter()
    with (open(args.output, "w", newline="", encoding="utf-8") if args.output
          else contextlib.nullcontext(sys.stdout)) as stream, \
            tqdm(total=len(videos), unit="video", desc="predict", file=sys.stderr,
                 disable=None) as bar:
        rows = RowWriter(stream, args.format, VIDEO_FIELDS, args.top)
        for prediction in predictor.predict_videos(videos, batch_size=args.batch_size,
                                                   workers=args.workers):
            bar.update()
            rows.write(predictor.row(prediction, args.top))
            if prediction.error:
                failures.append((prediction.item, prediction.error))
            clips += prediction.clips
    seconds = time.perf_counter() - started
    done = len(videos) - len(failures)
    print(f"predict: {done} video{'s' * (done != 1)}, {clips} clips in {seconds:.1f} s "
          f"({done / seconds:.2f} videos/s, {clips / seconds:.1f} clips/s)", file=sys.stderr)
    return failures


def predict_timelines(predictor, videos, args):
    """Writes each video's timeline files, and a row per video in the folder's list of
    videos; returns the failures `[(path, reason)]`."""
    from model.inference import timeline
    from model.inference.predictor import RowWriter
    os.makedirs(args.output_dir, exist_ok=True)
    failures = []
    index = timeline.TimelineFiles.index(args.output_dir, args.format)
    with open(index, "w", newline="", encoding="utf-8") as stream:
        rows = RowWriter(stream, args.format, timeline.INDEX_FIELDS)
        for path, name in zip(videos, timeline.output_names(videos)):
            row = predict_timeline(predictor, path, name, args)
            rows.write(row)
            if row["error"]:
                failures.append((path, row["error"]))
    print(f"a row per video: {index}")
    return failures


def predict_timeline(predictor, path, name, args):
    """Writes one video's timeline files; returns its row in the list of videos."""
    from tqdm import tqdm

    from model.inference import timeline
    from model.inference.predictor import VIDEO_ERRORS, describe
    windows = timeline.WindowClips(predictor, path, args.stride)
    scored, error = [], None
    with tqdm(unit="window", desc=os.path.basename(path), file=sys.stderr,
              disable=None) as bar:
        try:
            if not os.path.isfile(path):
                raise FileNotFoundError("no such file")
            for prediction in timeline.predict_windows(predictor, windows,
                                                       batch_size=args.batch_size):
                scored.append(prediction)
                bar.update()
        except VIDEO_ERRORS as failure:
            error = describe(failure)
    if not scored:
        return timeline.video_row(path, error=error)
    # A video that failed part way still gets the timeline of what decoded.
    duration = windows.duration or scored[-1].item.end
    found = timeline.segments(scored, duration, threshold=args.threshold,
                              min_seconds=args.min_seconds)
    files = timeline.TimelineFiles.of(args.output_dir, name, args.format)
    timeline.write_timeline(files, path, scored, found, predictor.class_names,
                            output_format=args.format, top=args.top)
    print(f"{path}: {timeline.describe_segments(found, predictor.class_names)}")
    print(f"  {len(scored)} windows of {duration:.1f} s: {files.windows}, "
          f"{files.segments}, {files.plot}")
    return timeline.video_row(path, name, scored, duration, found, error)


def report_failures(failures, total):
    if failures:
        print(f"predict: {len(failures)} of {total} videos failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
