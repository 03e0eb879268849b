"""Test helpers: a tiny run trained once a session on two motion classes; scripts as modules.

tests/test_predict.py and tests/test_evaluate.py both use the run; it is
trained on first use and kept for the session, so running both files trains
once (about a minute on 2 cores).
"""

import functools
import importlib.util

import train
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
    records = two_class_records(root, "--direct_running_mode=in_memory")
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
