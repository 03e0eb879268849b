"""The (2+1)D ResNets: shapes, parameter counts, widths, dtype policies, training."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO, random_clips
from model.network import MODEL_NAMES, R2PLUS1D_STAGES, resnets
from model.network import layers as video_layers
from model.training.precision import set_precision

HERE = pathlib.Path(__file__).parent


pytestmark = pytest.mark.usefixtures("float32_policy")


def _network(name, num_classes, num_frames=16, image_size=112, **options):
    """The builder of `resnets` behind a model name."""
    if name == "tutorial":
        return resnets.tutorial(num_classes, num_frames=num_frames, image_size=image_size,
                                **options)
    return resnets.r2plus1d(num_classes, R2PLUS1D_STAGES[name], num_frames=num_frames,
                            image_size=image_size, name=name, **options)


def _small(name, num_classes=5, num_frames=8, image_size=32, flip=False):
    options = {} if name == "tutorial" else {"width_multiplier": 0.25}
    return _network(name, num_classes, num_frames, image_size, flip=flip, **options)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("frames,size", [(8, 32), (4, 48)])
def test_output_shapes(name, frames, size):
    model = _small(name, num_classes=7, num_frames=frames, image_size=size)
    logits = model(random_clips(2, frames, size))
    assert tuple(logits.shape) == (2, 7)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_r2plus1d_sizes_are_free():
    model = resnets.r2plus1d(3, (1, 1, 1, 1), num_frames=None, image_size=None,
                             width_multiplier=0.25)
    assert tuple(model(random_clips(1, 6, 40)).shape) == (1, 3)
    assert tuple(model(random_clips(1, 16, 64)).shape) == (1, 3)


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
    model = resnets.tutorial(num_classes, 10, 224)
    assert model.count_params() == tutorial_parameter_count(num_classes)


def test_r2plus1d_18_matches_the_reference_size():
    model = _network("r2plus1d_18", 400, 16, 112)
    assert abs(model.count_params() - 31.5e6) / 31.5e6 < 0.01, model.count_params()
    stem = model.get_layer("stem_spatial")
    assert stem.filters == 45 and stem.kernel_size == (1, 7, 7)
    block = model.get_layer("stage2_block1")
    assert block.conv1.mid_filters == video_layers.mid_channels(64, 128) == 230


def test_depths_and_width_multiplier():
    counts = {name: _network(name, 10, None, None).count_params()
              for name in ("r2plus1d_10", "r2plus1d_18", "r2plus1d_34")}
    assert counts["r2plus1d_10"] < counts["r2plus1d_18"] < counts["r2plus1d_34"]
    half = _network("r2plus1d_18", 10, None, None, width_multiplier=0.5)
    assert half.count_params() < counts["r2plus1d_18"] / 3
    assert half.get_layer("stage4_block1").filters == 256
    assert resnets.make_divisible(64 * 0.25) == 16 and resnets.make_divisible(45 * 0.25) == 8


def test_flips_follow_the_rescaling_and_rest_at_inference():
    model = _small("r2plus1d_10", flip=True)
    # After the rescaling: a select on floats, which GPUs run, not on uint8.
    assert [layer.name for layer in model.layers[1:3]] == ["rescale", "random_flip"]
    assert model.get_layer("random_flip").compute_dtype == "float32"
    # Inactive at inference: two predictions of 16 clips agree (random flips
    # would differ somewhere with probability 1 - 2**-16).
    probe = random_clips(16, 8, 32)
    np.testing.assert_array_equal(model.predict(probe, verbose=0),
                                  model.predict(probe, verbose=0))


@pytest.mark.parametrize("precision,compute", [
    ("float32", "float32"), ("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_dtype_policies(precision, compute):
    assert set_precision(precision) == precision
    model = _small("r2plus1d_10")
    dtype = keras.backend.standardize_dtype
    assert all(dtype(v.dtype) == "float32" for v in model.weights)
    inner = keras.Model(model.input, model.get_layer("stage1_block1").output)
    assert dtype(inner(random_clips(1, 8, 32)).dtype) == compute
    assert model.get_layer("logits").compute_dtype == "float32"
    assert dtype(model(random_clips(1, 8, 32)).dtype) == "float32"


def _fit_reduces_loss(name, precision):
    set_precision(precision)
    keras.utils.set_random_seed(0)
    model = _small(name, num_classes=4, flip=True)  # flips run inside the train step
    model.compile(optimizer=keras.optimizers.Adam(1e-3 if name != "tutorial" else 1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clips, labels = random_clips(4, 8, 32, seed=1), np.array([0, 1, 2, 3])
    # The training loss of each step: inference-mode losses would also measure
    # how far BatchNorm's moving statistics have come in eight steps.
    losses = model.fit(clips, labels, epochs=8, batch_size=4, verbose=0).history["loss"]
    return losses[0], losses[-1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tutorial", "r2plus1d_10"])
def test_fit_steps_reduce_the_loss(name):
    before, after = _fit_reduces_loss(name, "float32")
    assert after < before, (before, after)


@pytest.mark.slow
def test_fit_steps_reduce_the_loss_in_bfloat16_on_cpu():
    # TensorFlow's oneDNN CPU kernels give NaN weight gradients for some bf16
    # Conv3D shapes (seen with TF 2.21 on AVX512_BF16); train.py turns oneDNN
    # off for bf16 on a CPU, and so does this process.
    code = ("from test_resnets import _fit_reduces_loss\n"
            "print(*_fit_reduces_loss('r2plus1d_10', 'mixed_bfloat16'))\n")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(HERE), str(REPO / "tests")]))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(float, result.stdout.split()[-2:])
    assert after < before, (before, after)
