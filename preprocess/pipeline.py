"""The Beam job that decodes every video once into sharded TFRecords.

Run it as `python -m preprocess --source SRC --output_dir OUT [options]
[Beam pipeline options]`; `run(argv)` is what the command and the tests call.
The driver lists the source and assigns splits and labels before any Beam
work, so a bad request fails at once. The pipeline then reshuffles the video
list, decodes each video on the workers into fragment files, cuts each
split's shards from them (`preprocess.shards`), and routes unreadable videos
to `failures.jsonl`. The launcher checks the counts the pipeline reports,
without opening a shard, and writes the manifest last.
"""

import collections
import contextlib
import dataclasses
import datetime
import difflib
import glob
import json
import os
import shutil
import sys

import apache_beam as beam
import cv2
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from preprocess import __version__
from preprocess import manifest as manifest_lib
from preprocess import layouts, progress, schema, shards, official_lists, splits, video
from preprocess.errors import ArgumentParser, UserError
from preprocess.sources import is_remote_url, open_source

# The command that installs Beam's filesystem of a remote scheme (setup.py's extras).
FILESYSTEM_EXTRAS = {"gs": "pip install -e .[gcp]"}
# The flags that name a file or folder, which may be remote.
PATH_FLAGS = ("source", "output_dir", "split_lists", "annotations", "class_names")

# What the pipeline writes beside the shards; the launcher reads and removes
# the first two, and `failures.jsonl` stays.
JOB_OUTPUTS = {"summary": "_summary.json", "shards": "_shards.jsonl",
               "failures": manifest_lib.FAILURES_NAME}


class PreprocessError(UserError):
    """A request the job cannot carry out; the message says what to fix."""


class PreprocessOptions(PipelineOptions):
    """The job's own flags, read with `options.view_as(PreprocessOptions)`.

    Every other flag goes to Beam. A help text shows its default with
    `%(default)s`; the flags without one say what their absence means.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--source",
                            help="folder (local or gs://), .zip, or http(s):// URL of a zip")
        parser.add_argument("--layout", choices=layouts.LAYOUTS, default="auto",
                            help="how files become labelled videos: ucf101 names, "
                                 "class_folders (<class>/<video>, optionally below "
                                 "train/val/test), annotations (a CSV), hmdb51 (with "
                                 "its split files); auto picks one (default %(default)s)")
        parser.add_argument("--annotations",
                            help="CSV with path,label[,split][,group] or Kinetics' "
                                 "label,youtube_id,time_start,time_end,split; a local "
                                 "or gs:// path or a member of the source zip "
                                 "(default: none)")
        parser.add_argument("--output_dir",
                            help="where to write <split>/ shards, manifest.json, "
                                 "failures.jsonl (local or gs://)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace records already in --output_dir (default: refuse)")
        group = parser.add_argument_group("splits")
        group.add_argument("--split_lists",
                           help="folder or zip of official lists: UCF101's classInd.txt, "
                                "trainlist0K.txt, testlist0K.txt or HMDB51's "
                                "<class>_test_splitK.txt (default: none)")
        group.add_argument("--split_index", type=int, default=1,
                           help="which official split, 1-3 (default %(default)s)")
        group.add_argument("--per_class",
                           help="group-aware subset, clips per class and split, "
                                "e.g. train=30,val=10,test=10 (default: none)")
        group.add_argument("--split_fractions",
                           help="stratified group-aware split of every class, e.g. "
                                "train=0.7,val=0.1,test=0.2 (default: none)")
        group.add_argument("--class_names",
                           help="file fixing the label order: one class per line, or "
                                "classInd.txt's '1 Name' (default: sorted names)")
        group.add_argument("--num_classes", type=int,
                           help="use the first N classes in sorted order (default: all)")
        group.add_argument("--classes",
                           help="comma-separated class names to use (default: all)")
        group.add_argument("--seed", type=int, default=0,
                           help="seed of --per_class and --split_fractions "
                                "(default %(default)s)")
        group = parser.add_argument_group("frames")
        group.add_argument("--fps", type=float,
                           help="frame rate to keep (skips frames); default: source rate")
        group.add_argument("--max_frames", type=int, default=1800,
                           help="frames kept per video at most (default %(default)s: "
                                "72 s at 25 fps, every UCF101 video)")
        group.add_argument("--resize", choices=video.RESIZE_POLICIES,
                           default="short_side",
                           help="short_side keeps the aspect; pad makes a padded square "
                                "as the tutorial does (default %(default)s)")
        group.add_argument("--image_size", type=int, default=128,
                           help="short side (short_side) or square side (pad) "
                                "(default %(default)s)")
        group.add_argument("--jpeg_quality", type=int, default=90,
                           help="JPEG quality 1-100 (default %(default)s)")
        group.add_argument("--num_shards", type=int, default=0,
                           help="shards per split; 0 sizes them to ~150 MB "
                                "(default %(default)s)")


@dataclasses.dataclass(frozen=True)
class SplitRequest:
    """`--per_class`, `--split_fractions` and `--classes`, parsed once by `check_args`."""
    per_class: dict = None
    split_fractions: dict = None
    classes: list = None


class VideoUnavailable(Exception):
    """A listed video that the layout already found missing."""


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """A video selected for a split, with its label."""
    ref: object
    split: str
    label: int


class DecodeVideoFn(beam.DoFn):
    """Decodes, resizes and JPEG-encodes each video into a record of a fragment file.

    Emits, when its bundle ends, the bundle's `shards.Fragment`s. A video that
    cannot be used goes to the `failed` output with the reason; it never
    raises, so one bad file cannot stop the job.
    """
    FAILED = "failed"

    def __init__(self, source, output_dir, *, fps, max_frames, resize, image_size,
                 jpeg_quality, progress=None):
        self.source_spec = source
        self.output_dir = output_dir
        self.fps = fps
        self.max_frames = max_frames
        self.resize = resize
        self.image_size = image_size
        self.jpeg_quality = jpeg_quality
        self.progress = progress
        self.decoded = beam.metrics.Metrics.counter("preprocess", "videos_written")
        self.failed = beam.metrics.Metrics.counter("preprocess", "videos_failed")
        self.frames = beam.metrics.Metrics.counter("preprocess", "frames_written")

    def setup(self):
        # The runner parallelises over videos; OpenCV's own threads would only
        # oversubscribe the cores.
        cv2.setNumThreads(1)
        self._source = open_source(self.source_spec)

    def teardown(self):
        self._source.close()

    def start_bundle(self):
        self._writer = shards.FragmentWriter(self.output_dir)

    def process(self, task):
        ref = task.ref
        try:
            if ref.problem:
                raise VideoUnavailable(ref.problem)
            with self._source.local_copy(ref) as path:
                jpegs, height, width, fps = video.encode_video(
                    path, resize=self.resize, image_size=self.image_size,
                    jpeg_quality=self.jpeg_quality, fps=self.fps,
                    max_frames=self.max_frames)
            example = schema.encode_video_example(
                jpegs, label=task.label, label_text=ref.class_name,
                video_id=ref.video_id, group=ref.group, clip=ref.clip,
                height=height, width=width, fps=fps)
        except Exception as error:  # Any failure is the video's, not the job's.
            self.failed.inc()
            reason = (str(error) if isinstance(error, VideoUnavailable)
                      else f"{type(error).__name__}: {error}")
            yield beam.pvalue.TaggedOutput(self.FAILED, {
                "path": ref.location, "video_id": ref.video_id,
                "split": task.split, "class": ref.class_name, "reason": reason})
        else:
            self._writer.write(task.split, ref.video_id, example,
                               (ref.class_name, len(jpegs), height, width))
            self.decoded.inc()
            self.frames.inc(len(jpegs))
        finally:
            if self.progress:
                progress.tick(self.progress)

    def finish_bundle(self):
        for fragment in self._writer.close():
            yield WindowedValue(fragment, MIN_TIMESTAMP, [GlobalWindow()])


class DecodeVideos(beam.PTransform):
    """Spreads the video list over workers and decodes it.

    Returns a tagged result with the fragments as `fragments` and failures
    as `failed`.
    """

    def __init__(self, decode_fn):
        super().__init__()
        self.decode_fn = decode_fn

    def expand(self, tasks):
        return (tasks
                # Reshuffle the small list, not the decoded frames: it breaks
                # fusion with Create so the decode work spreads over workers.
                | "Reshuffle" >> beam.Reshuffle()
                | "Decode" >> beam.ParDo(self.decode_fn).with_outputs(
                    DecodeVideoFn.FAILED, main="fragments"))


class WriteShards(beam.PTransform):
    """Cuts the fragments into each split's shards and writes them in parallel.

    Returns one manifest entry per shard: split, path, records, bytes.
    """

    def __init__(self, output_dir, split_shards):
        super().__init__()
        self.output_dir = output_dir
        self.split_shards = split_shards

    def expand(self, fragments):
        return (fragments
                | "CollectFragments" >> beam.combiners.ToList()
                | "PlanShards" >> beam.FlatMap(shards.plan_shards, self.output_dir,
                                               self.split_shards)
                | "SpreadShards" >> beam.Reshuffle()
                | "CopyRanges" >> beam.Map(shards.write_shard))


class SummariseFn(beam.CombineFn):
    """Counts videos and frames per split and class, and collects frame sizes."""

    def create_accumulator(self):
        return {"videos": collections.Counter(), "frames": collections.Counter(),
                "sizes": set()}

    def add_input(self, acc, fragment):
        for class_name, num_frames, height, width in fragment.videos:
            acc["videos"][(fragment.split, class_name)] += 1
            acc["frames"][fragment.split] += num_frames
            acc["sizes"].add((height, width))
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["videos"].update(acc["videos"])
            merged["frames"].update(acc["frames"])
            merged["sizes"] |= acc["sizes"]
        return merged

    def extract_output(self, acc):
        return json.dumps({
            "videos": [[split, cls, n] for (split, cls), n in sorted(acc["videos"].items())],
            "frames": dict(acc["frames"]),
            "sizes": sorted(acc["sizes"]),
        })


# ---------------------------------------------------------------------------
# Driver side: everything decided before the pipeline starts.
# ---------------------------------------------------------------------------

def plan_tasks(args, request):
    """Lists the source under its layout and assigns each chosen video a split and label.

    `request` is the `SplitRequest` that `check_args` parsed.

    Returns:
        `(listing, classes, tasks, split_spec)`.
    """
    source = open_source(args.source)
    try:
        listing = layouts.list_source(source, layout=args.layout,
                                      annotations=args.annotations,
                                      split_lists=args.split_lists,
                                      split_index=args.split_index, name=args.source)
        class_names = read_class_names(args.class_names, source) if args.class_names else None
    finally:
        source.close()
    if not listing.videos:
        raise PreprocessError(
            f"no videos of layout {listing.layout} found in {args.source}; "
            + ("UCF101 names look like v_<Class>_gNN_cNN.avi; " if listing.layout == "ucf101"
               else "") + "check --source and --layout")
    if class_names:
        strangers = sorted({v.class_name for v in listing.videos} - set(class_names))
        if strangers:
            raise PreprocessError(f"class {strangers[0]} of the source is not in "
                                  f"--class_names {args.class_names}; add it there")
    classes, split_of, spec = splits.assign_splits(
        listing.videos, classes=class_names or listing.classes,
        per_class=request.per_class, split_fractions=request.split_fractions,
        num_classes=args.num_classes, chosen=request.classes, seed=args.seed,
        layout_spec=listing.split_spec)
    unmatched = [listing.unmatched_lists[c] for c in classes if c in listing.unmatched_lists]
    if unmatched:
        raise PreprocessError(
            f"--split_lists file {unmatched[0]} names no video of {args.source}; check "
            "that --source and --split_lists belong together, or leave the class out "
            "with --classes")
    label_of = {name: index for index, name in enumerate(classes)}
    tasks = [VideoTask(v, split_of[v.video_id], label_of[v.class_name])
             for v in listing.videos if v.video_id in split_of]
    if not tasks:
        raise PreprocessError(f"no video of {args.source} falls in a split; check "
                              "--classes and the layout's split folders or column")
    return listing, classes, tasks, spec


def read_class_names(path, source):
    """The `--class_names` file, from a local or `gs://` path or the source zip."""
    text, _ = layouts.read_text_file(path, source, "--class_names")
    return official_lists.parse_class_names(text, f"--class_names {path}")


def print_counters(result):
    """Prints the job's Beam counters, as the runner reports them."""
    query = result.metrics().query(MetricsFilter().with_namespace("preprocess"))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    if counters:
        print("preprocess: counters " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())),
              flush=True)


def prepare_output_dir(output_dir, overwrite):
    """Refuses to mix runs: an output with records needs `--overwrite`, which clears it."""
    old = [m.path for pattern in (manifest_lib.MANIFEST_NAME,
                                  "*/*" + manifest_lib.RECORD_SUFFIX,
                                  *JOB_OUTPUTS.values())
           for m in FileSystems.match([FileSystems.join(output_dir, pattern)])[0].metadata_list]
    if old and not overwrite:
        raise PreprocessError(f"{output_dir} already holds records; pass --overwrite "
                              "to replace them or choose another --output_dir")
    remove_beam_temp(output_dir)
    if old:
        # The manifest goes first: a folder without one reads as unfinished.
        old.sort(key=lambda path: not path.endswith(manifest_lib.MANIFEST_NAME))
        FileSystems.delete(old)


def remove_beam_temp(output_dir):
    """Removes the fragments and the `beam-temp-*` folders Beam's sinks can leave."""
    if FileSystems.get_scheme(output_dir) is None:
        for pattern in (shards.FRAGMENTS, "beam-temp-*", "*/beam-temp-*"):
            for path in glob.glob(os.path.join(output_dir, pattern)):
                shutil.rmtree(path, ignore_errors=True)
    else:  # Object stores have no empty folders: deleting the files is enough.
        leftovers = [m.path for m in FileSystems.match(
            [FileSystems.join(output_dir, "**")])[0].metadata_list
                     if "/beam-temp-" in m.path or f"/{shards.FRAGMENTS}/" in m.path]
        if leftovers:
            FileSystems.delete(leftovers)


def is_local_runner(options):
    """Whether the job runs on this machine's DirectRunner (the default)."""
    return options.view_as(StandardOptions).runner in (None, "DirectRunner", "direct")


def use_local_defaults(options, given):
    """Runs the DirectRunner on a thread per local core unless the command line says otherwise.

    Threads, not processes: the work is OpenCV's decode, resize and JPEG
    encode, which release the GIL, and threads skip starting a Python per
    worker. `--direct_running_mode multi_processing` still picks processes.
    `given` holds the names of the flags on the command line.
    """
    direct = options.view_as(DirectOptions)
    if "direct_running_mode" not in given:
        direct.direct_running_mode = "multi_threading"
    if direct.direct_running_mode != "in_memory" and "direct_num_workers" not in given:
        direct.direct_num_workers = 0  # one worker per core
    if "default_sdk_harness_log_level" not in given:
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"


class OneLineParser(ArgumentParser):
    """The entry points' one-line parser, which also takes Beam's templated options."""

    def add_value_provider_argument(self, *args, **kwargs):
        # Templated options of other PipelineOptions classes: a plain flag here,
        # where only the name and the type of its value are checked.
        self.add_argument(*args, **kwargs)


def build_parser():
    """The job's own flags, as `--help` shows them."""
    parser = OneLineParser(
        prog="python -m preprocess",
        description="Decode a labelled video set once into sharded TFRecords.",
        epilog="Any other flag is a Beam pipeline option, e.g. --runner "
               "DataflowRunner --project P --region R --temp_location gs://... "
               "--setup_file ./setup.py",
        hint="see python -m preprocess --help")
    PreprocessOptions._add_argparse_args(parser)
    return parser


def option_classes(cls=PipelineOptions):
    """Every `PipelineOptions` class the installed Beam (and this job) registers."""
    for subclass in cls.__subclasses__():
        yield subclass
        yield from option_classes(subclass)


def pipeline_options(argv):
    """The job's `PipelineOptions`: every flag checked, and local defaults where none is given.

    `--help` prints the job's flags and exits. A flag that neither the job
    nor any `PipelineOptions` class of the installed Beam knows, or a bad
    value, raises `PreprocessError`; Beam itself would only warn and drop
    it, and a misspelt job flag would quietly run with its default.
    """
    _, beam_args = build_parser().parse_known_args(argv)
    parser = OneLineParser(add_help=False, conflict_handler="resolve",
                           hint="see Beam's pipeline options")
    for cls in option_classes():
        # Subclasses that inherit their parent's flags add none of their own.
        if "_add_argparse_args" in cls.__dict__:
            cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    if unknown:
        raise PreprocessError(unknown_flag_message(
            unknown, [name for action in parser._actions for name in action.option_strings]))
    options = PipelineOptions(argv)
    if is_local_runner(options):
        use_local_defaults(options, {arg[2:].split("=", 1)[0] for arg in argv
                                     if arg.startswith("--")})
    return options


def unknown_flag_message(unknown, known):
    """What to say about the first argument no parser took, with the closest known flag."""
    flag = next((arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        return (f"unexpected argument {unknown[0]}; every value follows its flag, "
                "e.g. --source DIR")
    close = difflib.get_close_matches(flag, known, n=1)
    return (f"unknown flag {flag}, neither the job's nor a Beam pipeline option; "
            + (f"did you mean {close[0]}?" if close else
               "see python -m preprocess --help for the job's flags"))


def check_args(args):
    """Refuses a bad request before any work.

    Returns:
        The `SplitRequest` parsed from the flags, which nothing parses again.
    """
    if not args.source or not args.output_dir:
        raise PreprocessError("--source and --output_dir are required; see "
                              "python -m preprocess --help")
    check_filesystems(args)
    if args.image_size < 8:
        raise PreprocessError(f"--image_size {args.image_size} is too small; use 8 or more")
    if not 1 <= args.jpeg_quality <= 100:
        raise PreprocessError(f"--jpeg_quality must be 1-100, not {args.jpeg_quality}")
    if args.fps is not None and args.fps <= 0:
        raise PreprocessError(f"--fps must be positive, not {args.fps}")
    if args.max_frames is not None and args.max_frames <= 0:
        raise PreprocessError(f"--max_frames must be positive, not {args.max_frames}")
    if args.num_shards < 0:
        raise PreprocessError(f"--num_shards must be 0 (auto) or more, not {args.num_shards}")
    if args.num_classes is not None and args.num_classes < 1:
        raise PreprocessError(f"--num_classes must be at least 1, not {args.num_classes}")
    if args.split_index not in (1, 2, 3):
        raise PreprocessError(f"--split_index must be 1, 2 or 3, not {args.split_index}")
    for a, b in (("split_lists", "per_class"), ("split_lists", "split_fractions"),
                 ("per_class", "split_fractions"), ("class_names", "classes"),
                 ("class_names", "num_classes")):
        if getattr(args, a) and getattr(args, b):
            raise PreprocessError(f"pass either --{a} or --{b}, not both")
    if args.annotations and args.layout not in ("auto", "annotations"):
        raise PreprocessError(f"--annotations needs --layout annotations (or auto), "
                              f"not {args.layout}")
    if args.layout == "annotations" and not args.annotations:
        raise PreprocessError("--layout annotations needs --annotations FILE")
    if args.layout == "hmdb51" and not args.split_lists:
        raise PreprocessError("--layout hmdb51 needs --split_lists, the folder or zip of "
                              "HMDB51's <class>_test_splitK.txt files")
    if args.layout == "class_folders" and args.split_lists:
        raise PreprocessError("--split_lists belongs to --layout ucf101 or hmdb51; for "
                              "class folders use split folders, --per_class or "
                              "--split_fractions")
    try:
        return SplitRequest(
            per_class=splits.parse_per_class(args.per_class) if args.per_class else None,
            split_fractions=(splits.parse_fractions(args.split_fractions)
                             if args.split_fractions else None),
            classes=[c.strip() for c in args.classes.split(",")] if args.classes else None)
    except splits.SplitError as error:
        raise PreprocessError(str(error)) from None


def check_filesystems(args):
    """Refuses a remote path (`gs://...`) whose Beam filesystem is not installed.

    Beam would fail deep inside the listing or the output check instead.
    """
    for flag in PATH_FLAGS:
        path = getattr(args, flag)
        scheme = FileSystems.get_scheme(path) if path and not is_remote_url(path) else None
        if scheme is None:
            continue
        try:
            FileSystems.get_filesystem(path)
        except ValueError:
            fix = (f"run {FILESYSTEM_EXTRAS[scheme]}" if scheme in FILESYSTEM_EXTRAS
                   else "install the apache-beam extra that provides it")
            raise PreprocessError(f"--{flag} {path} needs Beam's {scheme}:// filesystem, "
                                  f"which is not installed; {fix}") from None


def build_pipeline(pipeline, tasks, decode_fn, output_dir, split_shards):
    """The job as a handful of labelled steps: list, decode, cut shards, summarise."""
    decoded = (pipeline
               | "ListVideos" >> beam.Create(tasks)
               | "DecodeVideos" >> DecodeVideos(decode_fn))
    for name, lines in (
            ("shards", decoded.fragments
             | "WriteShards" >> WriteShards(output_dir, split_shards)
             | "ShardToJson" >> beam.Map(json.dumps, sort_keys=True)),
            ("summary", decoded.fragments
             | "Summarise" >> beam.CombineGlobally(SummariseFn())),
            ("failures", decoded[DecodeVideoFn.FAILED]
             | "FailureToJson" >> beam.Map(json.dumps, sort_keys=True))):
        lines | f"Write_{name}" >> beam.io.WriteToText(
            FileSystems.join(output_dir, JOB_OUTPUTS[name]), num_shards=1,
            shard_name_template="")


def run(argv=None):
    """Runs the job; returns the manifest it wrote. Raises on bad requests."""
    options = pipeline_options(sys.argv[1:] if argv is None else list(argv))
    args = options.view_as(PreprocessOptions)
    request = check_args(args)
    listing, classes, tasks, split_spec = plan_tasks(args, request)
    selected = collections.Counter(task.split for task in tasks)
    split_shards = {name: args.num_shards for name in sorted(selected)}
    prepare_output_dir(args.output_dir, args.overwrite)
    print(f"preprocess: {len(tasks)} videos of {len(classes)} classes from "
          f"{args.source} (layout {listing.layout}): "
          + ", ".join(f"{k}={v}" for k, v in sorted(selected.items())), flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    with contextlib.ExitStack() as stack:
        watch = (stack.enter_context(progress.Progress(len(tasks)))
                 if is_local_runner(options) else None)
        decode_fn = DecodeVideoFn(args.source, args.output_dir, fps=args.fps,
                                  max_frames=args.max_frames, resize=args.resize,
                                  image_size=args.image_size,
                                  jpeg_quality=args.jpeg_quality,
                                  progress=watch.path if watch else None)
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, tasks, decode_fn, args.output_dir, split_shards)
        result = pipeline.run()
        result.wait_until_finish()
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    print_counters(result)

    manifest = finish(args, listing, classes, selected, split_spec, started, seconds)
    manifest_lib.write_manifest(args.output_dir, manifest)
    return manifest


def finish(args, listing, classes, selected, split_spec, started, seconds):
    """Checks that nothing was lost, then builds the manifest."""
    outputs = read_job_outputs(args.output_dir)
    split_info = verify_splits(args.output_dir, classes, selected, *outputs)
    total = sum(selected.values())
    out = args.output_dir
    print(f"preprocess: {total} videos in {seconds:.1f} s "
          f"({total / max(seconds, 1e-9):.2f} videos/s); manifest at "
          f"{FileSystems.join(out, manifest_lib.MANIFEST_NAME)}", flush=True)
    failures = outputs[2]
    if failures:
        print(f"preprocess: {len(failures)} videos failed; see "
              f"{FileSystems.join(out, manifest_lib.FAILURES_NAME)}", flush=True)
    return build_manifest(args, listing, classes, split_spec, split_info, outputs[0],
                          started, seconds)


def read_job_outputs(out):
    """The pipeline's summary, shard entries (both then removed) and failure records.

    Also removes the fragments and Beam's temporary files. Nothing here opens a shard.
    """
    def lines(name, remove=True):
        path = FileSystems.join(out, JOB_OUTPUTS[name])
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
        if remove:
            FileSystems.delete([path])
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    summary = (lines("summary") or [{}])[0]
    shard_entries = lines("shards")
    failures = lines("failures", remove=False)
    remove_beam_temp(out)
    return summary, shard_entries, failures


def verify_splits(out, classes, selected, summary, shard_entries, failures):
    """Per split: `written + failed == selected`, from the pipeline's own counts.

    The shards' sizes on the filesystem must be the sizes the pipeline wrote.

    Returns:
        The manifest's `splits` entry. Raises `PreprocessError` when counts do
        not add up.
    """
    written_per_class = collections.defaultdict(dict)
    for split, cls, count in summary.get("videos", []):
        written_per_class[split][cls] = count
    failed = collections.Counter(f["split"] for f in failures)
    split_info, problems = {}, []
    for split, count in sorted(selected.items()):
        entries = sorted((e for e in shard_entries if e["split"] == split),
                         key=lambda e: e["path"])
        on_disk = {m.path: m.size_in_bytes for m in FileSystems.match(
            [FileSystems.join(out, split, "*" + manifest_lib.RECORD_SUFFIX)])[0].metadata_list}
        written = sum(e["records"] for e in entries)
        ok = (written == sum(written_per_class[split].values())
              and written + failed[split] == count
              and {e["path"]: e["bytes"] for e in entries} == on_disk)
        print(f"preprocess: {split}: written {written} + failed {failed[split]} "
              f"{'==' if ok else '!='} selected {count}", flush=True)
        if not ok:
            problems.append(split)
        split_info[split] = {
            "num_videos": written,
            "num_failed": failed[split],
            "num_selected": count,
            "num_frames": summary.get("frames", {}).get(split, 0),
            "per_class": {c: written_per_class[split].get(c, 0) for c in classes},
            "shards": [f"{split}/{e['path'].rstrip('/').split('/')[-1]}" for e in entries],
            # Per shard, so a reader can spot a truncated copy without reading it.
            "shard_records": [e["records"] for e in entries],
            "shard_bytes": [e["bytes"] for e in entries],
        }
    if problems:
        raise PreprocessError(f"video counts or shard sizes do not add up in "
                              f"{', '.join(problems)}; the records are incomplete, run "
                              "again with --overwrite")
    return split_info


def build_manifest(args, listing, classes, split_spec, split_info, summary, started,
                   seconds):
    """`manifest.json`: what was written, how, and from what."""
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "package_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "source": args.source,
        "layout": listing.layout,
        "split_spec": split_spec,
        "classes": classes,
        "splits": split_info,
        "encoding": {"format": "jpeg", "quality": args.jpeg_quality, "color": "rgb",
                     "keys": {"frames": schema.IMAGE_ENCODED,
                              "label": schema.LABEL_INDEX,
                              "label_text": schema.LABEL_TEXT}},
        "geometry": {"resize": args.resize, "image_size": args.image_size,
                     "frame_sizes": summary.get("sizes", [])},
        "fps": args.fps,
        "max_frames": args.max_frames,
        "failures": manifest_lib.FAILURES_NAME,
        "num_ignored_files": len(listing.ignored),
        "seconds": round(seconds, 2),
        "options": {name: getattr(args, name)
                    for name in vars(build_parser().parse_args([]))},
    }


def main(argv=None):
    """Command-line entry: one-line errors and a non-zero exit, never a traceback."""
    try:
        run(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
