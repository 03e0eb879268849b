"""The preprocessing job's command line: its own flags beside Beam's options, and the
checks that refuse a bad request before any work.

`pipeline_options(argv)` reads the whole command line; `check_args` checks the
job's flags and parses the split request once.
"""

import dataclasses
import importlib

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions, WorkerOptions)

from preprocess import layouts, splits, video
from preprocess.errors import ArgumentParser, PreprocessError, unknown_flag_message
from preprocess.sources import is_remote_url

# The command that installs Beam's filesystem of a remote scheme (setup.py's extras).
FILESYSTEM_EXTRAS = {"gs": "pip install -e .[gcp]"}
# The client library each such filesystem needs at its first use.
FILESYSTEM_CLIENTS = {"gs": "google.cloud.storage"}
# The flags that name a file or folder, which may be remote.
PATH_FLAGS = ("source", "output_dir", "split_lists", "annotations", "class_names")


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
                           help="seed of the order of records in the shards, and of "
                                "--per_class and --split_fractions "
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


def job_options(args):
    """The job's own flags and their values, as the manifest records them."""
    return {name: getattr(args, name) for name in vars(build_parser().parse_args([]))}


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
            unknown, parser.flags(),
            hint="see python -m preprocess --help for the job's flags",
            explanation="neither the job's nor a Beam pipeline option",
            example="--source DIR"))
    options = PipelineOptions(argv)
    if is_local_runner(options):
        use_local_defaults(options, {arg[2:].split("=", 1)[0] for arg in argv
                                     if arg.startswith("--")})
    return options


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

    Beam would fail deep inside the listing or the output check instead. Beam
    registers its gs:// filesystem even without the Google Cloud client, which
    only fails at the first use, so the client's import is checked too.
    """
    for flag in PATH_FLAGS:
        path = getattr(args, flag)
        scheme = FileSystems.get_scheme(path) if path and not is_remote_url(path) else None
        if scheme is None:
            continue
        try:
            FileSystems.get_filesystem(path)
            if scheme in FILESYSTEM_CLIENTS:
                importlib.import_module(FILESYSTEM_CLIENTS[scheme])
        except (ValueError, ImportError):
            fix = (f"run {FILESYSTEM_EXTRAS[scheme]}" if scheme in FILESYSTEM_EXTRAS
                   else "install the apache-beam extra that provides it")
            raise PreprocessError(f"--{flag} {path} needs Beam's {scheme}:// filesystem, "
                                  f"which is not installed; {fix}") from None
