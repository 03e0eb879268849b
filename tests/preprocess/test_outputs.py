"""The output folder around a run: refusing to mix runs, clearing Beam's leftovers, and
checking the pipeline's own counts into the manifest, without a Beam run."""

import datetime
import json
import types

import pytest

from preprocess import manifest as manifest_lib
from preprocess import options, outputs, schema, shards
from preprocess.errors import PreprocessError

STARTED = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def _write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _args(out, *argv):
    return options.pipeline_options(["--source", "videos", "--output_dir", str(out),
                                     *argv]).view_as(options.PreprocessOptions)


def _job_outputs(out, shard_sizes, *, videos, failures=(), frames=None):
    """What the pipeline leaves beside the shards, for shards of the given sizes."""
    entries = []
    for split, sizes in shard_sizes.items():
        for index, (records, size) in enumerate(sizes):
            path = _write(out / split / f"{split}-{index:05d}-of-{len(sizes):05d}.tfrecord",
                          b"r" * size)
            entries.append({"split": split, "path": str(path), "records": records,
                            "bytes": size})
    summary = {"videos": videos, "frames": frames or {}, "sizes": [[32, 43]]}
    _write(out / outputs.JOB_OUTPUTS["summary"], json.dumps(summary).encode() + b"\n")
    _write(out / outputs.JOB_OUTPUTS["shards"],
           "".join(json.dumps(e) + "\n" for e in entries).encode())
    _write(out / outputs.JOB_OUTPUTS["failures"],
           "".join(json.dumps(f) + "\n" for f in failures).encode())
    _write(out / shards.FRAGMENTS / "fragment-0")
    _write(out / "beam-temp-abc" / "part")


def test_a_new_output_dir_is_left_alone(tmp_path):
    outputs.prepare_output_dir(str(tmp_path / "out"), overwrite=False)
    assert not (tmp_path / "out").exists()


def test_records_are_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    old = [_write(out / manifest_lib.MANIFEST_NAME),
           _write(out / "train" / "train-00000-of-00001.tfrecord"),
           _write(out / outputs.JOB_OUTPUTS["summary"]),
           _write(out / manifest_lib.FAILURES_NAME)]
    leftovers = [_write(out / shards.FRAGMENTS / "f"), _write(out / "beam-temp-1" / "x"),
                 _write(out / "train" / "beam-temp-2" / "y")]
    notes = _write(out / "notes.txt")
    with pytest.raises(PreprocessError, match="already holds records; pass --overwrite"):
        outputs.prepare_output_dir(str(out), overwrite=False)
    assert all(path.exists() for path in old + leftovers)
    outputs.prepare_output_dir(str(out), overwrite=True)
    assert not any(path.exists() for path in old + leftovers)
    assert notes.exists()


def test_beam_leftovers_alone_are_cleared_without_overwrite(tmp_path):
    out = tmp_path / "out"
    _write(out / shards.FRAGMENTS / "f")
    _write(out / "beam-temp-1" / "x")
    outputs.prepare_output_dir(str(out), overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == []


def test_finish_checks_the_counts_and_builds_the_manifest(tmp_path, capsys):
    out = tmp_path / "out"
    _job_outputs(out, {"train": [(2, 100), (1, 60)], "test": [(1, 40)]},
                 videos=[["test", "Grow", 1], ["train", "Grow", 1], ["train", "Shrink", 2]],
                 failures=[{"split": "test", "video_id": "v_bad"}],
                 frames={"train": 72, "test": 24})
    args = _args(out, "--num_shards", "2")
    listing = types.SimpleNamespace(layout="ucf101", ignored=["README.txt"])
    manifest = outputs.finish(args, listing, ["Grow", "Shrink"], {"train": 3, "test": 2},
                              {"kind": "all"}, STARTED, 2.0)
    assert sorted(p.name for p in out.iterdir()) == [manifest_lib.FAILURES_NAME, "test",
                                                     "train"]
    assert manifest["splits"]["train"] == {
        "num_videos": 3, "num_failed": 0, "num_selected": 3, "num_frames": 72,
        "per_class": {"Grow": 1, "Shrink": 2},
        "shards": ["train/train-00000-of-00002.tfrecord", "train/train-00001-of-00002.tfrecord"],
        "shard_records": [2, 1], "shard_bytes": [100, 60]}
    assert manifest["splits"]["test"]["num_failed"] == 1
    assert manifest["splits"]["test"]["per_class"] == {"Grow": 1, "Shrink": 0}
    assert (manifest["schema_version"], manifest["created"], manifest["layout"]) == (
        schema.SCHEMA_VERSION, "2024-05-01T12:00:00+00:00", "ucf101")
    assert manifest["geometry"] == {"resize": "short_side", "image_size": 128,
                                    "frame_sizes": [[32, 43]]}
    assert manifest["num_ignored_files"] == 1 and manifest["seconds"] == 2.0
    assert manifest["options"] == options.job_options(args)
    assert manifest["options"]["num_shards"] == 2
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["preprocess: test: written 1 + failed 1 == selected 2",
                       "preprocess: train: written 3 + failed 0 == selected 3",
                       f"preprocess: 5 videos in 2.0 s (2.50 videos/s); manifest at "
                       f"{out / manifest_lib.MANIFEST_NAME}",
                       f"preprocess: 1 videos failed; see {out / manifest_lib.FAILURES_NAME}"]


def test_a_lost_video_or_a_short_shard_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    _job_outputs(out, {"train": [(2, 100)]}, videos=[["train", "Grow", 2]])
    summary, entries, failures = outputs.read_job_outputs(str(out))
    with pytest.raises(PreprocessError, match="do not add up in train; the records are "
                                              "incomplete, run again with --overwrite"):
        outputs.verify_splits(str(out), ["Grow"], {"train": 3}, summary, entries, failures)
    assert "written 2 + failed 0 != selected 3" in capsys.readouterr().out
    (out / "train" / "train-00000-of-00001.tfrecord").write_bytes(b"r" * 99)
    with pytest.raises(PreprocessError, match="do not add up in train"):
        outputs.verify_splits(str(out), ["Grow"], {"train": 2}, summary, entries, failures)


def test_print_counters_prints_the_jobs_counters_sorted(capsys):
    def counter(name, value):
        return types.SimpleNamespace(key=types.SimpleNamespace(
            metric=types.SimpleNamespace(name=name)), committed=value)

    class Result:
        def __init__(self, counters):
            self.counters = counters

        def metrics(self):
            return types.SimpleNamespace(query=lambda _: {"counters": self.counters})

    outputs.print_counters(Result([counter("videos_written", 4), counter("frames_written", 96)]))
    outputs.print_counters(Result([]))
    assert capsys.readouterr().out == (
        "preprocess: counters frames_written=96, videos_written=4\n")
