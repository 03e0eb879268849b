"""The datasets a run reads: one-hot training batches that repeat, statistics' fixed clips,
validation's."""

import numpy as np
import pytest

from conftest import two_class_records
from model.training import data, fit
from model.training.config import resolve_config
from preprocess import manifest as manifest_lib
from preprocess.reader import ClipSpec


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    records = two_class_records(tmp_path_factory.mktemp("data_records"))
    config = resolve_config(["--records", str(records), "--output_dir", "unused", "--model",
                             "r2plus1d_10", "--num_frames", "4", "--image_size", "32",
                             "--batch_size", "4", "--seed", "3"])
    manifest = manifest_lib.read_manifest(str(records))
    return fit.Plan(config, None, None, ClipSpec.for_run(config), "val", 2, 4, 0,
                    manifest["splits"]["train"]["num_videos"])


def test_training_batches_repeat_with_one_hot_labels(plan):
    batches = list(data.training_batches(plan, 4).take(plan.steps_per_pass + 2))
    assert len(batches) == plan.steps_per_pass + 2  # past one pass: it repeats
    clips, labels = batches[0]
    assert clips.shape == (4, 4, 32, 32, 3) and clips.dtype.name == "uint8"
    assert labels.shape == (4, 2)
    np.testing.assert_array_equal(labels.numpy().sum(axis=1), 1)


def test_statistics_see_the_same_clips_on_every_pass(plan):
    statistics = data.training_batches(plan, 4, for_statistics=True)
    first = [clips.numpy() for clips, _ in statistics.take(3)]
    again = [clips.numpy() for clips, _ in statistics.take(3)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    training = data.training_batches(plan, 4)
    fresh = [clips.numpy() for clips, _ in training.take(3)]
    assert any(not np.array_equal(a, b) for a, b in zip(first, fresh))


def test_validation_reads_its_split_once_and_none_without_one(plan):
    batches = list(data.validation_batches(plan, 4))
    assert sum(len(labels) for _, labels in batches) == 8  # 4 val videos a class
    assert data.validation_batches(fit.Plan(**{**vars(plan), "val_split": None}), 4) is None
