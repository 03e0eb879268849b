"""model/training/experiments.py: a run's settings and results, as a table and for TensorBoard's
HParams dashboard."""

import csv
import glob
import io
import json
import os

import pytest

from model.training import experiments
from model.training.experiments import Run

SETTINGS = {"preset": "demo", "records": "records/", "learning_rate": 0.002, "optimizer": "adam",
            "flip": False, "epochs": 3, "init_from": None}
RESULTS = {"test_accuracy": 0.75, "test_top5_accuracy": 1.0, "test_mean_class_accuracy": 0.7,
           "epochs_trained": 3, "wall_seconds": 3725.4, "clips_per_second": 12.345}


def read_events(logs_dir):
    """`(tag, step, value or plugin content)` of every summary written in `logs_dir` itself."""
    import tensorflow as tf
    found = []
    for path in glob.glob(os.path.join(logs_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                found.append((value.tag, event.step, plugin.plugin_name,
                              plugin.content if plugin.plugin_name == "hparams"
                              else float(tf.make_ndarray(value.tensor))))
    return found


def hparams_session(logs_dir):
    """The session start info of the hparams plugin in `logs_dir`, or None."""
    from tensorboard.plugins.hparams import metadata
    for tag, _, plugin, content in read_events(logs_dir):
        if plugin == metadata.PLUGIN_NAME and tag == metadata.SESSION_START_INFO_TAG:
            return metadata.parse_session_start_info_plugin_data(content)
    return None


def test_hparams_hold_the_settings_and_the_results_are_scalars(tmp_path):
    logs = str(tmp_path / "run" / "logs")
    experiments.write_hparams(logs, str(tmp_path / "run"), SETTINGS,
                              {**RESULTS, "clips_per_second": None})
    session = hparams_session(logs)
    assert session is not None, "no hparams session in the run's logs"
    assert session.group_name == str(tmp_path / "run")  # one session group a run
    hparams = session.hparams
    assert hparams["learning_rate"].number_value == 0.002
    assert hparams["optimizer"].string_value == "adam"
    assert hparams["flip"].HasField("bool_value") and not hparams["flip"].bool_value
    assert hparams["records"].string_value == "records/"
    assert "init_from" not in hparams  # None: not set, left out
    scalars = {tag: (step, value) for tag, step, plugin, value in read_events(logs)
               if plugin == "scalars"}
    assert scalars == {"test_accuracy": (3, 0.75), "test_top5_accuracy": (3, 1.0),
                       "test_mean_class_accuracy": (3, pytest.approx(0.7)),
                       "epochs_trained": (3, 3.0), "wall_seconds": (3, pytest.approx(3725.4))}


def test_results_of_metrics_json_and_of_older_runs():
    metrics = {"test": {"accuracy": 0.5, "top5_accuracy": 0.9, "mean_class_accuracy": 0.4},
               "training": {"epochs_this_run": 1, "seconds_this_run": 9.0, "launches": 2,
                            "epochs": 4, "seconds_total": 20.0, "clips_per_second": 3.5},
               "evaluated": {"split": "test"}}
    assert experiments.run_results(metrics, {"epochs": 4}) == {
        "test_accuracy": 0.5, "test_top5_accuracy": 0.9, "test_mean_class_accuracy": 0.4,
        "epochs_trained": 4, "wall_seconds": 20.0, "clips_per_second": 3.5}
    # Written before the totals: the last launch's time is not the run's, so unknown.
    older = {"val": metrics["test"], "training": {"epochs_this_run": 1, "seconds_this_run": 9.0},
             "evaluated": {"checkpoint": "last"}}
    assert experiments.run_results(older, {"epochs": 4}) == {
        "test_accuracy": 0.5, "test_top5_accuracy": 0.9, "test_mean_class_accuracy": 0.4,
        "epochs_trained": 4, "wall_seconds": None, "clips_per_second": None}


def test_the_table_shows_only_the_settings_that_differ():
    runs = [Run("runs/a", SETTINGS, RESULTS),
            Run("runs/b", {**SETTINGS, "learning_rate": 0.01, "init_from": "kinetics400"},
                {**RESULTS, "wall_seconds": None}),
            Run("runs/c", {**{k: v for k, v in SETTINGS.items() if k != "flip"},
                           "epochs": 3.0}, RESULTS)]  # 3.0 is 3: a preset's int, a flag's float
    # In --help's order, as --print_config prints them.
    assert experiments.differing_settings(runs) == ["init_from", "flip", "learning_rate"]
    assert experiments.comparison_table(runs).splitlines() == [
        "| run | init_from | flip | learning_rate | accuracy | top-5 | mean class accuracy "
        "| epochs trained | wall time | clips/s |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| runs/a | None | False | 0.002 | 0.750 | 1.000 | 0.700 | 3 | 1:02:05 | 12.3 |",
        "| runs/b | kinetics400 | False | 0.01 | 0.750 | 1.000 | 0.700 | 3 | ? | 12.3 |",
        "| runs/c | None |  | 0.002 | 0.750 | 1.000 | 0.700 | 3 | 1:02:05 | 12.3 |"]
    rows = list(csv.DictReader(io.StringIO(experiments.comparison_table(runs, "csv"))))
    assert list(rows[0]) == ["run", "init_from", "flip", "learning_rate",
                             *experiments.RESULTS]
    assert rows[0]["wall_seconds"] == "3725.4" and rows[1]["wall_seconds"] == ""
    assert rows[2]["flip"] == "" and rows[0]["clips_per_second"] == "12.345"


@pytest.mark.slow
def test_a_finished_run_leaves_its_settings_and_results_for_tensorboard(trained):
    _, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    logs = str(run / "logs")
    session = hparams_session(logs)
    assert session is not None, "train.py wrote no hparams session"
    assert session.hparams["learning_rate"].number_value == pytest.approx(4e-3)
    assert session.hparams["model"].string_value == "r2plus1d_10"
    scalars = {tag: (step, value) for tag, step, plugin, value in read_events(logs)
               if plugin == "scalars"}
    assert scalars["test_accuracy"] == (3, pytest.approx(metrics["test"]["accuracy"]))
    assert scalars["clips_per_second"][1] == pytest.approx(
        metrics["training"]["clips_per_second"], rel=1e-6)
