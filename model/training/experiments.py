"""Runs side by side: each run's settings and results, as a table and in TensorBoard.

`scripts/compare_runs.py` reads run folders (`find_runs`, `read_run`) and
prints the settings that differ between them and their results
(`comparison_table`); at the end of a run, train.py writes the same settings
and results into the run's `logs/` for TensorBoard's HParams dashboard
(`write_hparams`), so `tensorboard --logdir runs/` shows every run under
`runs/` in one table. Importing this module is light (no TensorFlow).
"""

import csv
import dataclasses
import io
import json
import os

from model import TOP_K_ACCURACY
from model.training.run_dir import RunDir
from preprocess.errors import UserError

# What differs between any two runs, or says nothing of the experiment.
NOT_SETTINGS = ("output_dir", "overwrite")
# A run's results, in table order: the test split's video accuracies, then the
# training's totals over every launch of the run (`model.training.launches`).
RESULTS = ("test_accuracy", "test_" + TOP_K_ACCURACY, "test_mean_class_accuracy",
           "epochs_trained", "wall_seconds", "clips_per_second")


class CompareError(UserError):
    """Run folders that cannot be compared; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: its folder, its settings and its results (None where unknown)."""

    path: str
    settings: dict
    results: dict


def run_settings(config):
    """The settings of a resolved config that describe its experiment."""
    return {key: value for key, value in config.items() if key not in NOT_SETTINGS}


def run_results(metrics, config):
    """`RESULTS` of a run from its `metrics.json` (as a dict) and resolved config.

    Runs written before `metrics.json` kept totals over launches have None
    for wall time and clips/s, whose figures there count the last launch only.
    """
    evaluated = metrics.get("evaluated") or {}
    split = evaluated.get("split") or next(
        key for key, value in metrics.items() if isinstance(value, dict) and "accuracy" in value)
    report, training = metrics[split], metrics.get("training") or {}
    return {"test_accuracy": report["accuracy"],
            "test_" + TOP_K_ACCURACY: report[TOP_K_ACCURACY],
            "test_mean_class_accuracy": report["mean_class_accuracy"],
            # A finished run has trained every epoch it asked for.
            "epochs_trained": training.get("epochs") or config.get("epochs"),
            "wall_seconds": training.get("seconds_total"),
            "clips_per_second": training.get("clips_per_second")}


def find_runs(paths):
    """Run folders among `paths` and below them, in the order given, each sorted.

    A run folder holds the `config.json` train.py writes; every folder given
    is searched, run folders too (a run's `--output_dir` may sit in another's).

    Returns:
        `(finished, unfinished)` lists of folders: finished ones have `metrics.json`.
    """
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise CompareError(f"{path}: no such folder; give run folders or folders "
                               "that hold them")
        for folder, subfolders, _ in os.walk(os.path.normpath(path)):  # runs/a/ is runs/a
            subfolders.sort()
            if _is_run(folder) and folder not in found:
                found.append(folder)
    if not found:
        raise CompareError(f"no run folders (with the config.json train.py writes) in "
                           f"{', '.join(paths)}")
    finished = [folder for folder in found if os.path.exists(RunDir(folder).metrics)]
    return finished, [folder for folder in found if folder not in finished]


def _is_run(folder):
    path = RunDir(folder).config
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("config"), dict)


def read_run(folder):
    """The `Run` of a finished run folder."""
    run = RunDir(folder)
    config = run.read_config()["config"]
    with open(run.metrics) as handle:
        metrics = json.load(handle)
    return Run(folder, run_settings(config), run_results(metrics, config))


def differing_settings(runs):
    """The names of the settings whose values are not the same in every run.

    In `--help`'s order after `records`; settings train.py no longer has last.
    """
    from model.training.config import build_parser
    from model.training.config_file import setting_actions
    order = ["records", *setting_actions(build_parser())]
    names = list(dict.fromkeys(key for run in runs for key in run.settings))
    names.sort(key=lambda name: order.index(name) if name in order else len(order))
    missing = object()
    differ = []
    for name in names:
        # By value: a preset's warmup_epochs=1 and a flag's 1.0 are one setting.
        values = [run.settings.get(name, missing) for run in runs]
        if any(value != values[0] for value in values[1:]):
            differ.append(name)
    return differ


def comparison_table(runs, table_format="markdown"):
    """The runs as a table: one row each, the settings that differ, then `RESULTS`.

    Args:
        runs: `Run`s.
        table_format: `markdown` (numbers rounded for reading) or `csv` (as
            recorded). Defaults to markdown.
    """
    settings = differing_settings(runs)
    if table_format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run", *settings, *RESULTS])
        for run in runs:  # a missing setting or an unknown result is an empty cell
            writer.writerow([run.path, *(run.settings.get(name, "") for name in settings),
                             *("" if run.results[name] is None else run.results[name]
                               for name in RESULTS)])
        return out.getvalue()
    lines = [["run", *settings, *(_MARKDOWN_LABELS.get(name, name) for name in RESULTS)],
             ["---"] * (1 + len(settings)) + ["---:"] * len(RESULTS)]
    for run in runs:
        lines.append([run.path, *(str(run.settings[name]) if name in run.settings else ""
                                  for name in settings),
                      *(_result_cell(run.results[name], name) for name in RESULTS)])
    return "".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |\n"
                   for line in lines)


_MARKDOWN_LABELS = {"test_accuracy": "accuracy", "test_" + TOP_K_ACCURACY: "top-5",
                    "test_mean_class_accuracy": "mean class accuracy",
                    "epochs_trained": "epochs trained", "wall_seconds": "wall time",
                    "clips_per_second": "clips/s"}


def _result_cell(value, name):
    """A result as people read it: accuracies to 3 places, wall time as h:mm:ss."""
    if value is None:
        return "?"
    if name == "wall_seconds":
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    if name.startswith("test_"):
        return f"{value:.3f}"
    if name == "clips_per_second":
        return f"{value:.1f}"
    return str(value)


def write_hparams(logs_dir, run_path, settings, results):
    """The run's settings and results for TensorBoard's HParams dashboard.

    Writes, in `logs_dir` (beside Keras's `train/` and `validation/`
    curves), the settings as a session of the hparams plugin and each known
    result as a scalar at the run's last epoch, which the dashboard shows
    as the session's metrics.

    Args:
        logs_dir: the run's `logs/` folder (`RunDir.logs`).
        run_path: the run folder; names the session (its trial id).
        settings: `run_settings` of the run; settings set to None are left out.
        results: `run_results` of the run; unknown (None) ones are left out.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    values = {key: value for key, value in settings.items()
              if isinstance(value, (bool, int, float, str))}
    writer = tf.summary.create_file_writer(logs_dir)
    with writer.as_default():
        hp.hparams(values, trial_id=os.path.abspath(run_path))
        for name in RESULTS:
            if results.get(name) is not None:
                tf.summary.scalar(name, results[name], step=results["epochs_trained"] or 0)
    writer.close()
