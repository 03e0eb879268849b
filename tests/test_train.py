"""train.py end to end on tiny synthetic records: files, metrics, resume, bad input, predict."""

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import train
from conftest import REPO, SHARED_DATA, assert_one_line_error, two_class_records
from model.inference import evaluation
from model.inference.predictor import Predictor
from model.network import pretrained
from model.network.build import build_for_run, build_model
from model.training.config import resolve_config
from model.training.run_dir import RunDir
from preprocess import reader
from records import corrupt_frames, read_split

# Two classes told apart by motion alone: growing against sliding right.
# Deterministic, on records whose bytes are fixed, so that a rerun on this kind
# of machine gives the same numbers. frame_step 4 spans 29 of a video's 30
# frames: with 3 (22 frames), 15 epochs of 8 steps left seed 0 at chance.
# With 4, and 12 steps an epoch, seeds 0 and 1 gave 12 and 13 of the 16 test
# videos (8 steps gave 10 to 13, by the order the reader draws).
TRAIN_ARGS = ["--model", "r2plus1d_10", "--width_multiplier", "0.25", "--num_frames", "8",
              "--frame_step", "4", "--image_size", "48", "--batch_size", "8",
              "--learning_rate", "2e-3", "--schedule", "cosine", "--no-flip",
              "--eval_clips", "2", "--seed", "0", "--deterministic"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return two_class_records(tmp_path_factory.mktemp("train_records"),
                             "--direct_running_mode=in_memory")


def records_ids(records, split):
    return sorted(video["video_id"] for video in read_split(records, split))


def _train(records, run_dir, *extra):
    args = ["--records", str(records), "--output_dir", str(run_dir), *TRAIN_ARGS, *extra]
    return train.main(args)


def _cli(*args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, **kwargs)


@pytest.fixture(scope="module")
def finished_run(records, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    assert _train(records, run_dir, "--epochs", "15", "--steps_per_epoch", "12") == 0
    return run_dir


@pytest.mark.slow
def test_run_writes_every_file_and_learns(finished_run):
    run = finished_run
    for name in ("config.json", "architecture.json", "history.csv", "metrics.json",
                 "learning_curves.png",
                 "confusion_matrix.png", "model.keras", "classes.json",
                 "checkpoints/last.keras", "checkpoints/best.keras",
                 "saved_model/saved_model.pb"):
        assert (run / name).exists(), name
    assert any(name.startswith("events") for _, _, files in os.walk(run / "logs")
               for name in files)
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"] == "r2plus1d_10"
    assert config["identity"]["records_fingerprint"]
    assert config["versions"]["tensorflow"] == tf.__version__
    with open(run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == list(range(15))
    assert float(history[-1]["loss"]) < 0.5 * float(history[0]["loss"])

    # Precise BN before each of the 15 validations, over one pass of the
    # training split (56 videos, batch 8: 7 batches, fewer than the default
    # 200); the final evaluation had nothing left to do, its weights being
    # those of the last validation.
    everything = json.loads((run / "metrics.json").read_text())
    views = {"clips": 2, "crops": 1, "crop": "48x48, stored scale"}  # the tutorial preset's crops
    assert everything["evaluated"] == {"checkpoint": "last", "epoch": 15, "split": "test",
                                       "precise_bn_batches": 7, "views": views}
    assert config["views"] == views
    assert len(everything["training"]["precise_bn_seconds"]) == 15
    # Each epoch's share of step time spent waiting for input, in history.csv and metrics.json.
    assert [round(float(row["input_wait"]), 4) for row in history] == everything["training"][
        "input_wait_per_epoch"] and all(0 <= float(row["input_wait"]) <= 1 for row in history)
    metrics = everything["test"]
    assert metrics["top5_accuracy"] == 1.0  # top-2 of 2 classes
    assert metrics["num_videos"] == 16 and metrics["num_clips"] == 32
    assert set(metrics["per_class"]) == {"Grow", "SlideRight"}
    assert metrics["accuracy"] >= 0.625, metrics  # chance is 0.5


@pytest.mark.slow
def test_saved_model_serves_uint8_clips(finished_run):
    loaded = tf.saved_model.load(str(finished_run / "saved_model"))
    clips = np.random.default_rng(0).integers(0, 256, (3, 8, 48, 48, 3), dtype=np.uint8)
    outputs = loaded.serve(tf.constant(clips))
    assert outputs["probabilities"].shape == (3, 2)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1, rtol=1e-5)
    # The same logits as model.keras, in inference mode.
    keras_logits = keras.saving.load_model(finished_run / "model.keras").predict(
        clips, verbose=0)
    np.testing.assert_allclose(outputs["logits"].numpy(), keras_logits, rtol=1e-5,
                               atol=1e-5)
    assert json.loads((finished_run / "classes.json").read_text()) == ["Grow", "SlideRight"]


def _test_video(records, video_id, run_dir):
    """The source file of a video in the records fixture, and its record's clips."""
    source = records.parent / "videos" / "UCF101" / f"{video_id}.avi"
    spec = reader.ClipSpec.for_run(json.loads((run_dir / "config.json").read_text())
                                   ["config"]).evaluation
    assert (spec.num_clips, spec.num_crops) == (2, 1)
    dataset = reader.make_dataset(records, "test", spec, batch_size=64, with_video_id=True)
    clips, labels, ids = next(iter(dataset))
    mine = ids.numpy() == video_id.encode()
    return source, clips.numpy()[mine], int(labels.numpy()[mine][0])


@pytest.mark.slow
def test_predictor_cuts_the_clips_evaluation_cuts(finished_run, records):
    video_id = records_ids(records, "test")[0]
    source, record_clips, _ = _test_video(records, video_id, finished_run)
    predicted = Predictor(finished_run).clips(str(source)).numpy()
    assert predicted.shape == record_clips.shape == (2, 8, 48, 48, 3)
    np.testing.assert_array_equal(predicted, record_clips)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch(records, tmp_path):
    run_dir = tmp_path / "run"
    command = ["train.py", "--records", str(records), "--output_dir", str(run_dir),
               *TRAIN_ARGS, "--epochs", "6"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable, *command], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = run_dir / "backup" / "training_metadata.json"

    def epochs_done():
        try:  # Keras may be halfway through writing it
            return json.loads(metadata.read_text()).get("epoch", 0)
        except (OSError, ValueError):
            return 0

    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and epochs_done() < 2:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(metadata.read_text())["epoch"]
    assert 2 <= done < 6

    result = _cli(*command, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run_dir} from epoch {done} of 6" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["epochs_this_run"] == 6 - done
    with open(run_dir / "history.csv") as handle:  # each epoch once, in order
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(range(6))

    # Another configuration may not resume into the same folder.
    changed = _cli(*command, "--learning_rate", "1e-4", timeout=300)
    assert_one_line_error(changed, "another configuration", "learning_rate")


@pytest.mark.slow
def test_samples_per_video_and_device_flips_train(records, tmp_path, capsys):
    # 56 training videos (28 a class), 2 clips cut from each read, batch 8: 14
    # steps an epoch, where one clip a video would make 7.
    assert _train(records, tmp_path / "run", "--epochs", "1", "--samples_per_video", "2",
                  "--flip") == 0
    assert "14 steps per epoch" in capsys.readouterr().out
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert "random_flip" in [layer.name for layer in model.layers]  # --flip is the model's


def _old_schema_records(records, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(records, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


@pytest.mark.parametrize("args, fragment", [
    # One of each kind of check, through main: the config's (the others are in
    # tests/model/training/test_config.py), the records' (tests/preprocess/test_manifest.py),
    # the cluster's and the weights'.
    (["--records", "{tmp}/missing"], "no manifest.json"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--image_size", "64"], "--image_size 64 is larger than the 54-pixel frames"),
    (["--strategy", "multi_worker"], "needs TF_CONFIG"),
    (["--init_from", "{tmp}/nothing.pth"], "nothing.pth does not exist"),
    (["--init_from", "{repo}/README.md"], "not a PyTorch checkpoint"),
    (["--model", "r2plus1d_18", "--init_from", "{shared}/torch_checkpoints/malicious_zip.pth"],
     "posix.system, which rebuilding tensors never"),
    (["--records", "{old}"], "schema version 99"),
])
def test_bad_requests_fail_in_one_line(records, tmp_path, capsys, args, fragment):
    if "{shared}" in " ".join(args) and not SHARED_DATA.is_dir():
        pytest.skip(f"the shared fixtures are not at {SHARED_DATA}")
    places = dict(tmp=tmp_path, repo=REPO, shared=SHARED_DATA,
                  old=_old_schema_records(records, tmp_path) if "{old}" in args else "")
    args = [arg.format(**places) for arg in args]
    code = train.main(["--records", str(records), "--output_dir", str(tmp_path / "run"),
                       *TRAIN_ARGS, "--epochs", "1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], (fragment, err)


@pytest.mark.slow  # the trainer runs until it reads the corrupt frames
@pytest.mark.parametrize("indexed", [True, False])
def test_corrupt_shard_is_named(records, tmp_path, capsys, indexed):
    copy = tmp_path / "records"
    shutil.copytree(records, copy)
    shard = corrupt_frames(copy, "test", indexed=indexed)  # frames the evaluation reads
    code = train.main(["--records", str(copy), "--output_dir", str(tmp_path / "run"),
                       *TRAIN_ARGS, "--epochs", "1", "--steps_per_epoch", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(shard) in err[0] and "--skip_corrupt" in err[0]


@pytest.mark.slow
def test_cli_misuse_and_nan_loss(records, tmp_path):
    assert_one_line_error(_cli("train.py", "--records", str(tmp_path / "none"),
                               "--output_dir", str(tmp_path / "run"), timeout=120),
                          "no manifest.json")
    run_dir = tmp_path / "nan"
    result = _cli("train.py", "--records", str(records), "--output_dir", str(run_dir),
                  *TRAIN_ARGS, "--epochs", "2", "--optimizer", "sgd",
                  "--learning_rate", "1e30", "--schedule", "constant", timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert_one_line_error(result, "epoch 1", "lower --learning_rate")
    assert not (run_dir / "metrics.json").exists()


def _hold(folder):
    """Another process holding the folder's writer lock, as a running train.py does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom preprocess.folder_lock import "
         "FolderLock\nlock = FolderLock(sys.argv[1]).acquire()\nprint('held', flush=True)\n"
         "time.sleep(600)", str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_one_output_dir_stops_at_once_and_changes_nothing(records, tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        (run_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
        before = {p: p.read_bytes() for p in run_dir.iterdir()}
        started = time.time()
        result = _cli("train.py", "--records", str(records), "--output_dir", str(run_dir),
                      *TRAIN_ARGS, timeout=120)
        assert_one_line_error(result, str(run_dir), f"process {holder.pid}", "started")
        assert result.returncode == 2 and time.time() - started < 30
        assert {p: p.read_bytes() for p in run_dir.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_refused_for_a_missing_init_from_keeps_the_old_run(records, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    assert _train(records, run_dir, "--overwrite", "--init_from", str(tmp_path / "gone.pth")) == 2
    assert (run_dir / "metrics.json").read_text() == "{}"


@pytest.mark.slow
def test_one_line_errors_come_alone_before_and_after_tensorflow_loads(records, tmp_path):
    # No TensorFlow start-up notices, with no TF_CPP_MIN_LOG_LEVEL set by the user.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    cases = [(["--records", str(tmp_path / "none")], "no manifest.json"),
             (["--records", str(records), "--image_size", "64"], "larger than the 54-pixel"),
             # After TensorFlow loads: the --init_from file is looked for then.
             (["--records", str(records), "--init_from", str(tmp_path / "gone.keras")],
              "gone.keras")]
    for args, fragment in cases:
        run_dir = tmp_path / f"run{len(fragment)}"
        result = subprocess.run(
            [sys.executable, "train.py", *args, "--output_dir", str(run_dir), "--model",
             "r2plus1d_10", "--image_size", "48", "--num_frames", "4", *args[2:]],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ") and fragment in result.stderr
        assert not run_dir.exists()  # a refused run leaves no folder behind, lock included


@pytest.mark.slow
def test_a_damaged_history_resumes(records, tmp_path):
    run_dir = tmp_path / "run"
    args = ("--epochs", "2", "--steps_per_epoch", "1", "--precise_bn_batches", "1")
    assert _train(records, run_dir, *args) == 0
    # As a kill after the first epoch leaves it, with a second header and a torn
    # row, as two writers or a kill while writing leave them.
    (run_dir / "metrics.json").unlink()
    metadata = run_dir / "backup" / "training_metadata.json"
    metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "epoch": 1}))
    history = run_dir / "history.csv"
    header, first, second = history.read_text().splitlines()
    history.write_text(f"{header}\n{first}\n{header}\n{first}\n{second[:len(second) // 2]}")
    assert _train(records, run_dir, *args) == 0
    with open(history) as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1]
    metadata.write_text('{"epoch": 1, "ba')  # torn: one line saying what to do
    (run_dir / "metrics.json").unlink()
    result = _cli("train.py", "--records", str(records), "--output_dir", str(run_dir),
                  *TRAIN_ARGS, *args, timeout=120)
    assert_one_line_error(result, "training_metadata.json is damaged", "--overwrite")


@pytest.mark.slow
@pytest.mark.parametrize("fills, file, resumes_from", [
    ("on_epoch_end", "backup/latest.weights.h5", 1),  # the second epoch's saves
    ("on_train_end", "model.keras", 2),  # the exports, after the last epoch's saves
])
def test_a_full_disk_while_saving_is_one_line_and_the_rerun_resumes(records, tmp_path, fills,
                                                                    file, resumes_from):
    run_dir = tmp_path / "run"
    args = ["--records", str(records), "--output_dir", str(run_dir), *TRAIN_ARGS,
            "--epochs", "2", "--steps_per_epoch", "1", "--precise_bn_batches", "1"]
    # The disk fills: files may then grow to 4 kB, as under `ulimit -f 8` (Python
    # takes SIGXFSZ as an OSError, EFBIG).
    full_disk = textwrap.dedent(f"""
        import resource, sys, model, train
        model.quiet_tensorflow_logs()  # as train.py's main does, before TensorFlow loads
        model.import_tensorflow()
        import keras
        from model.training import recipe

        class FillTheDisk(keras.callbacks.Callback):  # first, so before the saves
            def on_epoch_end(self, epoch, logs=None):
                if "{fills}" == "on_epoch_end" and epoch == 1:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

            def on_train_end(self, logs=None):
                if "{fills}" == "on_train_end":
                    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        make_callbacks = recipe.make_callbacks
        recipe.make_callbacks = lambda run: [FillTheDisk(), *make_callbacks(run)]
        train.exit_process(train.main(sys.argv[1:]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full = subprocess.run([sys.executable, "-c", full_disk, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 2  # not a crash as the process exits
    assert_one_line_error(full, f"could not write {run_dir / file} (File too large)",
                          "run the same command again")
    assert len(full.stderr.splitlines()) == 1, full.stderr
    assert not list(run_dir.rglob("*.partial*"))  # nothing half-written is left to read
    assert not (run_dir / "model.keras").exists() and not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text()) == {
        "epoch": resumes_from, "batch": 0}
    resumed = _cli("train.py", *args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} from epoch {resumes_from} of 2" in resumed.stdout
    with open(run_dir / "history.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1]
    assert RunDir(run_dir).read_architecture().count_params() == keras.saving.load_model(
        run_dir / "model.keras", compile=False).count_params()  # whole, and it loads


def _small_source(tmp_path, num_classes):
    """A run folder holding only a `model.keras` of TRAIN_ARGS's architecture."""
    source = tmp_path / f"source{num_classes}"
    source.mkdir()
    network = build_model("r2plus1d_10", num_classes, 8, 48, width_multiplier=0.25)
    network.save(source / "model.keras")
    return source


@pytest.mark.slow
def test_init_from_a_run_starts_from_its_weights(records, tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (4, 8, 48, 48, 3), dtype=np.uint8)
    source = _small_source(tmp_path, 2)
    for init_from in (source, source / "model.keras"):  # a run folder, or a .keras file
        config = resolve_config(["--records", str(records), "--output_dir",
                                       str(tmp_path / "run"), *TRAIN_ARGS,
                                       "--init_from", str(init_from)])
        network = build_for_run(config, 2, RunDir(tmp_path / "run"))
        expected = keras.saving.load_model(source / "model.keras").predict(clips, verbose=0)
        np.testing.assert_array_equal(network.predict(clips, verbose=0), expected)
    # Another architecture is refused by name.
    config = resolve_config(["--records", str(records), "--output_dir",
                                   str(tmp_path / "run"), *TRAIN_ARGS, "--width_multiplier",
                                   "0.5", "--init_from", str(source)])
    with pytest.raises(pretrained.WeightsError, match="--width_multiplier"):
        build_for_run(config, 2, RunDir(tmp_path / "run"))


@pytest.mark.slow
def test_init_from_another_class_count_trains_a_new_head_and_resumes_without_it(
        records, tmp_path, capsys):
    source = _small_source(tmp_path, 5)
    run_dir = tmp_path / "run"
    args = ["--init_from", str(source), "--epochs", "1", "--steps_per_epoch", "2"]
    assert _train(records, run_dir, *args) == 0
    out = capsys.readouterr().out
    assert f"from {source}; a new classifier" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["init_from_sha256"] == hashlib.sha256(
        (source / "model.keras").read_bytes()).hexdigest()
    trained = keras.saving.load_model(run_dir / "model.keras")
    assert trained.get_layer("logits").kernel.shape == (trained.get_layer("pool")
                                                         .output.shape[-1], 2)
    # The identical command of the finished run does nothing; of a run killed
    # before its metrics, it resumes from the run's own checkpoint: the source
    # is not read again (it is gone), and its hash stays on record.
    shutil.rmtree(source)
    assert _train(records, run_dir, *args) == 0
    assert "nothing to do" in capsys.readouterr().out
    (run_dir / "metrics.json").unlink()
    assert _train(records, run_dir, *args) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "weights:" not in out
    assert json.loads((run_dir / "config.json").read_text())["init_from_sha256"] == \
        config["init_from_sha256"]
    assert json.loads((run_dir / "config.json").read_text())["init_from_sha256"] == \
        config["init_from_sha256"]


@pytest.mark.slow
def test_eval_checkpoint_best_evaluates_the_best_validated_model(records, tmp_path):
    run_dir = tmp_path / "run"
    assert _train(records, run_dir, "--epochs", "3", "--steps_per_epoch", "3",
                  "--eval_checkpoint", "best") == 0
    history = evaluation.read_history(run_dir / "history.csv")
    scores = [float(row["val_accuracy"]) for row in history.values()]
    evaluated = json.loads((run_dir / "metrics.json").read_text())["evaluated"]
    assert evaluated == {"checkpoint": "best", "epoch": scores.index(max(scores)) + 1,
                         "split": "test",
                         "views": {"clips": 2, "crops": 1, "crop": "48x48, stored scale"}}
    # The exported model is that checkpoint.
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, 48, 48, 3), dtype=np.uint8)
    best = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    exported = keras.saving.load_model(run_dir / "model.keras")
    np.testing.assert_array_equal(exported.predict(clips, verbose=0),
                                  best.predict(clips, verbose=0))


def _tree_digest(folder):
    """`{relative path: sha256}` of every file below `folder`."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_rerun_of_a_finished_run_changes_nothing(finished_run, records, capsys, tmp_path):
    before = _tree_digest(finished_run)
    mtimes = {path: path.stat().st_mtime_ns for path in finished_run.rglob("*")}
    # The records as the identical preprocessing command writes them again, elsewhere: the
    # same shards, another time in the manifest, another path.
    again = tmp_path / "again"
    shutil.copytree(records, again)
    manifest = json.loads((again / "manifest.json").read_text())
    manifest.update(created="2031-01-01T00:00:00+00:00", seconds=manifest["seconds"] + 1)
    (again / "manifest.json").write_text(json.dumps(manifest))
    for records_dir in (records, again):
        assert _train(records_dir, finished_run, "--epochs", "15", "--steps_per_epoch",
                      "12") == 0
        out = capsys.readouterr().out
        assert "is a finished run of this configuration; nothing to do" in out
        assert f"metrics {finished_run / 'metrics.json'}" in out
    assert _tree_digest(finished_run) == before
    assert {path: path.stat().st_mtime_ns for path in finished_run.rglob("*")} == mtimes


@pytest.mark.slow
def test_overwrite_trains_a_finished_run_again(records, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ("--epochs", "1", "--steps_per_epoch", "1", "--precise_bn_batches", "1")
    assert _train(records, run_dir, *args) == 0
    (run_dir / "stale.txt").write_text("left by the first run")
    assert _train(records, run_dir, *args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _train(records, run_dir, *args, "--overwrite") == 0
    assert "nothing to do" not in capsys.readouterr().out
    assert not (run_dir / "stale.txt").exists() and (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--epoch", "3"], "unknown argument --epoch; did you mean --epochs?"),
    (["--learning_rat", "0.1"], "did you mean --learning_rate?"),
    (["--eval_clip=3"], "unknown argument --eval_clip; did you mean --eval_clips?"),
    (["--batch_size", "eight"], "invalid int value: 'eight'"),
])
def test_misspelt_and_abbreviated_flags_are_refused_in_one_line(records, tmp_path, argv,
                                                                fragment):
    result = _cli("train.py", "--records", str(records), "--output_dir",
                  str(tmp_path / "run"), *argv, timeout=120)
    assert_one_line_error(result, fragment)
    assert "usage:" not in result.stderr and not (tmp_path / "run").exists()


def test_an_nvidia_gpu_tensorflow_cannot_see_stops_the_run(records, tmp_path, capsys,
                                                           monkeypatch):
    from model.training import precision
    monkeypatch.setattr(precision, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(precision, "visible_gpus", lambda: [])  # as a CPU-only TensorFlow
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    code = _train(records, tmp_path / "run", "--epochs", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "NVIDIA driver but TensorFlow sees no GPU" in err[0] and "[gpu]" in err[0]
    assert "--allow_cpu" in err[0] and not (tmp_path / "run").exists()
    # --allow_cpu goes past the check, to the next one (records that do not exist).
    code = train.main(["--records", str(tmp_path / "none"), "--output_dir",
                       str(tmp_path / "run"), "--allow_cpu"])
    assert code == 2 and "no manifest.json" in capsys.readouterr().err


MIRRORED = """
import json, os, sys
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # two logical CPUs stand for two GPUs
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import train
argv = json.loads(sys.argv[1])
# float16 loss scaling cannot keep two replicas in step: refused before any work.
assert train.main(argv + ["--precision", "mixed_float16"]) == 2
sys.exit(train.main(argv))
"""


@pytest.mark.slow
def test_two_replicas_train_evaluate_and_export_like_one_device(records, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["--records", str(records), "--output_dir", str(run_dir), *TRAIN_ARGS,
            "--epochs", "2", "--steps_per_epoch", "3", "--batch_size", "4",
            "--precise_bn_batches", "3", "--strategy", "mirrored", "--eval_crops", "3"]
    result = _cli("-c", MIRRORED, json.dumps(argv), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mixed_float16 cannot train on 2 replicas" in result.stderr
    assert "MirroredStrategy with 2 replica(s), global batch 8" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["num_clips"] == 16 * 2 * 3  # not twice as many

    # The exported weights, evaluated here on one device, give the same report.
    config = json.loads((run_dir / "config.json").read_text())["config"]
    spec = reader.ClipSpec.for_run(config).evaluation
    dataset = reader.make_dataset(records, "test", spec, batch_size=5, with_video_id=True)
    model = keras.saving.load_model(run_dir / "model.keras")
    report, _ = evaluation.classification_report(
        *evaluation.predict_videos(model, dataset), ["Grow", "SlideRight"])
    assert report == metrics["test"]


def test_precise_statistics_depend_only_on_the_seed_and_weights(records):
    # A resumed run recomputes its statistics on a new dataset object in a new
    # process: they must be those of an uninterrupted run, bit for bit.
    from model.training.precise_bn import PreciseBatchNorm
    config = resolve_config(["--records", str(records), "--output_dir", "unused",
                                   *TRAIN_ARGS, "--batch_size", "4"])
    spec = reader.ClipSpec.for_run(config).training
    keras.utils.set_random_seed(0)
    model = build_model("r2plus1d_10", 2, 8, 48, width_multiplier=0.25)

    def statistics(seed):
        dataset = reader.make_dataset(records, "train", spec, batch_size=4, repeat=True,
                                      seed=seed, reshuffle=False, deterministic=True)
        PreciseBatchNorm(model, dataset, num_batches=3)()
        return np.concatenate([w.ravel() for w in model.get_weights()])

    first = statistics(0)
    np.testing.assert_array_equal(first, statistics(0))
    assert not np.array_equal(first, statistics(1))


@pytest.mark.slow  # it trains
def test_init_from_a_keras_file_builds_the_network_as_its_source_was(records, tmp_path):
    # Input normalisation, PyTorch padding and the BatchNorm epsilon are config,
    # not weights: a continued Kinetics fine-tuning must keep them.
    keras.utils.set_random_seed(0)
    source = build_model("r2plus1d_10", 2, 8, 48, width_multiplier=0.25, bn_epsilon=1e-5,
                         padding="symmetric", input_stats=((0.4, 0.4, 0.4), (0.2, 0.25, 0.3)))
    source.save(tmp_path / "source.keras")
    config = resolve_config(["--records", str(records), "--output_dir", "unused",
                                   *TRAIN_ARGS, "--init_from", str(tmp_path / "source.keras")])
    network = build_for_run(config, 2, RunDir(tmp_path / "run"))
    clips = np.random.default_rng(0).integers(0, 256, (2, 8, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(network(clips)), np.asarray(source(clips)),
                               rtol=1e-5, atol=1e-5)
    assert network.get_layer("stage1_block1").bn1.epsilon == 1e-5
