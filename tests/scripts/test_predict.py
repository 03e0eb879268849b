"""scripts/predict.py and model.inference.predictor/model.inference.timeline: folders with failures, evaluation's
scores, timelines of long videos in bounded memory, and one-line misuse errors."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REAL_CLIPS, REPO, assert_one_line_error
from model.inference import evaluation, timeline
from model.inference.predictor import ClipBatches, Prediction, Predictor
from preprocess import reader, synthetic
from records import decode_video
from two_class_run import script, source_videos

CLASSES = ["Grow", "SlideRight"]


def _rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _probabilities(row):
    """A JSON row's probabilities in class order."""
    got = {entry["class"]: entry["probability"] for entry in row["top"]}
    return [got[name] for name in CLASSES]


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
        handle.write(os.urandom(5000))
    (folder / "UCF101" / "notes.txt").write_text("not a video")

    # Batches of 3 clips cut across videos (each has 2); the rest go on after the failure.
    code = script("predict").main(["--model", str(run), str(folder), "--batch_size", "3",
                                   "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = _rows(out)
    good = sorted(p for p in paths if p != corrupt)
    assert [row["path"] for row in rows] == good  # in input order, one row each
    for row in rows:
        assert [entry["class"] for entry in row["top"]] in (CLASSES, CLASSES[::-1])
        assert sum(_probabilities(row)) == pytest.approx(1)
        assert row["clips"] == 2 and row["seconds"] > 0
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
    assert lines[0] == "path,class_1,probability_1,clips,seconds"
    assert [line.split(",")[0] for line in lines[1:]] == good
    assert f"  {tmp_path / 'gone.avi'}: no such file" in err.splitlines()


@pytest.mark.slow
def test_a_videos_prediction_equals_its_evaluation_score(trained, capsys):
    records, run = trained
    config = json.loads((run / "config.json").read_text())["config"]
    spec = reader.ClipSpec.for_run(config)[2]
    assert spec.num_clips == 2
    import keras
    model = keras.saving.load_model(run / "model.keras")
    dataset = reader.make_dataset(records, "test", spec, batch_size=8, with_video_id=True)
    ids, scores, _ = evaluation.video_scores(*evaluation.predict_videos(model, dataset))
    sources = source_videos(records, "test")
    assert sorted(ids) == sorted(sources) and len(ids) == 16

    # Batches of 3 split videos' clips across batches; both exports give the same scores.
    for export in ([], ["--saved_model"]):
        code = script("predict").main(["--model", str(run), *map(str, sources.values()),
                                       "--batch_size", "3", *export])
        assert code == 0
        rows = {os.path.basename(row["path"])[:-4]: row for row in _rows(capsys.readouterr().out)}
        for video_id, expected in zip(ids, scores):
            np.testing.assert_allclose(_probabilities(rows[video_id]), expected,
                                       rtol=0, atol=1e-6, err_msg=video_id)


@pytest.mark.slow
def test_a_real_ucf101_file_decodes_and_ranks_every_class(trained, real_ucf101_dir, capsys):
    _, run = trained
    real = real_ucf101_dir / f"{next(iter(REAL_CLIPS))}.avi"  # XviD with MP3 audio
    assert script("predict").main(["--model", str(run), str(real)]) == 0
    (row,) = _rows(capsys.readouterr().out)
    assert row["path"] == str(real) and row["clips"] == 2
    assert sum(_probabilities(row)) == pytest.approx(1)


def test_clip_batches_hand_back_each_item_in_order_with_its_clips_mean():
    calls = []

    def probabilities(clips):  # stands in for a model: each clip's values are its scores
        calls.append(len(clips))
        return clips.astype(np.float64)

    batches = ClipBatches(probabilities, batch_size=4)
    sizes = [3, 0, 5, 1, 2]  # 0: a video that failed
    done = []
    for n, size in enumerate(sizes):
        clips = np.array([[n, k] for k in range(size)]) if size else None
        done += batches.add(Prediction(n), clips)
    done += batches.flush()
    assert calls == [4, 4, 3]
    assert [p.item for p in done] == [0, 1, 2, 3, 4]
    assert [p.clips for p in done] == sizes
    assert done[1].probabilities is None
    for n, size in enumerate(sizes):
        if size:
            np.testing.assert_allclose(done[n].probabilities, [n, (size - 1) / 2])


# ---------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------

def test_segments_tile_the_video_and_merge_runs_of_one_class():
    # Window k covers [k, k + 2]: centre k + 1, standing for [k + 0.5, k + 1.5]
    # (the first from 0, the last to the video's end at 10 s).
    probabilities = [[.9, .05, .05], [.8, .1, .1], [.2, .6, .2], [.9, .05, .05],
                     [.7, .2, .1], [.4, .3, .3], [.05, .9, .05], [.025, .95, .025],
                     [.05, .9, .05]]
    scored = [Prediction(timeline.Window(k, k, k + 2.0), np.array(p))
              for k, p in enumerate(probabilities)]
    found = timeline.segments(scored, 10.0, threshold=0.0, min_seconds=0.0)
    assert [(s.start, s.end, s.label) for s in found] == [
        (0.0, 2.5, 0), (2.5, 3.5, 1), (3.5, 6.5, 0), (6.5, 10.0, 1)]
    assert found[0].probability == pytest.approx(0.85)
    # At 0.5 the 0.4 window belongs to no class and ends its run. The lone
    # class-1 window is dropped first, the weakest, and the class-0 runs on
    # either side join (2.5 s and 2 s, each too short alone for 2.6 s).
    for min_seconds in (1.5, 2.6):
        found = timeline.segments(scored, 10.0, threshold=0.5, min_seconds=min_seconds)
        assert [(s.start, s.end, s.label) for s in found] == [(0.0, 5.5, 0), (6.5, 10.0, 1)]
    assert [s.label for s in timeline.segments(scored, 10.0, threshold=0.5,
                                               min_seconds=3.6)] == [0]
    assert timeline.segments([], 3.0, threshold=0.5, min_seconds=1) == []
    # Two short runs of 2 s: the unsure one goes, not the one at the start.
    scored = [Prediction(timeline.Window(k, k, k + 1.0), np.array([p, 1 - p]))
              for k, p in enumerate([.99, .91, .21, .41, .99, .99, .99, .99])]
    found = timeline.segments(scored, 8.0, threshold=0.5, min_seconds=2.5)
    assert [(s.start, s.end, s.label) for s in found] == [(0.0, 8.0, 0)]


@pytest.mark.slow
def test_streamed_windows_are_the_evaluation_clips_of_their_frames(trained, tmp_path):
    _, run = trained
    predictor = Predictor(run)
    spec = predictor.spec
    span = reader.clip_span(spec.num_frames, spec.frame_step)
    one_clip = predictor.cutter(dataclasses.replace(spec, num_clips=1))
    rng = np.random.default_rng(3)
    path = tmp_path / "three_seconds.avi"
    synthetic.write_video(path, np.concatenate(
        [synthetic.render_clip(c, rng, num_frames=25) for c in ("Grow", "SlideUp", "Shrink")]))
    jpegs, height, width, fps = predictor.encode(str(path))
    assert len(jpegs) == 75 and fps == 25

    # 0.3 s is 7.5 frames, rounded to 8, which is no multiple of the frame step.
    windows = timeline.WindowClips(predictor, str(path), stride=0.3)
    got = list(windows)
    assert [w.start for w, _ in got] == pytest.approx([s / 25 for s in range(0, 47, 8)])
    assert windows.duration == 3.0
    for window, clips in got:
        start = round(window.start * 25)
        assert window.end == pytest.approx((start + span) / 25)
        expected = one_clip(jpegs[start:start + span], height, width).numpy()
        np.testing.assert_array_equal(clips, expected)

    # A video shorter than one window is one window of the evaluation's looping clip.
    short = tmp_path / "short.avi"
    synthetic.write_video(short, synthetic.render_clip("Grow", rng, num_frames=12))
    jpegs, height, width, _ = predictor.encode(str(short))
    (window, clips), = list(timeline.WindowClips(predictor, str(short), stride=1.0))
    assert (window.start, window.end) == (0.0, 12 / 25)
    np.testing.assert_array_equal(clips, one_clip(jpegs, height, width).numpy())


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

    code = script("predict").main([
        "--model", str(run), "--timeline", "--output_dir", str(tmp_path / "out"),
        str(long_video), "--stride", str(stride), "--threshold", "0.5",
        "--min_seconds", "2.5"])  # 2.5 s: up to two wrong windows in a row are dropped
    out = capsys.readouterr().out
    assert code == 0
    windows = _rows((tmp_path / "out" / "two_actions.windows.jsonl").read_text())
    assert [w["start"] for w in windows] == pytest.approx([1.2 * k for k in range(20)])
    assert all(w["end"] - w["start"] == pytest.approx(29 / 25) for w in windows)
    segments = _rows((tmp_path / "out" / "two_actions.segments.jsonl").read_text())
    assert [s["class"] for s in segments] == CLASSES, segments
    assert abs(segments[0]["end"] - boundary) <= stride + 0.05, segments
    assert abs(segments[1]["start"] - boundary) <= stride + 0.05, segments
    assert (tmp_path / "out" / "two_actions.timeline.png").stat().st_size > 10_000
    assert out.startswith(f"{long_video}: 0.0-")


def _write_long_video(path, minutes, *, height=120, width=160, fps=25):
    """A synthetic video of `minutes`, written clip by clip so that it never sits in memory."""
    rng = np.random.default_rng(0)
    scene = synthetic._scene(rng, height, width)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), fps, (width, height))
    for n in range(int(minutes * 60 * fps) // 30):
        clip = synthetic.render_clip(CLASSES[n % 2], rng, num_frames=30, height=height,
                                     width=width, background=synthetic._background(rng, scene))
        for frame in clip:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


MEMORY = r"""
import json, os, resource, sys
from model.inference import timeline
from model.inference.predictor import Predictor

run, warm_up, long_video, output_dir = sys.argv[1:]
predictor = Predictor(run)

def timeline_of(path):
    windows = timeline.WindowClips(predictor, path, stride=1.0)
    scored = list(timeline.predict_windows(predictor, windows, batch_size=32))
    found = timeline.segments(scored, windows.duration, threshold=0.5, min_seconds=1.0)
    files = timeline.TimelineFiles.of(output_dir, os.path.basename(path), "csv")
    timeline.write_timeline(files, path, scored, found, predictor.class_names,
                            output_format="csv", top=2)
    return len(scored), windows.duration

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

timeline_of(warm_up)  # traces, allocator pools, plotting: all that does not grow
before = peak_mb()
windows, seconds = timeline_of(long_video)
print(json.dumps({"windows": windows, "seconds": seconds, "before_mb": before,
                  "peak_mb": peak_mb()}))
"""
# Growth of the peak resident memory from a 1-minute video to a 10-minute one.
# The 10-minute video decodes to 15,000 frames of 160x120 (864 MB); its frames as
# the records store them (72x54 JPEGs) take about 35 MB. Streamed, the peak grows
# by about 10 MB on this machine.
MEMORY_GROWTH_MB = 24


@pytest.mark.slow
def test_a_ten_minute_timeline_streams_in_bounded_memory(trained, tmp_path):
    _, run = trained
    warm_up, long_video = tmp_path / "one_minute.avi", tmp_path / "ten_minutes.avi"
    _write_long_video(warm_up, 1)
    _write_long_video(long_video, 10)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # A process forked from this one starts with its peak (Linux keeps ru_maxrss
    # across fork and exec): a small shell forks the measured Python instead.
    result = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", MEMORY,
                             str(run), str(warm_up), str(long_video), str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["seconds"] == 600.0 and measured["windows"] == 599
    growth = measured["peak_mb"] - measured["before_mb"]
    print(f"10-minute timeline: peak {measured['peak_mb']:.0f} MB, "
          f"{growth:.1f} MB above the 1-minute video's")
    assert growth < MEMORY_GROWTH_MB, measured
    assert len((tmp_path / "ten_minutes.avi.windows.csv").read_text().splitlines()) == 600


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
