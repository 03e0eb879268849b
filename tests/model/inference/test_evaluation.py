"""Video-level averaging and the classification report, against a case worked by hand."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from model.inference import evaluation
from records import write_records
from two_class_run import brightness_model

CLASSES = ["a", "b", "c", "d", "e", "f"]
# (video, true label, clip probabilities); clips of one video are not adjacent.
CLIPS = [
    ("v1", 0, [.5, .2, .1, .1, .05, .05]),
    ("v2", 1, [.1, .05, .5, .15, .1, .1]),   # its class ranks last: outside the top 5
    ("v1", 0, [.3, .4, .1, .1, .05, .05]),
    ("v3", 2, [.1, .1, .5, .1, .1, .1]),
    ("v4", 0, [.2, .5, .1, .1, .05, .05]),   # wrong, but its class ranks second
    ("v3", 2, [.1, .5, .2, .1, .05, .05]),
]


def _arrays():
    ids = np.array([c[0] for c in CLIPS])
    labels = np.array([c[1] for c in CLIPS])
    probs = np.array([c[2] for c in CLIPS], np.float64)
    return probs, labels, ids


def test_video_scores_average_each_videos_clips():
    order, probs, labels = evaluation.video_scores(*_arrays())
    assert order == ["v1", "v2", "v3", "v4"]  # first appearance
    np.testing.assert_allclose(probs[0], [.4, .3, .1, .1, .05, .05])
    np.testing.assert_allclose(probs[2], [.1, .3, .35, .1, .075, .075])
    assert labels.tolist() == [0, 1, 2, 0]


def test_classification_report_matches_the_hand_computed_case():
    report, confusion = evaluation.classification_report(*_arrays(), CLASSES)
    # Videos: v1 -> a (right), v2 -> c (wrong), v3 -> c (right), v4 -> b (wrong).
    assert report["accuracy"] == pytest.approx(2 / 4)
    assert report["clip_accuracy"] == pytest.approx(2 / 6)  # v1's first, v3's first
    assert report["top5_accuracy"] == pytest.approx(3 / 4)  # all but v2
    # Recall a 1/2, b 0/1, c 1/1; d, e, f have no videos and do not count.
    assert report["mean_class_accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert report["num_videos"] == 4 and report["num_clips"] == 6
    expected = np.zeros((6, 6), np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 2] = expected[2, 2] = 1
    np.testing.assert_array_equal(confusion, expected)
    per_class = report["per_class"]
    assert per_class["a"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert per_class["b"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert per_class["c"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert per_class["d"] == {"precision": None, "recall": None, "support": 0}


def test_best_epoch_reads_the_last_row_of_each_epoch(tmp_path):
    # A resumed run appends: epoch 1 appears twice, and its later row counts.
    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,val_accuracy\n0,0.5,0.4\n1,0.6,0.9\n"
                       "1,0.6,0.5\n2,0.7,0.8\n")
    assert evaluation.best_epoch(history) == 3
    assert list(evaluation.read_history(history)) == [0, 1, 2]


def test_a_split_is_scored_by_the_mean_of_its_videos_views(tmp_path):
    from preprocess import reader
    levels = {"v_Dark_g01_c01": 40, "v_Dark_g02_c01": 140, "v_Light_g01_c01": 200}
    records = write_records(tmp_path / "records", [
        dict(video_id=video_id, class_name=video_id.split("_")[1],
             frames=np.full((6, 24, 32, 3), level, np.uint8))
        for video_id, level in levels.items()])
    spec = reader.ClipSpec(num_frames=2, image_size=16, num_clips=2, num_crops=3)
    report, confusion = evaluation.evaluate_split(brightness_model(), records, "all", spec,
                                                  ["Dark", "Light"], batch_size=4)
    # v_Dark_g02_c01 (140) is brighter than 127.5: wrong, the others right.
    assert report["num_videos"] == 3 and report["num_clips"] == 3 * 2 * 3
    assert report["accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(confusion, [[1, 1], [0, 1]])
    metrics = evaluation.write_report(str(tmp_path / "metrics.json"),
                                      str(tmp_path / "confusion.png"), "all", report,
                                      confusion, ["Dark", "Light"], views=spec.views)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["views"] == spec.views and (tmp_path / "confusion.png").stat().st_size


SPLIT_LOGITS = """
import json, os
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from model.network.build import build_model
from model.inference import evaluation
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = build_model("r2plus1d_10", 3, 4, 32, width_multiplier=0.25)
clips = np.random.default_rng(0).integers(0, 256, (5, 4, 32, 32, 3), np.uint8)
split, alone = evaluation.logits_function(model, strategy), evaluation.logits_function(model)
print(json.dumps({n: float(np.abs(np.asarray(split(clips[:n])) - np.asarray(alone(clips[:n])))
                           .max()) for n in (1, 3, 4, 5)}))
"""


@pytest.mark.slow
def test_split_evaluation_takes_any_batch_size(tmp_path):
    # A last batch smaller than the replicas, or not a multiple of them, gives
    # the one-device logits: no replica is left without a clip.
    result = subprocess.run([sys.executable, "-c", SPLIT_LOGITS], cwd=REPO,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(differences) == {"1", "3", "4", "5"}
    assert max(differences.values()) < 1e-5, differences

