"""Inference from a run folder: video files in, class probabilities out, many at a time.

A video goes through the preprocessing job's own frame code
(`preprocess.video`: the frame rate, resize and JPEG encoding that the run's
manifest summary records), then the run's evaluation clips
(`ClipSpec.for_run(config).evaluation.cut`), and its score is the mean of its
clips' softmax probabilities, as `model.inference.evaluation` averages them. A
video's prediction therefore equals its evaluation score when the same video
was in the test records.

    predictor = Predictor("runs/r18")
    for prediction in predictor.predict_videos(paths, batch_size=32, workers=2):
        print(prediction.item, predictor.top(prediction.probabilities))

Many videos: a pool of threads decodes videos and cuts their clips while the
model runs on batches gathered across videos (`ClipBatches`); a file that
cannot be read comes back with its reason and the rest go on.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import itertools
import json
import os
import queue
import threading
import time

import cv2
import numpy as np
import tensorflow as tf

from model.inference import evaluation
from model.training.run_dir import RunDir
from preprocess import reader, video
from preprocess.errors import UserError

# What fails one video and not the run: an unreadable file (VideoDecodeError
# is a UserError), or OpenCV or TensorFlow refusing its frames.
VIDEO_ERRORS = (UserError, cv2.error, tf.errors.OpError, OSError)

# Digits of a probability in output rows: float64's 17 digits are noise to a
# reader, and 4 still tell apart classes 0.0001 apart.
PROBABILITY_DECIMALS = 4

# A whole video's row (`Predictor.row`): `error` is empty unless it failed.
VIDEO_FIELDS = ("path", "top", "clips", "seconds", "error")


@dataclasses.dataclass
class Prediction:
    """What became of one video, or one window of a timeline.

    Args:
        item: what was asked about: a path, or a `model.inference.timeline.Window`.
        probabilities: float64 `[num_classes]`, the mean of its clips' softmax
            probabilities; None when it failed. Defaults to None.
        clips: how many clips the model saw. Defaults to 0.
        seconds: decoding and cutting its clips, plus its clips' share of the
            model's time. Defaults to 0.
        error: why it failed, in words; None when it did not. Defaults to None.
    """

    item: object
    probabilities: np.ndarray | None = None
    clips: int = 0
    seconds: float = 0.0
    error: str | None = None


class Predictor:
    """The model, class names and clip settings of a run folder.

    Args:
        run_dir: a folder written by `train.py`.
        saved_model: run its SavedModel (`saved_model/`, signature `serve`)
            rather than `model.keras`; the two give the same logits.
            Defaults to False.
    """

    def __init__(self, run_dir, saved_model=False):
        import model.network.layers  # noqa: F401  registers our layers for loading

        run = RunDir(run_dir)
        run.require(run.config, run.classes, run.saved_model if saved_model else run.model)
        saved = run.read_config()
        with open(run.classes) as handle:
            self.class_names = json.load(handle)
        self.config = saved["config"]
        self.frames = saved["manifest"]  # how the records' frames were made from videos
        self.spec = reader.ClipSpec.for_run(self.config).evaluation
        self._logits = _logits_function(run, saved_model)
        self._cutters = {}

    def cutter(self, spec):
        """`spec.cut` as a graph function of `(jpegs [N], height, width)`, one per spec.

        A graph, as in the reader's `Dataset.map`: the same clips as the
        records give, without eager dispatch of every small op.
        """
        if spec not in self._cutters:
            self._cutters[spec] = tf.function(spec.cut, input_signature=[
                tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.int32)])
        return self._cutters[spec]

    def encode(self, path):
        """A video's frames as the records hold them: `(jpegs, height, width, fps)`."""
        geometry = self.frames["geometry"]
        return video.encode_video(
            path, resize=geometry["resize"], image_size=geometry["image_size"],
            jpeg_quality=self.frames["encoding"]["quality"], fps=self.frames["fps"],
            max_frames=self.frames.get("max_frames"))

    def clips(self, path):
        """The evaluation clips of a video file, uint8 `[n, T, S, S, 3]`."""
        jpegs, height, width, _ = self.encode(path)
        return self.cutter(self.spec)(tf.constant(jpegs, tf.string), height, width)

    def probabilities(self, clips):
        """Softmax probabilities, float64 `[n, num_classes]`, of uint8 clips, as in evaluation."""
        return evaluation.softmax(np.asarray(self._logits(clips), np.float64))

    def top(self, probabilities, k=5):
        """`[(class name, probability), ...]` of the `k` best classes, best first."""
        best = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.class_names[i], float(probabilities[i])) for i in best]

    def row(self, prediction, top=5):
        """A video's output row (`VIDEO_FIELDS`) for a `RowWriter`.

        A video that failed has its `error` and no classes, clips 0; one that
        did not has `error` None (null in JSON, an empty cell in CSV).
        """
        ranking = ([] if prediction.error else self.top(prediction.probabilities, top))
        return {"path": prediction.item, "top": ranking, "clips": prediction.clips,
                "seconds": round(prediction.seconds, 3), "error": prediction.error}

    def predict(self, path, top=5):
        """One video's `top` classes: `[(class name, probability), ...]`, best first."""
        return self.top(self.probabilities(self.clips(path)).mean(axis=0), top)

    def predict_videos(self, paths, *, batch_size=32, workers=2):
        """Yields a `Prediction` per path, in order, once all its clips have run.

        `workers` threads decode videos and cut their clips (OpenCV and
        TensorFlow release the GIL), at most two videos each ahead of the
        model, which runs on batches of `batch_size` clips from consecutive
        videos. A video that fails comes back with its `error`.
        """
        def cut(path):
            started = time.perf_counter()
            try:
                if not os.path.isfile(path):
                    raise video.VideoDecodeError("no such file")
                clips = self.clips(path).numpy()
            except VIDEO_ERRORS as error:
                return Prediction(path, seconds=time.perf_counter() - started,
                                  error=describe(error)), None
            return Prediction(path, seconds=time.perf_counter() - started), clips

        batches = ClipBatches(self.probabilities, batch_size)
        paths = iter(paths)
        with concurrent.futures.ThreadPoolExecutor(workers, "decode") as pool:
            pending = collections.deque(pool.submit(cut, path)
                                        for path in itertools.islice(paths, 2 * workers))
            while pending:
                prediction, clips = pending.popleft().result()
                for path in itertools.islice(paths, 1):
                    pending.append(pool.submit(cut, path))
                yield from batches.add(prediction, clips)
        yield from batches.flush()


def _logits_function(run, saved_model):
    """Clips in, float32 logits out, from the run's `model.keras` or its SavedModel."""
    if saved_model:
        loaded = tf.saved_model.load(run.saved_model)  # owns the variables `serve` reads
        return lambda clips: loaded.serve(tf.convert_to_tensor(clips, tf.uint8))["logits"]
    import keras
    return evaluation.logits_function(keras.saving.load_model(run.model, compile=False))


def describe(error):
    """The first line of an error, for a list of failures."""
    text = (error.message if isinstance(error, tf.errors.OpError) else str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ClipBatches:
    """Gathers the clips of consecutive items into batches of `batch_size` for the model.

    Items come back in the order they were added, each once all its clips
    have run, with the mean of its clips' probabilities; its `seconds` gain
    its clips' share of each batch's time. An item with no clips (one that
    failed) comes back in its turn, untouched.

    Args:
        probabilities: clips `[n, ...]` to probabilities `[n, num_classes]`.
        batch_size: clips per call of `probabilities`; the last may be smaller.
    """

    def __init__(self, probabilities, batch_size):
        self._probabilities = probabilities
        self._batch_size = batch_size
        self._waiting = []  # clip arrays not yet run, oldest first
        self._queued = 0
        self._open = collections.deque()  # [Prediction, clips still out, probability rows]

    def add(self, prediction, clips=None):
        """Queues an item and its clips; returns the items complete after the full batches ran."""
        count = 0 if clips is None else len(clips)
        prediction.clips = count
        self._open.append([prediction, count, []])
        if count:
            self._waiting.append(clips)
            self._queued += count
        while self._queued >= self._batch_size:
            self._run(self._batch_size)
        return self._finished()

    def flush(self):
        """Runs what is left; returns the remaining items."""
        while self._queued:
            self._run(min(self._queued, self._batch_size))
        return self._finished()

    def _run(self, count):
        waiting = self._waiting[0] if len(self._waiting) == 1 else np.concatenate(self._waiting)
        self._waiting = [waiting[count:]] if len(waiting) > count else []
        self._queued -= count
        started = time.perf_counter()
        probabilities = self._probabilities(waiting[:count])
        share = (time.perf_counter() - started) / count
        row = 0
        for entry in self._open:
            if row == count:
                break
            take = min(entry[1], count - row)
            if take:
                entry[2].append(probabilities[row:row + take])
                entry[1] -= take
                entry[0].seconds += share * take
                row += take

    def _finished(self):
        done = []
        while self._open and not self._open[0][1]:
            prediction, _, rows = self._open.popleft()
            if rows:
                prediction.probabilities = np.concatenate(rows).mean(axis=0)
            done.append(prediction)
        return done


def read_ahead(iterable, size):
    """Yields what `iterable` yields, made by a thread of its own up to `size` items ahead.

    So a decoder runs while the model does. An error in the thread is raised here.
    """
    items = queue.Queue(size)
    stop = threading.Event()
    end = object()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in iterable:
                if not put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put((end, error))
            return
        put((end, None))

    thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class RowWriter:
    """Output rows as JSON lines or CSV, each written and flushed as it comes.

    A row is a dict; its `top` entry, `[(class, probability), ...]`, is a
    list of `{"class", "probability"}` objects in JSON and `class_1`,
    `probability_1`, ... columns in CSV (empty cells past its length). Every
    probability, in `top` and in a `probability` field, is written rounded
    to `PROBABILITY_DECIMALS`; None is null in JSON and an empty cell in CSV.

    Args:
        stream: a text file.
        output_format: `jsonl` or `csv`.
        fields: the row's keys in column order, `top` among them.
        top: how many classes a ranking holds (CSV columns).
    """

    def __init__(self, stream, output_format, fields, top=0):
        self._stream = stream
        self._format = output_format
        self._fields = fields
        self._top = top
        if output_format == "csv":
            columns = []
            for field in fields:
                columns += ([name for k in range(1, top + 1)
                             for name in (f"class_{k}", f"probability_{k}")]
                            if field == "top" else [field])
            self._csv = csv.writer(stream)
            self._csv.writerow(columns)

    def write(self, row):
        row = dict(row)
        if "top" in row:
            row["top"] = [(name, rounded(p)) for name, p in row["top"]]
        if row.get("probability") is not None:
            row["probability"] = rounded(row["probability"])
        if self._format == "jsonl":
            row = {key: ([{"class": name, "probability": p} for name, p in value]
                         if key == "top" else value) for key, value in row.items()}
            self._stream.write(json.dumps(row) + "\n")
        else:
            cells = []
            for field in self._fields:
                if field == "top":
                    ranking = [cell for pair in row["top"] for cell in pair]
                    cells += ranking + [""] * (2 * self._top - len(ranking))
                else:
                    cells.append(row[field])
            self._csv.writerow(cells)
        self._stream.flush()


def rounded(probability):
    """A probability as output rows hold it: a float of `PROBABILITY_DECIMALS` decimals."""
    return round(float(probability), PROBABILITY_DECIMALS)
