"""When each action happens in a long video: the clip slid along it, windows merged into segments.

    windows = WindowClips(predictor, "match.mp4", stride=1.0)
    scored = list(predict_windows(predictor, windows, batch_size=32))
    found = segments(scored, windows.duration, threshold=0.5, min_seconds=2.0)

A window is one clip span of the run (`num_frames` frames `frame_step`
apart) starting every `stride` seconds; its clips are the evaluation's crops
of those frames, made as the records' frames were (frame rate, resize, JPEG),
and its score the mean over the crops. Frames stream from the decoder one at
a time, and a frame is resized and encoded only if a window still to come
uses it, so memory holds about one clip span of small JPEGs and a few
batches of clips, whatever the video's length.
"""

import collections
import dataclasses
import os

import numpy as np
import tensorflow as tf

from model.inference.predictor import ClipBatches, Prediction, RowWriter, read_ahead
from preprocess import reader, video

WINDOW_FIELDS = ("path", "start", "end", "top")
SEGMENT_FIELDS = ("path", "start", "end", "class", "probability")
# A row per video of a timeline run, in input order (`video_row`), in the output
# folder's `videos.jsonl` or `videos.csv`.
INDEX_FIELDS = ("path", "name", "windows", "duration", "segments", "error")
VIDEO_INDEX = "videos"
# The plot's legend entry for the shaded segments.
SEGMENT_KEY = "segment (shaded in\nits class's colour)"


@dataclasses.dataclass(frozen=True)
class Window:
    """Where a window lies in its video, in seconds of the stored frame rate."""

    index: int
    start: float
    end: float

    @property
    def centre(self):
        return (self.start + self.end) / 2


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of the video where one class stays on top: `label` indexes the classes."""

    start: float
    end: float
    label: int
    probability: float  # the class's mean probability over the segment's windows


class WindowClips:
    """A video's windows and their clips, `(Window, uint8 [crops, T, S, S, 3])`, as it decodes.

    Windows start at frame 0 and every `stride` seconds (rounded to whole
    frames) while a whole clip span fits; a video shorter than one span is
    one window whose clip loops, as evaluation loops short videos. Once
    iterated, `fps` and `duration` (seconds) describe the video.

    Args:
        predictor: a `model.inference.Predictor` (clip settings, frame
            settings, graph functions that cut clips).
        path: a video file.
        stride: seconds between window starts.
    """

    def __init__(self, predictor, path, stride):
        self.predictor = predictor
        self.path = path
        self.stride = stride
        self.fps = None
        self.duration = None

    def __iter__(self):
        spec = self.predictor.spec
        frames = self.predictor.frames
        geometry = frames["geometry"]
        span = reader.clip_span(spec.num_frames, spec.frame_step)
        # A window's T frames are given as they are: one clip from the start, no step.
        cut_window = self.predictor.cutter(dataclasses.replace(spec, num_clips=1,
                                                               frame_step=1))
        kept = collections.OrderedDict()  # frame index -> JPEG, while a window needs it
        size = None
        emitted = 0
        with video.VideoFile(self.path) as source:
            self.fps = source.stored_fps(frames["fps"])
            stride = max(1, round(self.stride * self.fps))
            count = 0
            for index, frame in enumerate(source.frames(fps=frames["fps"], rgb=False)):
                count = index + 1
                # The first span is kept whole, in case the video is shorter than it.
                if index < span or _needed(index, emitted * stride, stride, span,
                                           spec.frame_step):
                    frame = video.resize_frame(frame, geometry["resize"],
                                               geometry["image_size"])
                    size = frame.shape[:2]
                    kept[index] = video.encode_jpeg(frame, frames["encoding"]["quality"],
                                                    bgr=True)
                start = emitted * stride
                if index == start + span - 1:
                    jpegs = [kept[start + t * spec.frame_step] for t in range(spec.num_frames)]
                    clips = cut_window(tf.constant(jpegs, tf.string), *size)
                    yield (Window(emitted, start / self.fps, (start + span) / self.fps),
                           clips.numpy())
                    emitted += 1
                    while kept and next(iter(kept)) < emitted * stride:
                        kept.popitem(last=False)
        self.duration = count / self.fps
        if not emitted:  # shorter than one span: the evaluation's looping clip
            clips = self.predictor.cutter(dataclasses.replace(spec, num_clips=1))(
                tf.constant(list(kept.values()), tf.string), *size)
            yield Window(0, 0.0, self.duration), clips.numpy()


def _needed(index, next_start, stride, span, frame_step):
    """Whether a window starting at `next_start` or later uses frame `index`."""
    first = max(next_start, index - span + 1)
    k = -(-first // stride)  # the first window start at or after `first`
    while k * stride <= index:
        if (index - k * stride) % frame_step == 0:
            return True
        k += 1
    return False


def predict_windows(predictor, windows, *, batch_size, read_ahead_windows=8):
    """Yields the `Prediction` of each window of a `WindowClips`, in time order.

    The decoder runs in a thread of its own, `read_ahead_windows` windows at
    most ahead of the model, which runs on batches of `batch_size` clips.

    Raises:
        VideoDecodeError and the other `model.inference.VIDEO_ERRORS`: the
            video cannot be read (to its end).
    """
    batches = ClipBatches(predictor.probabilities, batch_size)
    for window, clips in read_ahead(windows, read_ahead_windows):
        yield from batches.add(Prediction(window), clips)
    yield from batches.flush()


def segments(scored, duration, *, threshold, min_seconds):
    """Merges consecutive windows whose top class stays the same into `Segment`s.

    Each window stands for the time nearest its centre (from halfway after
    the previous window's centre to halfway to the next's; the first from 0,
    the last to the end), so segments tile the video without overlapping. A
    window whose best probability is below `threshold` belongs to no class.
    Then each run of one class shorter than `min_seconds` is dropped, the
    weakest first (the least seconds times mean probability), and two runs
    of a class that then follow each other across less than `min_seconds`
    join: a blip inside an action is bridged rather than cutting the action
    into pieces that are each too short to keep.

    Args:
        scored: `Prediction`s of `Window`s, in time order.
        duration: the video's length in seconds.
        threshold: the least top probability that counts as a class.
        min_seconds: the shortest segment kept, and the longest gap bridged.

    Returns:
        `Segment`s in time order.
    """
    if not scored:
        return []
    centres = [p.item.centre for p in scored]
    bounds = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [duration]
    runs = []  # [label, start, end, [top probabilities]], label None below the threshold
    for k, prediction in enumerate(scored):
        best = int(np.argmax(prediction.probabilities))
        probability = float(prediction.probabilities[best])
        label = best if probability >= threshold else None
        if runs and runs[-1][0] == label:
            runs[-1][2] = bounds[k + 1]
            runs[-1][3].append(probability)
        else:
            runs.append([label, bounds[k], bounds[k + 1], [probability]])
    labelled = []
    for run in (run for run in runs if run[0] is not None):
        if not _join(labelled, run, min_seconds):
            labelled.append(run)
    while True:
        short = [k for k, run in enumerate(labelled) if run[2] - run[1] < min_seconds]
        if not short:
            break
        k = min(short, key=lambda k: _weight(labelled[k]))
        del labelled[k]
        if 0 < k < len(labelled) and _join(labelled[:k], labelled[k], min_seconds):
            del labelled[k]
    return [Segment(start, end, label, float(np.mean(probabilities)))
            for label, start, end, probabilities in labelled]


def _weight(run):
    """A run's evidence: its seconds times its windows' mean top probability."""
    return (run[2] - run[1]) * float(np.mean(run[3]))


def _join(runs, run, min_seconds):
    """Extends the last of `runs` by `run` if they are of one class and close; says if it did."""
    last = runs[-1] if runs else None
    if last is None or last[0] != run[0] or run[1] - last[2] >= min_seconds:
        return False
    last[2] = run[2]
    last[3] += run[3]
    return True


def output_names(paths):
    """A file-name stem per video for its timeline files: its own stem, numbered on a clash."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    clashes = {stem for stem, n in collections.Counter(stems).items() if n > 1}
    seen = collections.Counter()
    names = []
    for stem in stems:
        seen[stem] += 1
        names.append(f"{stem}_{seen[stem]}" if stem in clashes else stem)
    return names


@dataclasses.dataclass(frozen=True)
class TimelineFiles:
    """The files of one video's timeline in an output folder."""

    windows: str
    segments: str
    plot: str

    @classmethod
    def of(cls, output_dir, name, output_format):
        join = lambda suffix: os.path.join(output_dir, name + suffix)  # noqa: E731
        return cls(join(f".windows.{output_format}"), join(f".segments.{output_format}"),
                   join(".timeline.png"))

    @staticmethod
    def index(output_dir, output_format):
        """The output folder's list of its videos, a row each (`INDEX_FIELDS`)."""
        return os.path.join(output_dir, f"{VIDEO_INDEX}.{output_format}")


def video_row(path, name=None, scored=(), duration=None, found=(), error=None):
    """A video's row in the output folder's list of videos (`INDEX_FIELDS`).

    `name` is the stem of its files (`NAME.windows.jsonl`, ...), None when
    none were written; a video that failed has its `error` (one that failed
    part way has its files too, of the windows that decoded), else None.
    """
    return {"path": path, "name": name, "windows": len(scored),
            "duration": None if duration is None else round(duration, 3),
            "segments": len(found), "error": error}


def write_timeline(files, path, scored, found, class_names, *, output_format, top):
    """Writes a video's windows, segments (JSON lines or CSV) and plot."""
    with open(files.windows, "w", newline="", encoding="utf-8") as handle:
        rows = RowWriter(handle, output_format, WINDOW_FIELDS, top)
        for prediction in scored:
            best = np.argsort(-prediction.probabilities, kind="stable")[:top]
            rows.write({"path": path, "start": round(prediction.item.start, 3),
                        "end": round(prediction.item.end, 3),
                        "top": [(class_names[i], float(prediction.probabilities[i]))
                                for i in best]})
    with open(files.segments, "w", newline="", encoding="utf-8") as handle:
        rows = RowWriter(handle, output_format, SEGMENT_FIELDS)
        for segment in found:
            rows.write({"path": path, "start": round(segment.start, 3),
                        "end": round(segment.end, 3), "class": class_names[segment.label],
                        "probability": segment.probability})
    plot_timeline(scored, found, class_names, files.plot,
                  title=os.path.basename(path), top=top)


def plot_timeline(scored, found, class_names, path, *, title, top=5):
    """Saves `timeline_figure` as a PNG."""
    import matplotlib.pyplot as plt

    figure = timeline_figure(scored, found, class_names, title=title, top=top)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plotted_classes(probabilities, top):
    """The classes a timeline draws, `[class index, ...]`: every class on top in some
    window, then the next most probable up to `top` in all; each group by its peak."""
    peaks = probabilities.max(axis=0)
    leaders = set(probabilities.argmax(axis=1).tolist())
    order = sorted(range(probabilities.shape[1]), key=lambda c: (c not in leaders, -peaks[c]))
    return order[:max(top, len(leaders))]


def timeline_figure(scored, found, class_names, *, title, top=5):
    """The classes' probabilities over time (`plotted_classes`), the segments shaded under
    them in their class's colour, a legend with a key for the shading outside the axes.

    Returns:
        A matplotlib `Figure`, its legend `figure.legends[0]`.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    probabilities = np.stack([p.probabilities for p in scored])
    centres = [p.item.centre for p in scored]
    chosen = plotted_classes(probabilities, top)
    # Ten distinct colours, twenty if needed; past twenty the line styles differ too.
    palette = plt.get_cmap("tab10" if len(chosen) <= 10 else "tab20").colors
    styles = ("-", "--", ":", "-.")
    # A tall legend is in columns, so it keeps to the figure's height.
    rows_per_column = 22
    figure, axis = plt.subplots(figsize=(12, 4), layout="constrained")
    colours = {}
    for k, c in enumerate(chosen):
        colours[c] = palette[k % len(palette)]
        axis.plot(centres, probabilities[:, c], marker=".", color=colours[c],
                  linestyle=styles[k // len(palette) % len(styles)], label=class_names[c])
    for segment in found:  # a segment's class tops its windows, so it is drawn
        axis.axvspan(segment.start, segment.end, color=colours.get(segment.label, "grey"),
                     alpha=0.15, linewidth=0)
    handles, _ = axis.get_legend_handles_labels()
    handles.append(matplotlib.patches.Patch(color="grey", alpha=0.3, linewidth=0,
                                            label=SEGMENT_KEY))
    figure.legend(handles=handles, loc="outside right upper", fontsize=8,
                  ncols=-(-len(handles) // rows_per_column))
    axis.set_xlabel("seconds (window centre)")
    axis.set_ylabel("probability")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.set_title(title)
    return figure


def describe_segments(found, class_names):
    """One line of segments: `0.0-12.4 s Grow (0.93), ...`."""
    return ", ".join(f"{s.start:.1f}-{s.end:.1f} s {class_names[s.label]} ({s.probability:.2f})"
                     for s in found) or "no class on top long enough"

