"""Timelines of long videos: windows streamed as the evaluation cuts clips, merged into
segments, written as files, in bounded memory."""

import dataclasses
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from conftest import REPO
from model.inference import timeline
from model.inference.predictor import Prediction, Predictor
from preprocess import reader, synthetic
from two_class_run import brightness_run

CLASSES = ["Grow", "SlideRight"]


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


def test_streamed_windows_are_the_evaluation_clips_of_their_frames(tmp_path):
    predictor = Predictor(brightness_run(tmp_path / "run"))  # the clips of two_class_run
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


def test_a_dark_then_light_video_switches_class_halfway(tmp_path):
    predictor = Predictor(brightness_run(tmp_path / "run"))
    path = tmp_path / "dark_then_light.avi"
    synthetic.write_video(path, np.concatenate([np.full((50, 120, 160, 3), 5, np.uint8),
                                                np.full((50, 120, 160, 3), 235, np.uint8)]))
    windows = timeline.WindowClips(predictor, str(path), stride=0.2)
    scored = list(timeline.predict_windows(predictor, windows, batch_size=3))
    # 29-frame spans every 5 frames, while one fits in 100 frames: starts 0 to 70.
    assert [p.item.start for p in scored] == pytest.approx([k / 5 for k in range(15)])
    assert windows.duration == 4.0
    # Window k holds frames 5k, 5k + 4, ..., 5k + 28: the first with 5 of its 8 frames
    # light is window 8, so the switch lies between the centres of windows 7 and 8,
    # (35 + 14.5) / 25 and (40 + 14.5) / 25 s.
    found = timeline.segments(scored, windows.duration, threshold=0.5, min_seconds=0.5)
    assert [(s.label, s.start, s.end) for s in found] == [
        (0, 0.0, pytest.approx(2.08)), (1, pytest.approx(2.08), 4.0)]
    files = timeline.TimelineFiles.of(str(tmp_path), "dark_then_light", "jsonl")
    timeline.write_timeline(files, str(path), scored, found, predictor.class_names,
                            output_format="jsonl", top=1)
    rows = [json.loads(line) for line in open(files.windows)]
    assert len(rows) == 15 and rows[0]["top"][0]["class"] == "Dark"
    assert [json.loads(line)["class"] for line in open(files.segments)] == ["Dark", "Light"]
    assert os.path.getsize(files.plot) > 5_000
    assert timeline.describe_segments(found, predictor.class_names).startswith(
        "0.0-2.1 s Dark (")


def _leaders_timeline(leaders, windows_each=2, num_classes=None):
    """Windows where class k tops windows `windows_each` * k onwards, at 0.6; class
    `leaders` (not on top anywhere) peaks at 0.3, and any others stay low."""
    num_classes = num_classes or leaders + 2
    scored = []
    for k in range(leaders * windows_each):
        p = np.full(num_classes, 0.01)
        p[k // windows_each] = 0.6
        p[leaders] = 0.3 if k == 0 else 0.1
        scored.append(Prediction(timeline.Window(k, k, k + 1.2), p / p.sum()))
    found = timeline.segments(scored, scored[-1].item.end, threshold=0.5, min_seconds=1)
    return scored, found, [f"Class{c}" for c in range(num_classes)]


def _drawn(figure):
    """The class lines' labels, and the legend's texts, of a timeline figure."""
    (axis,) = figure.axes
    (legend,) = figure.legends
    return ([line.get_label() for line in axis.get_lines()],
            [text.get_text() for text in legend.get_texts()])


def test_the_plot_draws_every_class_on_top_somewhere_and_a_key_beside_the_data(tmp_path):
    import matplotlib.pyplot as plt

    # Eight classes each top two windows: all drawn with --top 5, and the shading keyed.
    scored, found, names = _leaders_timeline(8)
    assert len(found) == 8
    figure = timeline.timeline_figure(scored, found, names, title="eight", top=5)
    lines, legend = _drawn(figure)
    assert sorted(lines) == names[:8]
    assert legend == lines + [timeline.SEGMENT_KEY]
    # Each segment shaded in its class's line colour.
    (axis,) = figure.axes
    colours = {line.get_label(): line.get_color() for line in axis.get_lines()}
    shades = [patch.get_facecolor()[:3] for patch in axis.patches]
    assert shades == [to_rgb(colours[names[s.label]]) for s in found]
    plt.close(figure)
    # A larger --top adds the next most probable class after those on top.
    figure = timeline.timeline_figure(scored, found, names, title="eight", top=9)
    assert _drawn(figure)[0][-1] == "Class8" and len(_drawn(figure)[0]) == 9
    plt.close(figure)

    # The legend lies beside the axes, inside the figure, however many classes it lists.
    for leaders in (8, 40):
        scored, found, names = _leaders_timeline(leaders, windows_each=1)
        figure = timeline.timeline_figure(scored, found, names, title="many", top=5)
        figure.canvas.draw()
        (axis,) = figure.axes
        (legend,) = figure.legends
        box, data = legend.get_window_extent(), axis.get_window_extent()
        assert not box.overlaps(data), (leaders, box, data)
        assert figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1)
        assert len(_drawn(figure)[0]) == leaders
        plt.close(figure)
    timeline.plot_timeline(scored, found, names, tmp_path / "many.png", title="many")
    assert os.path.getsize(tmp_path / "many.png") > 10_000


def test_output_names_number_the_stems_that_clash():
    assert timeline.output_names(["a/x.avi", "b/x.mp4", "c/y.avi"]) == ["x_1", "x_2", "y"]


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
