"""The exports: `model.keras`, a SavedModel serving uint8 clips and `classes.json`, in float32."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_clips
from model.inference import export
from model.network.build import build_model
from model.training.precision import set_precision
from model.training.run_dir import RunDir


pytestmark = pytest.mark.usefixtures("float32_policy")


def _small():
    return build_model("r2plus1d_10", 5, 8, 32, width_multiplier=0.25)


def test_float32_copy_keeps_a_float32_model_and_copies_a_mixed_one():
    float32 = _small()
    assert export.float32_copy(float32) is float32
    set_precision("mixed_bfloat16")
    mixed = _small()
    copy = export.float32_copy(mixed)
    assert copy is not mixed
    computing = [layer for layer in copy.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert {layer.compute_dtype for layer in computing} == {"float32"}
    inner = keras.Model(copy.input, copy.get_layer("stage1_block1").output)
    assert keras.backend.standardize_dtype(inner(random_clips(1, 8, 32)).dtype) == "float32"
    for ours, theirs in zip(copy.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


# Both policies take the same path; float16's is the slow run's.
@pytest.mark.parametrize("precision", [
    "mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_exports_compute_in_float32_whatever_trained_them(precision, tmp_path):
    set_precision(precision)
    model = _small()
    run = RunDir(tmp_path)
    export.export_model(model, run, list("abcde"), 8, 32)
    set_precision("float32")
    exported = keras.saving.load_model(run.model)
    assert {layer.compute_dtype for layer in exported.layers} <= {"float32", "uint8"}
    clips = random_clips(2, 8, 32)
    np.testing.assert_allclose(np.asarray(exported(clips)), np.asarray(model(clips)),
                               atol=0.05)  # the half-precision model's rounding
    loaded = tf.saved_model.load(run.saved_model)  # kept: its variables live with it
    served = loaded.serve(tf.constant(clips))
    np.testing.assert_allclose(served["logits"].numpy(), np.asarray(exported(clips)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               tf.nn.softmax(served["logits"]).numpy(), rtol=1e-6)
    with open(run.classes) as handle:
        assert json.load(handle) == list("abcde")
