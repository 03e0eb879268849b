"""scripts/evaluate.py: a run's own figures reproduced, other views without touching the run,
records of other classes and every misuse refused in one line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, assert_one_line_error
from records import corrupt_frames
from two_class_run import script


def folder_hash(folder):
    """A hash of every file's relative path and bytes under a folder."""
    digest = hashlib.sha256()
    for parent, folders, names in sorted(os.walk(folder)):
        folders.sort()
        for name in sorted(names):
            path = os.path.join(parent, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


@pytest.mark.slow
def test_the_runs_own_records_and_views_reproduce_its_metrics(trained, tmp_path, capsys):
    records, run = trained
    out = tmp_path / "evaluation"
    code = script("evaluate").main(["--model", str(run), "--records", str(records),
                                    "--split", "test", "--output_dir", str(out)])
    assert code == 0
    mine = json.loads((out / "metrics.json").read_text())
    theirs = json.loads((run / "metrics.json").read_text())
    assert mine["test"] == theirs["test"]  # every figure, per class too
    assert mine["evaluated"]["views"] == theirs["evaluated"]["views"]
    assert mine["evaluated"]["split"] == "test"
    assert (out / "confusion_matrix.png").stat().st_size > 5_000
    stdout = capsys.readouterr().out
    assert f"evaluate: test video accuracy {theirs['test']['accuracy']:.3f}" in stdout


@pytest.mark.slow
def test_other_views_write_new_figures_beside_the_run_and_leave_it_alone(trained, capsys):
    records, run = trained
    before = folder_hash(run)
    code = script("evaluate").main(["--model", str(run), "--records", str(records),
                                    "--eval_clips", "3", "--eval_crops", "3"])
    assert code == 0
    assert folder_hash(run) == before
    out = run.parent / "run_eval" / "records_test_3x3"  # the default: beside the run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated"]["views"] == {"clips": 3, "crops": 3,
                                             "crop": "48x48, stored scale"}
    report = metrics["test"]
    assert report["num_videos"] == 16 and report["num_clips"] == 16 * 3 * 3
    assert set(report["per_class"]) == {"Grow", "SlideRight"}
    assert (out / "confusion_matrix.png").exists()
    assert str(out / "metrics.json") in capsys.readouterr().out


@pytest.mark.slow
def test_records_of_other_classes_are_refused_in_one_line(trained, tmp_path, capsys):
    records, run = trained
    for classes, fragment in ((["SlideRight", "Grow"], "the run's classes in another order"),
                              (["Grow", "SlideLeft"],
                               "other classes than the run's (lack SlideRight, add SlideLeft)")):
        other = tmp_path / "_".join(classes)
        shutil.copytree(records, other)
        manifest = json.loads((other / "manifest.json").read_text())
        manifest["classes"] = classes
        (other / "manifest.json").write_text(json.dumps(manifest))
        code = script("evaluate").main(["--model", str(run), "--records", str(other),
                                        "--output_dir", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], err
        assert "--class_names" in err[0]
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("indexed", [True, False])
def test_corrupt_frames_are_named_in_one_line(trained, tmp_path, capsys, indexed):
    records, run = trained
    copy = tmp_path / "records"
    shutil.copytree(records, copy)
    shard = corrupt_frames(copy, "test", indexed=indexed)
    code = script("evaluate").main(["--model", str(run), "--records", str(copy),
                                    "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert str(shard) in err[0] and "--skip_corrupt" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_misuse_fails_in_one_line_before_any_work(trained, tmp_path, capsys):
    records, run = trained
    base = ["--model", str(run), "--records", str(records)]
    cases = [
        (["--model", str(tmp_path / "nothing"), "--records", str(records)],
         "config.json is missing"),
        (["--model", str(run), "--records", str(tmp_path)], "no manifest.json"),
        ([*base, "--split", "holdout"], "no split 'holdout'"),
        ([*base, "--eval_clips", "0"], "--eval_clips must be at least 1, not 0"),
        ([*base, "--eval_crops", "2"], "invalid choice: 2"),
        ([*base, "--batch_size", "0"], "--batch_size must be at least 1"),
        ([*base, "--eval_clip", "3"], "unknown argument --eval_clip; did you mean --eval_clips?"),
        ([*base, "--output_dir", str(run / "again")], "inside the run folder"),
        ([*base, "--output_dir", str(run / "config.json")], "is a file"),
        (["--records", str(records)], "the following arguments are required: --model"),
    ]
    for argv, fragment in cases:
        code = script("evaluate").main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
        assert fragment in err[0], (fragment, err)
    assert not (run / "again").exists()
    result = subprocess.run([sys.executable, "scripts/evaluate.py", *base, "--eval_clips", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "--eval_clips must be at least 1")
