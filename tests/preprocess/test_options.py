"""The job's command line: its flags and their help, Beam's options beside them, local
defaults, and the checks that refuse a bad request before any work."""

import re

import pytest
from apache_beam.options.pipeline_options import DirectOptions, WorkerOptions

from preprocess import options
from preprocess.errors import PreprocessError, UsageError


def _args(*argv):
    return options.pipeline_options(list(argv)).view_as(options.PreprocessOptions)


def test_help_shows_each_default_as_the_parser_holds_it():
    parser = options.build_parser()
    text = " ".join(parser.format_help().split())
    for name, default in vars(parser.parse_args([])).items():
        if default not in (None, False):
            assert re.search(rf"\(default {re.escape(str(default))}[):]", text), name


def test_job_flags_and_beam_options_are_read_together():
    args = _args("--source", "videos", "--output_dir", "out", "--num_shards", "3",
                 "--runner", "DirectRunner", "--image_size=64")
    assert (args.source, args.output_dir, args.num_shards, args.image_size) == (
        "videos", "out", 3, 64)
    assert options.job_options(args) == {
        name: getattr(args, name) for name in vars(options.build_parser().parse_args([]))}
    assert options.job_options(args)["num_shards"] == 3


def test_an_unknown_flag_names_the_closest_of_the_job_and_beam():
    cases = [(["--sourc", "x"], "unknown flag --sourc, neither the job's nor a Beam "
                                "pipeline option; did you mean --source?"),
             (["--runnr", "x"], "unknown flag --runnr, neither the job's nor a Beam "
                                "pipeline option; did you mean --runner?"),
             (["--zzz", "1"], "unknown flag --zzz, neither the job's nor a Beam pipeline "
                              "option; see python -m preprocess --help for the job's flags"),
             (["records/"], "unexpected argument records/; every value follows its flag, "
                            "e.g. --source DIR")]
    for argv, message in cases:
        with pytest.raises(PreprocessError) as caught:
            options.pipeline_options(argv)
        assert str(caught.value) == message


def test_a_bad_value_is_a_usage_error():
    with pytest.raises(UsageError, match="--num_shards: invalid int value: 'x'; see python"):
        options.pipeline_options(["--num_shards", "x"])
    with pytest.raises(UsageError, match="--direct_num_workers: invalid int value: 'x'; "
                                         "see Beam's pipeline options"):
        options.pipeline_options(["--direct_num_workers", "x"])


def test_the_local_runner_uses_a_thread_per_core_unless_told_otherwise():
    local = options.pipeline_options(["--source", "x"])
    assert options.is_local_runner(local)
    assert local.view_as(DirectOptions).direct_running_mode == "multi_threading"
    assert local.view_as(DirectOptions).direct_num_workers == 0
    assert local.view_as(WorkerOptions).default_sdk_harness_log_level == "WARNING"
    given = options.pipeline_options(["--direct_running_mode=multi_processing",
                                      "--direct_num_workers", "2"])
    assert given.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert given.view_as(DirectOptions).direct_num_workers == 2
    in_memory = options.pipeline_options(["--direct_running_mode", "in_memory"])
    assert in_memory.view_as(DirectOptions).direct_num_workers != 0
    remote = options.pipeline_options(["--runner", "DataflowRunner"])
    assert not options.is_local_runner(remote)
    assert remote.view_as(DirectOptions).direct_running_mode != "multi_threading"


def test_check_args_parses_the_split_request_once():
    request = options.check_args(_args("--source", "x", "--output_dir", "y", "--per_class",
                                       "train=2,test=1", "--classes", "a, b"))
    assert request == options.SplitRequest(per_class={"train": 2, "test": 1},
                                           classes=["a", "b"])
    assert options.check_args(_args("--source", "x", "--output_dir", "y")) == (
        options.SplitRequest())


def test_option_clashes_are_refused_before_any_work(tmp_path):
    src = tmp_path / "src" / "cat"
    src.mkdir(parents=True)
    (src / "a.mp4").write_bytes(b"video")
    src = src.parent
    out = tmp_path / "out"
    cases = [
        (["--annotations", "x.csv", "--layout", "class_folders"], "--annotations needs"),
        (["--layout", "annotations"], "needs --annotations FILE"),
        (["--layout", "hmdb51"], "needs --split_lists"),
        (["--split_fractions", "train=0.5,test=0.4"], "sum to 0.9"),
        (["--per_class", "train=1", "--split_fractions", "train=1"],
         "either --per_class or --split_fractions"),
        (["--class_names", "names.txt", "--classes", "cat"],
         "either --class_names or --classes"),
    ]
    for args, fragment in cases:
        with pytest.raises(PreprocessError, match=fragment):
            options.check_args(_args("--source", str(src), "--output_dir", str(out), *args))
    assert not out.exists()


def test_a_remote_path_needs_its_filesystem():
    with pytest.raises(PreprocessError, match=r"--output_dir nofs://bucket/out needs Beam's "
                                              r"nofs:// filesystem, which is not installed; "
                                              r"install the apache-beam extra"):
        options.check_args(_args("--source", "x", "--output_dir", "nofs://bucket/out"))
    # An http(s) source is read by the job itself, not through a Beam filesystem.
    options.check_filesystems(_args("--source", "https://example.com/a.zip",
                                    "--output_dir", "out"))
