"""Whole preprocessing runs on each layout, with synthetic and real videos, then train and predict."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REAL_CLIPS, REPO, assert_one_line_error, run_cli
from preprocess import pipeline
from records import read_split

# The default runner: the DirectRunner with a thread per core.
SMALL = ["--image_size", "48"]


def _place(synthetic_dir, real_ucf101_dir, root, plan):
    """Copies videos into a layout: `plan` maps a new relative path to a source video name."""
    for rel, name in plan.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = real_ucf101_dir if name in REAL_CLIPS else synthetic_dir
        shutil.copy(folder / f"{name}.avi", target)
    return root


def _python(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def _synthetic(cls, count):
    return [f"v_{cls}_g{g:02d}_c{c:02d}" for g in (1, 2, 3) for c in (1, 2)][:count]


@pytest.fixture(scope="module")
def class_folder_records(synthetic_dir, real_ucf101_dir, tmp_path_factory):
    """Records from `<class>/<video>` folders: a class with a space, one with a non-ASCII
    letter, real clips among them and a file name with `!` and `&`."""
    root = tmp_path_factory.mktemp("class_folders")
    plan = {f"Grow up/{name}.avi": name for name in _synthetic("Grow", 6)}
    plan.update({f"Café Shrink/take 2/{name}.mp4": name for name in _synthetic("Shrink", 6)})
    plan["Jump Rope/a!b&c.avi"] = "v_ApplyEyeMakeup_g01_c01"
    plan["Jump Rope/d.avi"] = "v_Shotput_g05_c02"
    source = _place(synthetic_dir, real_ucf101_dir, root / "videos", plan)
    out = root / "records"
    manifest = pipeline.run(["--source", str(source), "--output_dir", str(out),
                             "--split_fractions", "train=0.5,test=0.5", "--seed", "3",
                             *SMALL])
    return out, manifest, source


def test_class_folders_run(class_folder_records):
    out, manifest, _ = class_folder_records
    assert manifest["layout"] == "class_folders"
    assert manifest["classes"] == ["Café Shrink", "Grow up", "Jump Rope"]
    assert manifest["split_spec"] == {"kind": "fractions", "seed": 3,
                                      "fractions": {"train": 0.5, "test": 0.5}}
    for split in ("train", "test"):
        info = manifest["splits"][split]
        assert info["per_class"] == {"Café Shrink": 3, "Grow up": 3, "Jump Rope": 1}
        assert info["num_failed"] == 0
    videos = read_split(out, "train") + read_split(out, "test")
    ids = [v["video_id"] for v in videos]
    assert len(ids) == len(set(ids)) == 14
    assert "a!b&c" in ids
    for video in videos:
        assert manifest["classes"][video["label"]] == video["label_text"]
        assert (video["group"], video["clip"]) == (-1, -1)
    real = next(v for v in videos if v["video_id"] == "a!b&c")
    assert (real["label_text"], real["num_frames"]) == ("Jump Rope", 164)


@pytest.mark.slow
def test_train_and_predict_on_class_folder_records(class_folder_records, tmp_path):
    out, _, source = class_folder_records
    run_dir = tmp_path / "run"
    result = _python("train.py", "--records", str(out), "--output_dir", str(run_dir),
                     "--model", "r2plus1d_10", "--width_multiplier", "0.25",
                     "--num_frames", "4", "--image_size", "32", "--batch_size", "4",
                     "--epochs", "2", "--eval_clips", "1",
                     "--precise_bn_batches", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]["per_class"]) == {"Café Shrink", "Grow up", "Jump Rope"}
    assert metrics["test"]["num_videos"] == 7
    assert json.loads((run_dir / "classes.json").read_text(encoding="utf-8")) == [
        "Café Shrink", "Grow up", "Jump Rope"]
    video = source / "Jump Rope" / "a!b&c.avi"
    result = _python("scripts/predict.py", "--model", str(run_dir), "--top", "3", str(video))
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]  # one JSON line a video
    assert row["path"] == str(video)
    ranking = row["top"]
    assert sorted(entry["class"] for entry in ranking) == ["Café Shrink", "Grow up",
                                                            "Jump Rope"]
    assert abs(sum(entry["probability"] for entry in ranking) - 1) < 1e-4


HMDB_NAMES = {  # HMDB51-style names, with the punctuation its files have.
    "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0", "Brushing_Hair_!_h_nm_np1_le_0",
                   "Prelinger_(1950)_brush_hair_f_nm_np1_fr_med_1",
                   "Don't_&_do_brush_hair_u_nm_np1_ri_0"],
    "cartwheel": ["cartwheel_0", "cartwheel_1", "cartwheel_2", "cartwheel_3"],
}


@pytest.mark.slow
def test_hmdb51_run_from_split_files_in_a_zip(synthetic_dir, real_ucf101_dir, tmp_path):
    plan = {}
    for cls, names in HMDB_NAMES.items():
        donors = _synthetic("Grow" if cls == "brush_hair" else "SlideUp", 4)
        plan.update({f"{cls}/{name}.avi": donor for name, donor in zip(names, donors)})
    plan["cartwheel/cartwheel_3.avi"] = "v_CricketBowling_g05_c02"  # a real clip
    source = _place(synthetic_dir, real_ucf101_dir, tmp_path / "hmdb51", plan)
    tags = {"brush_hair": [1, 1, 2, 0], "cartwheel": [1, 2, 1, 2]}
    lists = tmp_path / "test_train_splits.zip"
    with zipfile.ZipFile(lists, "w") as zf:
        for cls, names in HMDB_NAMES.items():
            for index in (1, 2, 3):
                zf.writestr(f"testTrainMulti_7030_splits/{cls}_test_split{index}.txt",
                            "".join(f"{n}.avi {t} \n" for n, t in zip(names, tags[cls])))
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", str(source), "--split_lists", str(lists),
                             "--output_dir", str(out), *SMALL])
    assert manifest["layout"] == "hmdb51"
    assert manifest["classes"] == ["brush_hair", "cartwheel"]
    train = {v["video_id"]: v["label_text"] for v in read_split(out, "train")}
    test = {v["video_id"]: v["label_text"] for v in read_split(out, "test")}
    assert train == {HMDB_NAMES["brush_hair"][0]: "brush_hair",
                     HMDB_NAMES["brush_hair"][1]: "brush_hair",
                     "cartwheel_0": "cartwheel", "cartwheel_2": "cartwheel"}
    assert test == {HMDB_NAMES["brush_hair"][2]: "brush_hair",
                    "cartwheel_1": "cartwheel", "cartwheel_3": "cartwheel"}
    # A split file that names no video of the source is refused before any work.
    with zipfile.ZipFile(lists, "a") as zf:
        zf.writestr("testTrainMulti_7030_splits/golf_test_split1.txt", "golf_0.avi 1\n")
    result = run_cli("preprocess", "--source", str(source), "--split_lists",
                     str(lists), "--output_dir", str(tmp_path / "again"))
    assert_one_line_error(result, "golf_test_split1.txt names no video")
    assert not (tmp_path / "again").exists()


@pytest.mark.slow
def test_annotations_run_records_missing_and_corrupt_files(synthetic_dir, real_ucf101_dir,
                                                           tmp_path):
    plan = {f"clips/{n}.avi": n for n in _synthetic("SlideLeft", 3) + _synthetic("Grow", 3)}
    plan["clips/real.avi"] = "v_Shotput_g05_c02"
    source = _place(synthetic_dir, real_ucf101_dir, tmp_path / "videos", plan)
    (source / "clips" / "corrupt.avi").write_bytes(b"\x00" * 4000)
    rows = ["path,label,split,group"]
    rows += [f"clips/{n}.avi,left slide,{s},{n[-7:-4]}"
             for n, s in zip(_synthetic("SlideLeft", 3), ("train", "train", "test"))]
    rows += [f"clips/{n}.avi,growing,{s},{n[-7:-4]}"
             for n, s in zip(_synthetic("Grow", 3), ("train", "test", "test"))]
    rows += ["clips/real.avi,left slide,train,", "clips/corrupt.avi,growing,train,",
             "clips/gone.avi,growing,test,"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", str(source), "--annotations",
                             str(tmp_path / "labels.csv"), "--output_dir", str(out), *SMALL])
    assert manifest["layout"] == "annotations"
    assert manifest["classes"] == ["growing", "left slide"]
    assert manifest["splits"]["train"]["num_videos"] == 4
    assert manifest["splits"]["train"]["num_failed"] == 1
    assert manifest["splits"]["test"]["num_videos"] == 3
    assert manifest["splits"]["test"]["num_failed"] == 1
    failures = {f["video_id"]: f["reason"] for f in
                map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert set(failures) == {"corrupt", "gone"}
    assert "not in the source" in failures["gone"]
    ids = [v["video_id"] for split in ("train", "test") for v in read_split(out, split)]
    assert len(ids) == len(set(ids)) == 7 and "real" in ids
    groups = {v["video_id"]: v["group"] for v in read_split(out, "train")}
    assert groups["real"] == -1 and groups[_synthetic("SlideLeft", 1)[0]] >= 0


@pytest.mark.slow
def test_class_folder_zip_read_over_http(synthetic_dir, tmp_path, range_server):
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for cls in ("Grow", "Shrink"):
            for name in _synthetic(cls, 4):
                zf.write(synthetic_dir / f"{name}.avi", f"mine/{cls.lower()}s/{name}.avi")
        zf.writestr("mine/labels.txt", "shrinks\ngrows\n")
    server = range_server()
    out = tmp_path / "records"
    # Every file has a UCF101 name, so auto would read the class from it:
    # the folders name these classes.
    manifest = pipeline.run(["--source", server.url("mine.zip"), "--output_dir", str(out),
                             "--layout", "class_folders", "--class_names", "labels.txt", "--per_class", "train=3,test=1",
                             *SMALL])
    assert manifest["layout"] == "class_folders"
    assert manifest["classes"] == ["shrinks", "grows"]  # the file's order, not sorted
    train = read_split(out, "train")
    assert len(train) == 6
    assert {(v["label"], v["label_text"]) for v in train} == {(0, "shrinks"), (1, "grows")}
