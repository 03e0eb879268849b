"""scripts/predict.py end to end: folders with failures, evaluation's scores, timelines of
two actions, and one-line misuse errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REAL_CLIPS, REPO, assert_one_line_error
from model.inference import evaluation
from preprocess import reader, synthetic
from records import NOT_A_VIDEO, decode_video
from two_class_run import script, source_videos

CLASSES = ["Grow", "SlideRight"]


def _rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _probabilities(row):
    """A JSON row's probabilities in class order."""
    got = {entry["class"]: entry["probability"] for entry in row["top"]}
    return [got[name] for name in CLASSES]


def _four_decimals(probabilities):
    """Whether probabilities, as read back from rows, have 4 decimals at most."""
    return all(float(p) == round(float(p), 4) for p in probabilities)


# ---------------------------------------------------------------------------
# Many videos
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_folder_with_a_corrupt_video_gives_a_row_for_each_other(trained, tmp_path, capsys):
    _, run = trained
    folder = tmp_path / "videos"
    paths = synthetic.write_dataset(folder, classes=CLASSES, groups=2, clips_per_group=5,
                                    num_frames=20)
    assert len(paths) == 20
    nested = folder / "UCF101" / "more"  # folders are searched recursively
    nested.mkdir()
    for path in paths[15:]:
        shutil.move(path, nested)
    paths = paths[:15] + [str(nested / os.path.basename(p)) for p in paths[15:]]
    corrupt = paths[7]
    with open(corrupt, "wb") as handle:
        handle.write(NOT_A_VIDEO)
    (folder / "UCF101" / "notes.txt").write_text("not a video")

    # Batches of 3 clips cut across videos (each has 2); the rest go on after the failure.
    code = script("predict").main(["--model", str(run), str(folder), "--batch_size", "3",
                                   "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = _rows(out)
    assert [row["path"] for row in rows] == sorted(paths)  # in input order, one row each
    good = sorted(p for p in paths if p != corrupt)
    for row in rows:
        if row["path"] == corrupt:  # the failed video's row: its error, no classes
            assert row == {"path": corrupt, "top": [], "clips": 0, "seconds": row["seconds"],
                           "error": "OpenCV cannot open it as a video"}
            continue
        assert [entry["class"] for entry in row["top"]] in (CLASSES, CLASSES[::-1])
        assert _four_decimals(_probabilities(row)), row
        assert sum(_probabilities(row)) == pytest.approx(1, abs=1e-4)
        assert row["clips"] == 2 and row["seconds"] > 0 and row["error"] is None
    assert "predict: 1 of 20 videos failed:" in err
    assert f"  {corrupt}: OpenCV cannot open it as a video" in err.splitlines()

    # A list file, and CSV: a listed file that is missing fails alone too.
    listing = tmp_path / "videos.txt"
    listing.write_text("# videos\n" + "\n".join(good + [str(tmp_path / "gone.avi")]) + "\n")
    table = tmp_path / "out" / "predictions.csv"
    code = script("predict").main(["--model", str(run), "--list", str(listing),
                                   "--output", str(table), "--top", "1"])
    err = capsys.readouterr().err
    assert code == 1
    lines = table.read_text().splitlines()
    assert lines[0] == "path,class_1,probability_1,clips,seconds,error"
    cells = [line.split(",") for line in lines[1:]]
    assert [row[0] for row in cells] == good + [str(tmp_path / "gone.avi")]
    assert all(row[1] in CLASSES and row[3] == "2" and row[5] == "" for row in cells[:-1])
    assert _four_decimals(row[2] for row in cells[:-1])
    assert cells[-1][:4] == [str(tmp_path / "gone.avi"), "", "", "0"]
    assert cells[-1][5] == "no such file"
    assert f"  {tmp_path / 'gone.avi'}: no such file" in err.splitlines()


@pytest.mark.slow
def test_a_videos_prediction_equals_its_evaluation_score(trained, capsys):
    records, run = trained
    config = json.loads((run / "config.json").read_text())["config"]
    spec = reader.ClipSpec.for_run(config).evaluation
    assert spec.num_clips == 2
    import keras
    model = keras.saving.load_model(run / "model.keras")
    dataset = reader.make_dataset(records, "test", spec, batch_size=8, with_video_id=True)
    ids, scores, _ = evaluation.video_scores(*evaluation.predict_videos(model, dataset))
    sources = source_videos(records, "test")
    assert sorted(ids) == sorted(sources) and len(ids) == 16

    # Batches of 3 split videos' clips across batches; both exports give the same scores,
    # which rows round to 4 decimals.
    for export in ([], ["--saved_model"]):
        code = script("predict").main(["--model", str(run), *map(str, sources.values()),
                                       "--batch_size", "3", *export])
        assert code == 0
        rows = {os.path.basename(row["path"])[:-4]: row for row in _rows(capsys.readouterr().out)}
        for video_id, expected in zip(ids, scores):
            np.testing.assert_allclose(_probabilities(rows[video_id]), expected,
                                       rtol=0, atol=5e-5 + 1e-6, err_msg=video_id)
    # Unrounded, as the Python API gives them, they are the evaluation's to float64 noise.
    from model.inference.predictor import Predictor
    predicted = Predictor(run).predict_videos([str(sources[i]) for i in ids], batch_size=3)
    for video_id, prediction, expected in zip(ids, predicted, scores):
        np.testing.assert_allclose(prediction.probabilities, expected, rtol=0, atol=1e-6,
                                   err_msg=video_id)


@pytest.mark.slow
def test_a_real_ucf101_file_decodes_and_ranks_every_class(trained, real_ucf101_dir, capsys):
    _, run = trained
    real = real_ucf101_dir / f"{next(iter(REAL_CLIPS))}.avi"  # XviD with MP3 audio
    assert script("predict").main(["--model", str(run), str(real)]) == 0
    (row,) = _rows(capsys.readouterr().out)
    assert row["path"] == str(real) and row["clips"] == 2
    assert sum(_probabilities(row)) == pytest.approx(1, abs=1e-4)


# ---------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_timeline_of_two_actions_switches_at_their_boundary(trained, tmp_path, capsys):
    records, run = trained
    # Ten training videos of each class back to back, 30 frames each: 12 s of
    # Grow, then 12 s of SlideRight. Training videos, because what is tested
    # is where the timeline puts what the model knows, not how far the tiny
    # model generalises; a stride of one video (1.2 s) lays each window on
    # one video, since a window across two would see a cut no training clip has.
    sources = source_videos(records, "train")
    frames = [decode_video(sources[video_id])[0]
              for name in CLASSES
              for video_id in sorted(v for v in sources if f"_{name}_" in v)[:10]]
    assert all(len(f) == 30 for f in frames)
    long_video = tmp_path / "two_actions.avi"
    synthetic.write_video(long_video, np.concatenate(frames))
    boundary, stride = 12.0, 1.2
    # A corrupt file and a one-window video after it: each a row of the list of videos.
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(NOT_A_VIDEO)
    short = sources[sorted(sources)[0]]

    code = script("predict").main([
        "--model", str(run), "--timeline", "--output_dir", str(tmp_path / "out"),
        str(long_video), str(corrupt), str(short), "--stride", str(stride),
        "--threshold", "0.5",
        "--min_seconds", "2.5"])  # 2.5 s: up to two wrong windows in a row are dropped
    out, err = capsys.readouterr()
    assert code == 1
    windows = _rows((tmp_path / "out" / "two_actions.windows.jsonl").read_text())
    assert [w["start"] for w in windows] == pytest.approx([1.2 * k for k in range(20)])
    assert all(w["end"] - w["start"] == pytest.approx(29 / 25) for w in windows)
    assert all(_four_decimals(p["probability"] for p in w["top"]) for w in windows)
    segments = _rows((tmp_path / "out" / "two_actions.segments.jsonl").read_text())
    assert [s["class"] for s in segments] == CLASSES, segments
    assert _four_decimals(s["probability"] for s in segments)
    assert abs(segments[0]["end"] - boundary) <= stride + 0.05, segments
    assert abs(segments[1]["start"] - boundary) <= stride + 0.05, segments
    assert (tmp_path / "out" / "two_actions.timeline.png").stat().st_size > 10_000
    assert out.startswith(f"{long_video}: 0.0-")
    listed = _rows((tmp_path / "out" / "videos.jsonl").read_text())
    assert listed == [
        {"path": str(long_video), "name": "two_actions", "windows": 20, "duration": 24.0,
         "segments": 2, "error": None},
        {"path": str(corrupt), "name": None, "windows": 0, "duration": None, "segments": 0,
         "error": "OpenCV cannot open it as a video"},
        {"path": str(short), "name": short.stem, "windows": 1, "duration": 1.2,
         "segments": listed[2]["segments"], "error": None}]
    assert f"  {corrupt}: OpenCV cannot open it as a video" in err.splitlines()
    assert not list((tmp_path / "out").glob("corrupt.*"))

    # In CSV, a listed file that is missing among them.
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{tmp_path / 'gone.avi'}\n{short}\n")
    code = script("predict").main([
        "--model", str(run), "--timeline", "--output_dir", str(tmp_path / "csv"),
        "--format", "csv", "--list", str(listing), "--min_seconds", "2.5"])
    assert code == 1
    assert (tmp_path / "csv" / "videos.csv").read_text().splitlines() == [
        "path,name,windows,duration,segments,error",
        f"{tmp_path / 'gone.avi'},,0,,0,no such file",
        f"{short},{short.stem},1,1.2,{listed[2]['segments']},"]


# ---------------------------------------------------------------------------
# Misuse
# ---------------------------------------------------------------------------

def test_bad_flags_fail_in_one_line_before_any_work(tmp_path, capsys):
    video = tmp_path / "v.avi"
    video.write_bytes(b"")
    model = ["--model", str(tmp_path / "run"), str(video)]
    cases = [
        (["--top", "0", *model], "--top must be at least 1, not 0"),
        (["--batch_size", "0", *model], "--batch_size must be at least 1"),
        (["--workers", "0", *model], "--workers must be at least 1"),
        (["--model", str(tmp_path)], "name video files or folders, or a --list file"),
        (["--stride", "2", *model], "--stride only works with --timeline"),
        (["--output_dir", str(tmp_path), *model], "--output_dir only works with --timeline"),
        (["--timeline", *model], "--timeline writes its files into --output_dir"),
        (["--timeline", "--output_dir", str(tmp_path), "--output", "x.csv", *model],
         "not --output"),
        (["--timeline", "--output_dir", str(tmp_path), "--stride", "0", *model],
         "--stride must be positive"),
        (["--timeline", "--output_dir", str(tmp_path), "--threshold", "2", *model],
         "--threshold must be in [0, 1]"),
        (["--timeline", "--output_dir", str(tmp_path), "--min_seconds", "-1", *model],
         "--min_seconds must be 0 or more"),
        (["--format", "xml", *model], "invalid choice: 'xml'"),
        (["--output", str(tmp_path), *model], "exists and is not a file"),
        (["--timeline", "--output_dir", str(video), *model], "exists and is not a folder"),
        (["--strid", "2", *model], "unknown argument --strid; did you mean --stride?"),
        ([str(video)], "the following arguments are required: --model"),
        (model, "config.json is missing; point at a run folder"),
    ]
    for argv, fragment in cases:
        code = script("predict").main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
        assert fragment in err[0], (fragment, err)
    # As a command: exit status 2, one line, no traceback, and no TensorFlow to wait for.
    result = subprocess.run([sys.executable, "scripts/predict.py", "--top", "0", *model],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "--top must be at least 1")


@pytest.mark.slow
def test_bad_inputs_fail_in_one_line(trained, tmp_path, capsys):
    _, run = trained
    (tmp_path / "empty").mkdir()
    video = next(iter(source_videos(trained[0], "test").values()))
    no_keras = tmp_path / "saved_model_only"
    shutil.copytree(run, no_keras, ignore=shutil.ignore_patterns("model.keras"))
    cases = [
        ([str(tmp_path / "missing.avi")], "no such file or folder"),
        ([str(tmp_path / "empty")], "no video files (.avi, .mp4"),
        (["--list", str(tmp_path / "nothing.txt")], "no such list file"),
        (["--model", str(no_keras), str(video)], "model.keras is missing"),
    ]
    for argv, fragment in cases:
        code = script("predict").main(["--model", str(run), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], (fragment, err)
