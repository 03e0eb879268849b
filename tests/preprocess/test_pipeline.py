"""The Beam job: composite transforms under TestPipeline, whole runs on the DirectRunner
over every layout, and the command line's one-line refusals."""

import json
import os
import resource
import shutil
import subprocess
import sys
import zipfile

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import REAL_CLIPS, REPO, SYNTHETIC, assert_one_line_error, copy_videos, run_cli
from preprocess import pipeline, shards, tasks
from preprocess.errors import PreprocessError
from preprocess.layouts import ucf101_ref
from preprocess.synthetic import MOTION_CLASSES
from records import NOT_A_VIDEO, read_split, shard_files

FIXTURE_LISTS = str(REPO / "tests" / "fixtures" / "ucfTrainTestlist")
IN_MEMORY = "--direct_running_mode=in_memory"
CLIPS_PER_CLASS = SYNTHETIC["groups"] * SYNTHETIC["clips_per_group"]
# Layout runs take the default runner, the DirectRunner with a thread per core.
SMALL = ["--image_size", "48"]


def _task(folder, name, split="train", label=0):
    return tasks.VideoTask(ucf101_ref(str(folder / name)), split, label)


def _decode_fn(source, output_dir, **overrides):
    options = dict(fps=None, max_frames=None, resize="short_side", image_size=32,
                   jpeg_quality=90)
    options.update(overrides)
    return pipeline.DecodeVideoFn(str(source), str(output_dir), **options)


# ---------------------------------------------------------------------------
# Composite transforms
# ---------------------------------------------------------------------------

def test_decode_videos_routes_failures(synthetic_dir, tmp_path):
    folder = copy_videos(synthetic_dir, tmp_path / "src",
                         ["v_Grow_g01_c01.avi", "v_Shrink_g02_c02.avi"])
    (folder / "v_Grow_g09_c01.avi").write_bytes(b"\x00" * 1000)
    tasks = [_task(folder, "v_Grow_g01_c01.avi", label=0),
             _task(folder, "v_Shrink_g02_c02.avi", "test", 1),
             _task(folder, "v_Grow_g09_c01.avi", "val", 0)]
    with TestPipeline() as p:
        result = (p | beam.Create(tasks)
                  | pipeline.DecodeVideos(_decode_fn(folder, tmp_path / "out")))
        summary = result.fragments | beam.FlatMap(
            lambda f: [(f.split, *video, len(f.sizes)) for video in f.videos])
        assert_that(summary, equal_to([
            ("train", "Grow", SYNTHETIC["num_frames"], 32, 43, 1),
            ("test", "Shrink", SYNTHETIC["num_frames"], 32, 43, 1)]))
        failed = result[pipeline.DecodeVideoFn.FAILED] | beam.Map(
            lambda f: (f["video_id"], f["split"], "OpenCV" in f["reason"]
                       or "zero frames" in f["reason"]))
        assert_that(failed, equal_to([("v_Grow_g09_c01", "val", True)]),
                    label="CheckFailures")


def test_summarise_counts_per_split_and_class():
    fragments = [shards.Fragment("train", "f1", (9, 9), (("A", 10, 8, 8), ("A", 5, 8, 8)), "a"),
                 shards.Fragment("test", "f2", (9,), (("B", 7, 8, 10),), "b")]
    with TestPipeline() as p:
        summary = (p | beam.Create(fragments)
                   | beam.CombineGlobally(pipeline.SummariseFn())
                   | beam.Map(json.loads))
        assert_that(summary, equal_to([{
            "videos": [["test", "B", 1], ["train", "A", 2]],
            "frames": {"train": 15, "test": 7},
            "sizes": [[8, 8], [8, 10]]}]))


# ---------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_multiprocessing_run_on_synthetic_and_real_clips(synthetic_dir, real_ucf101_dir,
                                                         tmp_path):
    source = copy_videos(synthetic_dir, tmp_path / "mixed")
    for name in REAL_CLIPS:  # linked, not copied: the real clips stay in ../shared
        os.symlink(real_ucf101_dir / f"{name}.avi", source / f"{name}.avi")
    (source / "README.txt").write_text("not a video")
    out = tmp_path / "records"
    # Beam's process mode; the default, threads, runs on the layouts below.
    manifest = pipeline.run(["--source", str(source), "--output_dir", str(out),
                             "--num_shards", "2", "--direct_running_mode=multi_processing"])

    classes = sorted(list(MOTION_CLASSES) + [c for c, *_ in REAL_CLIPS.values()])
    assert manifest["classes"] == classes
    assert manifest["split_spec"] == {"kind": "all"}
    assert manifest["num_ignored_files"] == 1
    info = manifest["splits"]["all"]
    assert info["num_videos"] == 48 + 3 and info["num_failed"] == 0
    assert info["shards"] == ["all/all-00000-of-00002.tfrecord",
                              "all/all-00001-of-00002.tfrecord"]
    assert shard_files(out, "all") == ["all-00000-of-00002.tfrecord",
                                       "all-00001-of-00002.tfrecord"]
    assert sorted(os.listdir(out)) == [".lock", "all", "failures.jsonl", "manifest.json"]
    assert manifest["geometry"]["frame_sizes"] == [[128, 171]]

    videos = read_split(out, "all")
    ids = [v["video_id"] for v in videos]
    assert len(ids) == len(set(ids)) == 51  # every good video exactly once
    for video in videos:
        assert classes[video["label"]] == video["label_text"]
        assert (video["height"], video["width"]) == (128, 171)
        assert video["first_frame_shape"] == (128, 171, 3)
        assert video["stored_frames"] == video["num_frames"]
        if video["video_id"] in REAL_CLIPS:
            cls, group, clip, frames = REAL_CLIPS[video["video_id"]]
            assert (video["label_text"], video["group"], video["clip"],
                    video["num_frames"], video["fps"]) == (cls, group, clip, frames, 25.0)
        else:
            assert video["num_frames"] == SYNTHETIC["num_frames"]
    assert info["per_class"]["Grow"] == CLIPS_PER_CLASS
    assert info["num_frames"] == sum(v["num_frames"] for v in videos)


@pytest.mark.slow
def test_subset_run_with_fps_and_pad(synthetic_dir, tmp_path):
    out = tmp_path / "records"
    manifest = pipeline.run([
        "--source", str(synthetic_dir), "--output_dir", str(out),
        "--num_classes", "4", "--per_class", "train=2,val=2,test=2",
        "--fps", "10", "--resize", "pad", "--image_size", "64", IN_MEMORY])
    assert manifest["classes"] == sorted(MOTION_CLASSES)[:4]
    for split in ("train", "val", "test"):
        assert manifest["splits"][split]["num_videos"] == 8
        videos = read_split(out, split)
        assert sorted(v["label"] for v in videos) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert {(v["height"], v["width"], v["num_frames"], v["fps"]) for v in videos} == {
            (64, 64, 10, 10.0)}
    groups = {split: {(v["label"], v["group"]) for v in read_split(out, split)}
              for split in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert not groups["train"] & groups["val"]


@pytest.mark.slow
def test_official_splits_from_a_zip(synthetic_dir, tmp_path):
    archive = tmp_path / "UCF101.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(synthetic_dir.iterdir()):
            zf.write(path, f"UCF-101/{path.name}")
        zf.writestr("../escape/v_Grow_g07_c01.avi", b"never written")
    out = tmp_path / "records"
    manifest = pipeline.run([
        "--source", str(archive), "--output_dir", str(out), "--split_lists",
        FIXTURE_LISTS, "--split_index", "2", "--classes", "Grow,SlideUp", IN_MEMORY])
    assert manifest["classes"] == ["Grow", "SlideUp"]
    assert manifest["split_spec"]["kind"] == "official"
    train, test = read_split(out, "train"), read_split(out, "test")
    assert len(train) == 8 and len(test) == 4
    assert {v["group"] for v in test} == {2}  # split 2 holds out group 2
    assert {v["label_text"] for v in train} == {"Grow", "SlideUp"}
    assert not (tmp_path / "escape").exists()


@pytest.mark.slow
def test_remote_zip_over_http_fetches_only_chosen_members(synthetic_dir, tmp_path,
                                                          range_server):
    archive = tmp_path / "UCF101.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(synthetic_dir.iterdir()):
            zf.write(path, f"UCF101/{path.name}")
    server = range_server(tmp_path)
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", server.url("UCF101.zip"), "--output_dir",
                             str(out), "--classes", "Grow", IN_MEMORY])
    assert manifest["splits"]["all"]["num_videos"] == CLIPS_PER_CLASS
    assert {v["label_text"] for v in read_split(out, "all")} == {"Grow"}
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
    chosen = sum(m.compress_size for m in members if "v_Grow_" in m.filename)
    others = [m for m in members if "v_Grow_" not in m.filename]
    # Far less than the archive went over the wire: the chosen members plus the
    # central directory the listing reads, and no other member's data.
    assert server.bytes_sent() < chosen + 2 * 65536 + 100_000
    assert server.bytes_sent() < archive.stat().st_size / 3
    tail_start = archive.stat().st_size - 2 * 65536  # listing reads the tail
    for member in others:
        start = member.header_offset
        if start < tail_start:
            assert not any(s <= start + 64 and e >= start for _, s, e in server.sent), (
                member.filename)


@pytest.mark.slow
def test_bad_videos_are_recorded_and_good_ones_written_once(synthetic_dir, real_ucf101_dir,
                                                            tmp_path):
    source = copy_videos(synthetic_dir, tmp_path / "src",
                         [f"v_Grow_g01_c0{k}.avi" for k in (1, 2)]
                         + [f"v_Shrink_g02_c0{k}.avi" for k in (1, 2)])
    real = (real_ucf101_dir / "v_Shotput_g05_c02.avi").read_bytes()
    (source / "v_Shotput_g01_c01.avi").write_bytes(real[: len(real) // 2])  # truncated
    (source / "v_Shotput_g01_c02.avi").write_bytes(b"")  # zero bytes
    (source / "v_Grow_g03_c01.avi").write_text("this is a text file\n" * 50)
    (source / "v_Shrink_g03_c01.avi").write_bytes(NOT_A_VIDEO)  # corrupt
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", str(source), "--output_dir", str(out), IN_MEMORY])
    info = manifest["splits"]["all"]
    assert (info["num_videos"], info["num_failed"], info["num_selected"]) == (4, 4, 8)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["video_id"] for f in failures) == [
        "v_Grow_g03_c01", "v_Shotput_g01_c01", "v_Shotput_g01_c02", "v_Shrink_g03_c01"]
    truncated = next(f for f in failures if f["video_id"] == "v_Shotput_g01_c01")
    assert "truncated" in truncated["reason"]
    assert all(f["path"].startswith(str(source)) and f["reason"] for f in failures)
    ids = [v["video_id"] for v in read_split(out, "all")]
    assert sorted(ids) == ["v_Grow_g01_c01", "v_Grow_g01_c02",
                           "v_Shrink_g02_c01", "v_Shrink_g02_c02"]


@pytest.mark.slow
def test_one_command_writes_the_same_bytes_whatever_the_bundles(synthetic_dir, tmp_path):
    """The shards' order is the seed's alone: threads, processes or one bundle agree."""
    def shard_bytes(name, *flags):
        out = tmp_path / name
        pipeline.run(["--source", str(synthetic_dir), "--output_dir", str(out),
                      "--num_shards", "3", "--image_size", "32", *flags])
        return {path: (out / "all" / path).read_bytes() for path in shard_files(out, "all")}

    threads = shard_bytes("threads")
    assert shard_bytes("in_memory", IN_MEMORY) == threads
    assert shard_bytes("one_worker", "--direct_num_workers", "1") == threads
    other_seed = shard_bytes("seed1", "--seed", "1")
    assert other_seed.keys() == threads.keys() and other_seed != threads
    ids = [v["video_id"] for v in read_split(tmp_path / "threads", "all")]
    assert ids != sorted(ids)  # a shuffled order, not the ids'


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_same_command_then_writes_every_video(synthetic_dir,
                                                                             tmp_path):
    out = tmp_path / "records"
    args = ["-m", "preprocess", "--source", str(synthetic_dir), "--output_dir", str(out),
            "--image_size", "32"]

    def fill_the_disk_at_100_kb():  # as `ulimit -f 100`; Python takes SIGXFSZ as EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    full = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=fill_the_disk_at_100_kb)
    assert full.returncode == 2
    assert_one_line_error(full, f"could not write {out}", "File too large",
                          "run the same command again")
    again = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(read_split(out, "all")) == 48
    assert sorted(os.listdir(out)) == [".lock", "all", "failures.jsonl", "manifest.json"]


def test_a_second_job_on_one_output_dir_stops_at_once(synthetic_dir, tmp_path):
    out = tmp_path / "records"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom preprocess.folder_lock import "
         "FolderLock\nlock = FolderLock(sys.argv[1]).acquire()\nprint('held', flush=True)\n"
         "time.sleep(600)", str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("preprocess", "--source", str(synthetic_dir), "--output_dir", str(out))
        assert_one_line_error(result, str(out), f"process {holder.pid}", "another process")
        assert result.returncode == 2
        assert sorted(os.listdir(out)) == [".lock"]  # nothing written, nothing removed
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_output_dir_is_never_mixed(synthetic_dir, tmp_path):
    source = copy_videos(synthetic_dir, tmp_path / "src",
                         [f"v_Grow_g0{g}_c01.avi" for g in (1, 2, 3)])
    out = tmp_path / "records"
    args = ["--source", str(source), "--output_dir", str(out), IN_MEMORY]
    pipeline.run(args + ["--num_shards", "3"])
    assert len(shard_files(out, "all")) == 3
    with pytest.raises(PreprocessError, match="already holds records"):
        pipeline.run(args)
    pipeline.run(args + ["--overwrite", "--num_shards", "1"])
    assert shard_files(out, "all") == ["all-00000-of-00001.tfrecord"]
    assert len(read_split(out, "all")) == 3


@pytest.mark.slow
def test_beam_options_pass_through(synthetic_dir, tmp_path):
    source = copy_videos(synthetic_dir, tmp_path / "src",
                         ["v_Grow_g01_c01.avi", "v_Shrink_g02_c01.avi"])
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", str(source), "--output_dir", str(out),
                             "--direct_num_workers", "2", "--runner", "DirectRunner"])
    assert manifest["splits"]["all"]["num_videos"] == 2
    assert len(read_split(out, "all")) == 2


# ---------------------------------------------------------------------------
# Whole runs over each layout, with synthetic and real videos
# ---------------------------------------------------------------------------

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


@pytest.mark.slow
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
                             "--layout", "class_folders", "--class_names", "labels.txt",
                             "--per_class", "train=3,test=1",
                             *SMALL])
    assert manifest["layout"] == "class_folders"
    assert manifest["classes"] == ["shrinks", "grows"]  # the file's order, not sorted
    train = read_split(out, "train")
    assert len(train) == 6
    assert {(v["label"], v["label_text"]) for v in train} == {(0, "shrinks"), (1, "grows")}


# ---------------------------------------------------------------------------
# Command-line misuse: one line, non-zero exit, no traceback, no Beam work
# ---------------------------------------------------------------------------

def test_cli_errors(synthetic_dir, tmp_path):
    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    bad_lists = tmp_path / "lists"
    bad_lists.mkdir()
    (bad_lists / "classInd.txt").write_text("1 Grow\n")
    cases = [
        (["--source", str(tmp_path / "nowhere"), "--output_dir", out], "does not exist"),
        (["--source", str(empty), "--output_dir", out], "no videos (.avi"),
        (["--source", str(synthetic_dir), "--output_dir", out, "--classes", "Zebra"],
         "unknown class Zebra"),
        (["--source", str(synthetic_dir), "--output_dir", out, "--split_lists",
          str(bad_lists)], "lacks trainlist01.txt"),
        (["--source", str(synthetic_dir), "--output_dir", out, "--per_class",
          "train=5,test=5"], "too few"),
        (["--output_dir", out], "--source and --output_dir are required"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli("preprocess", *args), fragment)
    assert not os.path.exists(out)


def test_cli_help_lists_the_job_flags():
    result = run_cli("preprocess", "--help")
    assert result.returncode == 0
    for flag in ("--source", "--per_class", "--split_lists", "--resize", "--num_shards",
                 "--layout", "--annotations", "--split_fractions", "--class_names"):
        assert flag in result.stdout


def test_every_option_is_checked_before_any_work(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [(["--num_classes", "0"], "--num_classes must be at least 1"),
             (["--split_index", "4"], "--split_index must be 1, 2 or 3"),
             (["--split_lists", str(tmp_path), "--per_class", "train=1"],
              "either --split_lists or --per_class"),
             (["--jpeg_quality", "0"], "--jpeg_quality must be 1-100"),
             (["--fps", "-5"], "--fps must be positive")]
    for args, fragment in cases:
        code = pipeline.main(["--source", str(synthetic_dir), "--output_dir", str(out),
                              *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], (fragment, err)
    assert not out.exists()


def test_a_misspelt_or_abbreviated_flag_is_refused_in_one_line(synthetic_dir, tmp_path):
    out = tmp_path / "out"
    for flag, fragment in (("--split_fracions", "did you mean --split_fractions?"),
                           ("--num_shard", "unknown flag --num_shard,")):
        value = "train=0.5,test=0.5" if flag == "--split_fracions" else "3"
        result = run_cli("preprocess", "--source", str(synthetic_dir), "--output_dir",
                         str(out), flag, value)
        assert result.returncode != 0 and result.stdout == "", result.stdout
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert_one_line_error(result, fragment)
    assert not out.exists()


def test_a_bad_value_of_any_flag_is_one_line(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [(["--num_shards", "x"], "--num_shards: invalid int value: 'x'"),
             (["--resize", "crop"], "--resize: invalid choice: 'crop'"),
             (["--split_index"], "--split_index: expected one argument"),
             (["--direct_num_workers", "x"], "--direct_num_workers: invalid int value"),
             (["--runnr", "DirectRunner"], "did you mean --runner?"),
             (["records/"], "unexpected argument records/")]
    for args, fragment in cases:
        code = pipeline.main(["--source", str(synthetic_dir), "--output_dir", str(out),
                              *args])
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], (fragment, err)
        assert "usage:" not in captured.out + captured.err
    assert not out.exists()


def test_remote_paths_need_the_gcp_extra(synthetic_dir, tmp_path, capsys):
    try:
        import google.cloud.storage  # noqa: F401  what Beam's gs:// filesystem needs
        pytest.skip("Beam's gcp extra is installed")
    except ImportError:
        pass
    out = tmp_path / "out"
    result = run_cli("preprocess", "--source", "gs://bucket/UCF101", "--output_dir", str(out))
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert_one_line_error(result, "--source gs://bucket/UCF101", "pip install -e .[gcp]")
    for args in (["--source", str(synthetic_dir), "--output_dir", "gs://bucket/records"],
                 ["--source", str(synthetic_dir), "--output_dir", str(out),
                  "--split_lists", "gs://bucket/ucfTrainTestlist"]):
        assert pipeline.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "pip install -e .[gcp]" in err[0], err
    assert not out.exists()
