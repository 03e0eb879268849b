"""The (2+1)D ResNets: shapes, parameter counts, serialisation, dtype policies, training."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from model.network import MODEL_NAMES
from model.network.build import build_model
from model.network import layers as video_layers
from model.training.precision import set_precision


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _clips(batch, frames, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, frames, size, size, 3),
                                                dtype=np.uint8)


def _small(name, num_classes=5, num_frames=8, image_size=32, flip=False):
    options = {} if name == "tutorial" else {"width_multiplier": 0.25}
    return build_model(name, num_classes, num_frames, image_size, flip=flip, **options)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("frames,size", [(8, 32), (4, 48)])
def test_output_shapes(name, frames, size):
    model = _small(name, num_classes=7, num_frames=frames, image_size=size)
    logits = model(_clips(2, frames, size))
    assert tuple(logits.shape) == (2, 7)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_r2plus1d_sizes_are_free():
    model = build_model("r2plus1d_10", 3, width_multiplier=0.25)
    assert tuple(model(_clips(1, 6, 40)).shape) == (1, 3)
    assert tuple(model(_clips(1, 16, 64)).shape) == (1, 3)


def tutorial_parameter_count(num_classes):
    """The tutorial network's parameters, counted from its definition."""
    def conv2plus1d(c_in, c_out, kt, k):
        return (k * k * c_in * c_out + c_out) + (kt * c_out * c_out + c_out)

    def layer_norm(c):
        return 2 * c

    total = conv2plus1d(3, 16, 3, 7) + 4 * 16  # stem and its BatchNorm
    c_in = 16
    for c_out in (16, 32, 64, 128):
        total += conv2plus1d(c_in, c_out, 3, 3) + layer_norm(c_out)
        total += conv2plus1d(c_out, c_out, 3, 3) + layer_norm(c_out)
        if c_in != c_out:
            total += c_in * c_out + c_out + layer_norm(c_out)  # projection
        c_in = c_out
    return total + 128 * num_classes + num_classes


@pytest.mark.parametrize("num_classes", [10, 101])
def test_tutorial_parameter_count(num_classes):
    model = build_model("tutorial", num_classes, 10, 224)
    assert model.count_params() == tutorial_parameter_count(num_classes)


def test_r2plus1d_18_matches_the_reference_size():
    model = build_model("r2plus1d_18", 400, 16, 112)
    assert abs(model.count_params() - 31.5e6) / 31.5e6 < 0.01, model.count_params()
    stem = model.get_layer("stem_spatial")
    assert stem.filters == 45 and stem.kernel_size == (1, 7, 7)
    block = model.get_layer("stage2_block1")
    assert block.conv1.mid_filters == video_layers.mid_channels(64, 128) == 230


def test_depths_and_width_multiplier():
    counts = {name: build_model(name, 10).count_params()
              for name in ("r2plus1d_10", "r2plus1d_18", "r2plus1d_34")}
    assert counts["r2plus1d_10"] < counts["r2plus1d_18"] < counts["r2plus1d_34"]
    half = build_model("r2plus1d_18", 10, width_multiplier=0.5)
    assert half.count_params() < counts["r2plus1d_18"] / 3
    assert half.get_layer("stage4_block1").filters == 256


LAYERS = [
    (video_layers.Conv2Plus1D, dict(filters=8, kernel_size=(3, 5, 5), strides=(2, 2, 2),
                                    mid_filters=12, mid_norm=True, use_bias=False)),
    (video_layers.ResidualMain, dict(filters=8, kernel_size=3)),
    (video_layers.Project, dict(units=6)),
    (video_layers.ResizeVideo, dict(height=8, width=12)),
    (video_layers.ResidualBlock2Plus1D, dict(filters=16, strides=2)),
    (video_layers.RandomFlipClips, dict(seed=3)),
]


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_layer_config_round_trip(cls, kwargs):
    layer = cls(**kwargs, name="probe")
    inputs = np.random.default_rng(0).normal(size=(2, 4, 16, 16, 8)).astype("float32")
    outputs = layer(inputs)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for key, value in kwargs.items():
        expected = tuple(value) if isinstance(value, (list, tuple)) else value
        got = layer.get_config()[key]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == (
            expected if not isinstance(value, int) or key not in ("kernel_size", "strides")
            else (value,) * 3)
    assert tuple(clone(inputs).shape) == tuple(outputs.shape)
    assert tuple(layer.compute_output_shape(inputs.shape)) == tuple(outputs.shape)


def test_random_flip_mirrors_whole_clips_in_training_only():
    clips = _clips(64, 3, 8)
    layer = video_layers.RandomFlipClips(seed=1)
    np.testing.assert_array_equal(np.asarray(layer(clips, training=False)), clips)
    out = np.asarray(layer(clips, training=True))
    assert out.dtype == np.uint8
    mirrored = [np.array_equal(o, c[:, :, ::-1]) for o, c in zip(out, clips)]
    kept = [np.array_equal(o, c) for o, c in zip(out, clips)]
    assert all(m != k for m, k in zip(mirrored, kept))  # every frame of a clip alike
    assert 16 < sum(mirrored) < 48
    model = _small("r2plus1d_10", flip=True)
    # After the rescaling: a select on floats, which GPUs run, not on uint8.
    assert [layer.name for layer in model.layers[1:3]] == ["rescale", "random_flip"]
    assert model.get_layer("random_flip").compute_dtype == "float32"
    # Inactive at inference: two predictions of 16 clips agree (random flips
    # would differ somewhere with probability 1 - 2**-16).
    probe = _clips(16, 8, 32)
    np.testing.assert_array_equal(model.predict(probe, verbose=0),
                                  model.predict(probe, verbose=0))


@pytest.mark.parametrize("name", ["tutorial", "r2plus1d_10"])
def test_keras_file_reloads_in_a_fresh_process(name, tmp_path):
    model = _small(name, flip=True)
    clips = _clips(2, 8, 32)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(clips, np.array([0, 1]), epochs=1, verbose=0)  # move BatchNorm statistics
    expected = model.predict(clips, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "clips.npy", clips)
    code = (
        "import sys, numpy as np, keras, model.network.layers\n"
        f"m = keras.saving.load_model(r'{path}', safe_mode=True)\n"
        f"np.save(r'{tmp_path / 'out.npy'}', m.predict(np.load(r'{tmp_path / 'clips.npy'}'),"
        " verbose=0))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.parametrize("precision,compute", [
    ("float32", "float32"), ("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_dtype_policies(precision, compute):
    assert set_precision(precision) == precision
    model = _small("r2plus1d_10")
    dtype = keras.backend.standardize_dtype
    assert all(dtype(v.dtype) == "float32" for v in model.weights)
    inner = keras.Model(model.input, model.get_layer("stage1_block1").output)
    assert dtype(inner(_clips(1, 8, 32)).dtype) == compute
    assert model.get_layer("logits").compute_dtype == "float32"
    assert dtype(model(_clips(1, 8, 32)).dtype) == "float32"


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_exports_compute_in_float32_whatever_trained_them(precision, tmp_path):
    from model.inference import export
    from model.training.run_dir import RunDir
    set_precision(precision)
    model = _small("r2plus1d_10")
    run = RunDir(tmp_path)
    export.export_model(model, run, list("abcde"), 8, 32)
    set_precision("float32")
    exported = keras.saving.load_model(run.model)
    assert {layer.compute_dtype for layer in exported.layers} <= {"float32", "uint8"}
    clips = _clips(2, 8, 32)
    np.testing.assert_allclose(np.asarray(exported(clips)), np.asarray(model(clips)),
                               atol=0.05)  # the half-precision model's rounding
    loaded = tf.saved_model.load(run.saved_model)  # kept: its variables live with it
    served = loaded.serve(tf.constant(clips))
    np.testing.assert_allclose(served["logits"].numpy(), np.asarray(exported(clips)),
                               rtol=1e-5, atol=1e-5)


def test_auto_precision_is_float32_on_cpu():
    assert set_precision("auto") == "float32"
    with pytest.raises(ValueError, match="unknown precision"):
        set_precision("float8")


def _fit_reduces_loss(name, precision):
    set_precision(precision)
    keras.utils.set_random_seed(0)
    model = _small(name, num_classes=4, flip=True)  # flips run inside the train step
    model.compile(optimizer=keras.optimizers.Adam(1e-3 if name != "tutorial" else 1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clips, labels = _clips(4, 8, 32, seed=1), np.array([0, 1, 2, 3])
    # The training loss of each step: inference-mode losses would also measure
    # how far BatchNorm's moving statistics have come in eight steps.
    losses = model.fit(clips, labels, epochs=8, batch_size=4, verbose=0).history["loss"]
    return losses[0], losses[-1]


@pytest.mark.parametrize("name", ["tutorial", "r2plus1d_10"])
def test_fit_steps_reduce_the_loss(name):
    before, after = _fit_reduces_loss(name, "float32")
    assert after < before, (before, after)


def test_fit_steps_reduce_the_loss_in_bfloat16_on_cpu():
    # TensorFlow's oneDNN CPU kernels give NaN weight gradients for some bf16
    # Conv3D shapes (seen with TF 2.21 on AVX512_BF16); train.py turns oneDNN
    # off for bf16 on a CPU, and so does this process.
    code = ("from test_model import _fit_reduces_loss\n"
            "print(*_fit_reduces_loss('r2plus1d_10', 'mixed_bfloat16'))\n")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(float, result.stdout.split()[-2:])
    assert after < before, (before, after)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'r3d'"):
        build_model("r3d", 10)
