"""Test helpers: run folders for inference, and scripts imported as modules.

`two_class_run` is a tiny run trained once a session on two motion classes;
tests/scripts/test_predict.py and test_evaluate.py both use it, so running
both files trains once (about a minute on 2 cores). `brightness_run` is a run
folder written by hand around a fixed model that needs no training, for tests
of the inference code that only need a model to call.
"""

import functools
import importlib.util
import json

from conftest import REPO, two_class_records
from records import read_split

# Grow against SlideRight, told apart by motion alone. frame_step 4 makes the
# 8-frame clip span 29 of a video's 30 frames: more motion a clip, which this
# tiny network learns within a minute. Two evaluation clips, so that averaging
# over clips is part of every comparison.
TRAIN_ARGS = ["--model", "r2plus1d_10", "--width_multiplier", "0.25", "--num_frames", "8",
              "--frame_step", "4", "--image_size", "48", "--batch_size", "8",
              "--learning_rate", "4e-3", "--schedule", "cosine", "--no-flip",
              "--eval_clips", "2", "--seed", "0", "--deterministic", "--epochs", "3",
              "--steps_per_epoch", "60", "--precise_bn_batches", "4"]


@functools.cache
def two_class_run(root):
    """`(records, run)` under `root` (a session's temporary folder), trained on first call."""
    import train
    records = two_class_records(root)
    run = root / "run"
    assert train.main(["--records", str(records), "--output_dir", str(run), *TRAIN_ARGS]) == 0
    return records, run


def source_videos(records, split):
    """`{video id: source file}` of a split of `two_class_records`."""
    folder = records.parent / "videos" / "UCF101"
    return {video["video_id"]: folder / f"{video['video_id']}.avi"
            for video in read_split(records, split)}


@functools.cache
def script(name):
    """`scripts/<name>.py` imported as a module, so tests call its `main` in process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The evaluation clips of a `brightness_run`: those of `TRAIN_ARGS`, 8 frames 4 apart, two
# clips a video, and the frames of `two_class_records`.
BRIGHTNESS_CONFIG = dict(num_frames=8, frame_step=4, image_size=48, crop="random",
                         crop_scale=0.4, step_jitter=0, samples_per_video=1, eval_clips=2,
                         eval_crops=1)
BRIGHTNESS_FRAMES = {"geometry": {"resize": "short_side", "image_size": 54},
                     "encoding": {"format": "jpeg", "quality": 90}, "fps": None,
                     "max_frames": 1800}


def brightness_model():
    """A fixed Keras model: logits `(255 - m, m)` of a clip's mean pixel m; bright is class 1."""
    import keras
    clips = keras.Input((None, None, None, 3), dtype="uint8", name="clips")
    mean = keras.layers.GlobalAveragePooling3D()(keras.layers.Rescaling(1.0)(clips))
    logits = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
        [[-1 / 3, 1 / 3]] * 3), bias_initializer=keras.initializers.Constant([255, 0]))(mean)
    return keras.Model(clips, logits)


def brightness_run(folder, class_names=("Dark", "Light")):
    """A run folder as train.py leaves it for inference (`config.json`, `classes.json`,
    `model.keras`) around `brightness_model`; returns its path."""
    from model.training.run_dir import RunDir
    run = RunDir(folder)
    run.prepare({})
    run.write_config(BRIGHTNESS_CONFIG, {}, manifest=BRIGHTNESS_FRAMES)
    with open(run.classes, "w") as handle:
        json.dump(list(class_names), handle)
    brightness_model().save(run.model)
    return folder
