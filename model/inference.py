"""Inference from a run folder: video file in, top classes out.

A video goes through the preprocessing job's own frame code
(`preprocess.video.encode_video`, so the same resize and JPEG encoding), then
the reader's evaluation clips (`ClipSpec.cut`), so a prediction sees exactly
what evaluation saw.
"""

import json

import numpy as np
import tensorflow as tf

from model.evaluation import softmax
from model.run_dir import RunDir
from preprocess import reader, video


class Predictor:
    """Loads `model.keras`, the class names and the clip settings of a run folder.

    Args:
        run_dir: a folder written by `train.py`.
    """

    def __init__(self, run_dir):
        import keras

        import model.layers  # noqa: F401  registers our layers for loading

        run = RunDir(run_dir)
        run.require(run.config, run.model, run.classes)
        saved = run.read_config()
        with open(run.classes) as handle:
            self.class_names = json.load(handle)
        self.config = saved["config"]
        self.frames = saved["manifest"]
        self.model = keras.saving.load_model(run.model)
        self.spec = reader.ClipSpec(self.config["num_frames"], self.config["frame_step"],
                                    self.config["image_size"],
                                    num_clips=self.config["eval_clips"],
                                    num_crops=self.config["eval_crops"])

    def clips(self, path):
        """The evaluation clips of a video file, uint8 `[n, T, S, S, 3]`."""
        geometry = self.frames["geometry"]
        jpegs, height, width, _ = video.encode_video(
            path, resize=geometry["resize"], image_size=geometry["image_size"],
            jpeg_quality=self.frames["encoding"]["quality"], fps=self.frames["fps"],
            max_frames=self.frames.get("max_frames"))
        return self.spec.cut(tf.constant(jpegs, tf.string), height, width)

    def predict(self, path, top=5):
        """`[(class name, probability), ...]`, best first, averaged over the clips."""
        logits = np.asarray(self.model.predict_on_batch(self.clips(path)), np.float64)
        probs = softmax(logits).mean(axis=0)
        best = np.argsort(-probs)[:top]
        return [(self.class_names[i], float(probs[i])) for i in best]
