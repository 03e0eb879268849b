"""Inference from a run folder: video file in, top classes out.

A video goes through the preprocessing job's own frame code
(`preprocess.video.encode_video`) and the record schema, then the reader's
evaluation clip sampling, so a prediction sees exactly what evaluation saw.
"""

import json
import os

import numpy as np
import tensorflow as tf

from model import export
from model.evaluation import softmax
from preprocess import reader, schema, video


class Predictor:
    """Loads `model.keras`, the class names and the clip settings of a run folder.

    Args:
        run_dir: a folder written by `train.py`.
    """

    def __init__(self, run_dir):
        import keras

        import model  # noqa: F401  registers our layers for loading

        config_path = os.path.join(run_dir, "config.json")
        keras_path = os.path.join(run_dir, export.KERAS_NAME)
        for path in (config_path, keras_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} is missing; point --model at a run folder "
                                        "that train.py finished")
        with open(config_path) as handle:
            saved = json.load(handle)
        with open(os.path.join(run_dir, export.CLASSES_NAME)) as handle:
            self.class_names = json.load(handle)
        self.config = saved["config"]
        self.frames = saved["manifest"]
        self.model = keras.saving.load_model(keras_path)
        self.spec = reader.ClipSpec(self.config["num_frames"], self.config["frame_step"],
                                    self.config["image_size"], training=False,
                                    num_clips=self.config["eval_clips"],
                                    num_crops=self.config["eval_crops"])

    def clips(self, path):
        """The evaluation clips of a video file, uint8 `[n, T, S, S, 3]`."""
        geometry = self.frames["geometry"]
        jpegs, height, width, fps = video.encode_video(
            path, resize=geometry["resize"], image_size=geometry["image_size"],
            jpeg_quality=self.frames["encoding"]["quality"], fps=self.frames["fps"],
            max_frames=self.frames.get("max_frames"))
        name = os.path.splitext(os.path.basename(path))[0]
        serialized = schema.encode_video_example(
            jpegs, label=0, label_text="", video_id=name, group=0, clip=0,
            height=height, width=width, fps=fps)
        clips, _, _ = self.spec(tf.constant(serialized))
        return clips

    def predict(self, path, top=5):
        """`[(class name, probability), ...]`, best first, averaged over the clips."""
        logits = np.asarray(self.model.predict_on_batch(self.clips(path)), np.float64)
        probs = softmax(logits).mean(axis=0)
        best = np.argsort(-probs)[:top]
        return [(self.class_names[i], float(probs[i])) for i in best]
