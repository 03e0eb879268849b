"""scripts/compare_runs.py: one row a run, the settings that differ and the results; parents
searched, unfinished runs left out by name, and every misuse refused in one line."""

import csv
import io
import json
import shutil

import pytest

from conftest import assert_one_line_error, in_fresh_python
from model.training.config import resolve_config
from two_class_run import script

REPORT = {"accuracy": 0.5, "clip_accuracy": 0.5, "top5_accuracy": 1.0,
          "mean_class_accuracy": 0.5, "num_videos": 16, "num_clips": 32, "per_class": {}}


def fake_run(folder, *argv, accuracy=0.5, finished=True, seconds=61.0):
    """A run folder as train.py leaves it, written by hand: config.json, and metrics.json."""
    folder.mkdir(parents=True)
    config = resolve_config(["--records", "records", "--output_dir", str(folder),
                             "--preset", "demo", *argv])
    (folder / "config.json").write_text(json.dumps({"identity": {}, "config": config}))
    if finished:
        training = {"epochs_this_run": 1, "seconds_this_run": 30.0, "launches": 2,
                    "epochs": config["epochs"], "seconds_total": seconds,
                    "training_seconds_total": 40.0, "clips_trained": 480,
                    "clips_per_second": 12.0}
        (folder / "metrics.json").write_text(json.dumps(
            {"test": {**REPORT, "accuracy": accuracy}, "training": training,
             "evaluated": {"checkpoint": "last", "epoch": config["epochs"], "split": "test"}}))
    return str(folder)


def compare(capsys, *argv):
    code = script("compare_runs").main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_parent_folder_is_searched_and_only_differing_settings_shown(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = fake_run(runs / "lr" / "a", "--learning_rate", "0.01")
    b = fake_run(runs / "lr" / "b", "--learning_rate", "0.02", accuracy=0.75)
    c = fake_run(runs / "lr" / "b" / "seed1", "--seed", "1", seconds=3725.0)  # in a run
    (runs / "notes").mkdir()  # no config.json: not a run
    (runs / "notes" / "config.json").write_text("{}")  # not train.py's
    code, out, err = compare(capsys, str(runs))
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "| run | learning_rate | seed | accuracy | top-5 | mean class accuracy "
        "| epochs trained | wall time | clips/s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {a} | 0.01 | 0 | 0.500 | 1.000 | 0.500 | 60 | 0:01:01 | 12.0 |",
        f"| {b} | 0.02 | 0 | 0.750 | 1.000 | 0.500 | 60 | 0:01:01 | 12.0 |",
        f"| {c} | 0.002 | 1 | 0.500 | 1.000 | 0.500 | 60 | 1:02:05 | 12.0 |"]
    code, out, _ = compare(capsys, c, a, "--format", "csv")  # run folders, in the order given
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["run"] for row in rows] == [c, a]
    assert rows[0]["seed"] == "1" and rows[0]["wall_seconds"] == "3725.0"
    assert "learning_rate" in rows[0] and "model" not in rows[0]


def test_unfinished_runs_are_named_and_left_out(tmp_path, capsys):
    done = fake_run(tmp_path / "runs" / "done")
    busy = fake_run(tmp_path / "runs" / "busy", "--seed", "3", finished=False)
    code, out, err = compare(capsys, str(tmp_path / "runs"))
    assert code == 0
    assert err == (f"compare_runs: leaving out 1 unfinished run(s), without metrics.json "
                   f"yet: {busy}\n")
    assert done in out and busy not in out
    assert "seed" not in out  # the one finished run differs from nothing
    code, _, err = compare(capsys, busy)
    assert code == 2
    assert err.splitlines()[-1] == (f"error: no finished runs in {busy}: none has its "
                                    "metrics.json yet")


@pytest.mark.parametrize("argv, fragment", [
    (["{tmp}"], "error: no run folders (with the config.json train.py writes) in {tmp}"),
    (["{tmp}/nowhere"], "error: {tmp}/nowhere: no such folder"),
    (["{tmp}", "--format", "html"], "argument --format: invalid choice: 'html'"),
    (["{tmp}", "--formt", "csv"], "unknown argument --formt; did you mean --format?"),
    ([], "the following arguments are required: RUN_OR_PARENT"),
])
def test_misuse_is_one_error_line(tmp_path, argv, fragment):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    # In a fresh interpreter, which must not load TensorFlow to read a few JSON files.
    result, loaded = in_fresh_python(
        f"import runpy\nsys.argv = ['compare_runs.py', *{argv!r}]\n"
        "runpy.run_path('scripts/compare_runs.py', run_name='__main__')\n")
    assert_one_line_error(result, fragment.format(tmp=tmp_path))
    assert loaded == []


@pytest.mark.slow
def test_a_trained_run_beside_copies_of_it(trained, tmp_path, capsys):
    _, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    # What the table reads, recorded by train.py over every launch of the run.
    training = metrics["training"]
    assert training["launches"] == 1 and training["epochs"] == 3
    assert training["clips_trained"] == 3 * 60 * 8  # epochs x steps x batch
    assert 0 < training["seconds_total"] and 0 < training["clips_per_second"]
    assert metrics["evaluated"]["split"] == "test"
    # Copies with other settings and results, as other runs of the experiment would be.
    copies = []
    for name, change, accuracy in [("lr", {"learning_rate": 0.01}, 0.25),
                                   ("frames", {"num_frames": 4}, 0.5)]:
        copy = tmp_path / name
        copy.mkdir()
        record = json.loads((run / "config.json").read_text())
        record["config"].update(change)
        (copy / "config.json").write_text(json.dumps(record))
        shutil.copy(run / "metrics.json", copy / "metrics.json")
        other = json.loads((copy / "metrics.json").read_text())
        other["test"]["accuracy"] = accuracy
        (copy / "metrics.json").write_text(json.dumps(other))
        copies.append(str(copy))
    code, out, _ = compare(capsys, str(run), *copies, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["run"] for row in rows] == [str(run), *copies]
    assert list(rows[0])[1:3] == ["num_frames", "learning_rate"]  # the settings that differ
    assert [row["test_accuracy"] for row in rows] == [
        str(metrics["test"]["accuracy"]), "0.25", "0.5"]
    assert rows[0]["wall_seconds"] == str(training["seconds_total"])
    assert rows[0]["clips_per_second"] == str(training["clips_per_second"])
    assert rows[0]["epochs_trained"] == "3"
