"""The run folder: its identity refuses to mix runs, its files name themselves, its config
and architecture read back."""

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from model.network import layers as video_layers
from model.training import run_dir
from model.training.run_dir import RunDir, RunDirError
from records import write_records

CONFIG = {"model": "r2plus1d_10", "epochs": 3, "output_dir": "runs/a", "strategy": "auto",
          "overwrite": False}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    return write_records(tmp_path_factory.mktemp("run_dir") / "records",
                         [dict(video_id="v_A_g01_c01", class_name="A", frames=frames)])


def test_identity_is_what_changes_the_computation_and_the_records(records, tmp_path):
    identity = run_dir.identity(CONFIG, str(records))
    assert set(identity) == {"model", "epochs", "records_fingerprint"}
    elsewhere = dict(CONFIG, output_dir="runs/b", strategy="mirrored", overwrite=True)
    assert run_dir.identity(elsewhere, str(records)) == identity
    assert run_dir.identity(dict(CONFIG, epochs=4), str(records)) != identity
    other = write_records(tmp_path / "other", [dict(video_id="v_B_g01_c01", class_name="B",
                                                    frames=np.zeros((2, 8, 8, 3), np.uint8))])
    assert run_dir.fingerprint(str(other)) != identity["records_fingerprint"]


def test_records_written_again_by_the_same_command_keep_their_fingerprint(records, tmp_path):
    """The job's time, the path typed and --overwrite are the job's, not the records'."""
    again = tmp_path / "moved" / "records"
    shutil.copytree(records, again)
    manifest = json.loads((again / "manifest.json").read_text())
    before = run_dir.fingerprint(str(records))

    def rewritten(**changes):
        changed = json.loads(json.dumps(manifest))
        for key, value in changes.items():
            *parents, last = key.split(".")
            node = changed
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = value
        (again / "manifest.json").write_text(json.dumps(changed, indent=2))
        return run_dir.fingerprint(str(again))

    assert rewritten() == before
    assert rewritten(created="2031-01-01T00:00:00+00:00", seconds=99.0, source="../videos",
                     **{"options.source": "../videos", "options.output_dir": str(again),
                        "options.overwrite": True}) == before
    for change in ({"options.seed": 7}, {"options.image_size": 64}, {"classes": ["B"]},
                   {"splits.all.shard_bytes": [1]}):
        assert rewritten(**change) != before, change


def test_records_of_other_labels_differ_at_equal_byte_counts(tmp_path):
    """Two sources whose same-length class names are swapped: every count and byte length
    is the same, the labels are not."""
    frames = np.zeros((2, 8, 8, 3), np.uint8)

    def records(name, first, second):
        return write_records(tmp_path / name, [
            dict(video_id="v_A_g01_c01", class_name=first, frames=frames),
            dict(video_id="v_B_g01_c01", class_name=second, frames=frames)],
            classes=["run", "sit"])

    one, two = records("one", "run", "sit"), records("two", "sit", "run")
    manifest = json.loads((one / "manifest.json").read_text())
    assert manifest["splits"] == json.loads((two / "manifest.json").read_text())["splits"]
    assert run_dir.fingerprint(str(one)) != run_dir.fingerprint(str(two))
    # Records of before indexes are known by their whole manifest, strictly.
    for index in one.glob("*/*.index"):
        index.unlink()
    assert run_dir.fingerprint(str(one)) == hashlib.sha256(
        (one / "manifest.json").read_bytes()).hexdigest()[:16]


def test_a_run_recorded_before_keeps_resuming(records, tmp_path):
    """Recorded with the whole manifest's fingerprint and the path typed to the records."""
    config = dict(CONFIG, records=str(records))
    identity = run_dir.identity(config, str(records))
    recorded = dict(identity, records=str(records), records_fingerprint=hashlib.sha256(
        (records / "manifest.json").read_bytes()).hexdigest()[:16])
    run = RunDir(tmp_path / "run")
    run.prepare(recorded)
    run.write_config(config, recorded)
    (tmp_path / "run" / "metrics.json").write_text("{}")
    assert run.is_complete(identity, str(records)) and not run.is_complete(identity)
    run.prepare(identity, records_dir=str(records))  # accepted: the same run
    other = write_records(tmp_path / "other", [dict(video_id="v_B_g01_c01", class_name="B",
                                                    frames=np.zeros((2, 8, 8, 3), np.uint8))])
    with pytest.raises(RunDirError, match=r"holds a run of other records: --records names "
                                          r"records of other videos or other preprocessing"):
        run.prepare(run_dir.identity(config, str(other)), records_dir=str(other))


def test_a_folder_of_another_identity_is_refused_unless_overwritten(tmp_path):
    run = RunDir(tmp_path / "run")
    mine, theirs = {"epochs": 3, "seed": 0}, {"epochs": 4, "seed": 0}
    run.prepare(mine)
    run.write_config({"epochs": 3}, mine, replicas=1)
    run.prepare(mine)  # the same run: resumed
    with pytest.raises(RunDirError, match=r"another configuration \(epochs differ\).*--overwrite"):
        run.prepare(theirs)
    (tmp_path / "run" / "history.csv").write_text("epoch\n0\n")
    run.prepare(theirs, overwrite=True)  # emptied, then made again
    assert list((tmp_path / "run").iterdir()) == []


def test_config_records_options_identity_facts_and_versions(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_complete({"a": 1})
    with pytest.raises(RunDirError, match="config.json is missing; point at a run folder"):
        run.read_config()
    run.write_config({"epochs": 3}, {"a": 1}, replicas=2)
    saved = run.read_config()
    assert saved["config"] == {"epochs": 3} and saved["identity"] == {"a": 1}
    assert saved["replicas"] == 2 and set(saved["versions"]) == {
        "twoplusone", "tensorflow", "keras", "python"}
    assert not run.is_complete({"a": 1})  # no metrics yet
    (tmp_path / "metrics.json").write_text("{}")
    assert run.is_complete({"a": 1}) and not run.is_complete({"a": 2})
    with pytest.raises(RunDirError, match="model.keras is missing; point at a run folder "
                                          "that train.py finished"):
        run.require(run.metrics, run.model)


def test_the_architecture_reads_back_with_our_layers(tmp_path):
    run = RunDir(tmp_path)
    inputs = keras.Input((4, 8, 8, 3))
    model = keras.Model(inputs, video_layers.Conv2Plus1D(5, 3, name="conv")(inputs))
    run.write_architecture(model)
    rebuilt = run.read_architecture()
    assert isinstance(rebuilt.get_layer("conv"), video_layers.Conv2Plus1D)
    assert rebuilt.get_layer("conv").filters == 5
    assert not (tmp_path / "architecture.json.partial").exists()


def test_resume_epoch_is_the_backups_epoch(tmp_path):
    run = RunDir(tmp_path)
    assert run.resume_epoch() == 0
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 4}))
    assert run.resume_epoch() == 4


def test_the_manifest_summary_is_what_inference_needs(records):
    manifest = json.loads((records / "manifest.json").read_text())
    summary = run_dir.manifest_summary(manifest)
    assert set(summary) == set(run_dir.MANIFEST_SUMMARY_KEYS)
    assert summary["geometry"] == manifest["geometry"] and summary["encoding"]["quality"] == 90


def test_a_write_cut_short_leaves_the_previous_file_whole_and_names_the_file(tmp_path):
    path = str(tmp_path / "history.csv")
    run_dir.write_text(path, "epoch\n0\n")

    def fills_the_disk(partial):
        with open(partial, "w") as handle:
            handle.write("epoch\n0\n1")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() says it

    with pytest.raises(OSError) as raised:
        run_dir.write_whole(path, fills_the_disk)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]  # no partial left
    assert (tmp_path / "history.csv").read_text() == "epoch\n0\n"


def test_a_folder_is_replaced_whole(tmp_path):
    path = tmp_path / "saved_model"

    def write(partial):
        os.makedirs(partial)
        (Path(partial) / "saved_model.pb").write_text(str(len(os.listdir(tmp_path))))

    run_dir.write_whole(str(path), write)
    (path / "stale").write_text("from the previous export")
    run_dir.write_whole(str(path), write)
    assert sorted(p.name for p in path.iterdir()) == ["saved_model.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]

    def fills_the_disk(partial):
        write(partial)
        raise OSError(errno.ENOSPC, "No space left on device")

    before = (path / "saved_model.pb").read_text()
    with pytest.raises(OSError):
        run_dir.write_whole(str(path), fills_the_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]  # the old one, whole
    assert (path / "saved_model.pb").read_text() == before

    # A kill between moving the old folder aside and the new one in: the next write
    # finds the old one aside and puts it back, so that a failure then keeps it.
    os.replace(path, str(path) + ".previous")
    with pytest.raises(OSError):
        run_dir.write_whole(str(path), fills_the_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]
    assert (path / "saved_model.pb").read_text() == before
