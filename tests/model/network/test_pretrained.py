"""torchvision's R(2+1)D weights in our model, read from PyTorch checkpoints without PyTorch.

Fixtures come from `../shared/data/`: a small checkpoint written by
`torch.save`, and a numpy recipe of a torchvision `r2plus1d_18` state dict
with the logits torchvision computes from it. The reader of the files
itself is tested in `test_torch_checkpoint.py`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from model.network import pretrained
from model.network.build import build_model
from torch_files import save_zip

CHECKPOINTS = SHARED_DATA / "torch_checkpoints"
TORCHVISION = SHARED_DATA / "torchvision_r2plus1d_18"


@pytest.fixture(scope="module")
def shared():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared fixtures are not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def recipe(torchvision_recipe):
    return torchvision_recipe


@pytest.fixture(scope="module")
def r18_file(recipe, tmp_path_factory):
    """torchvision's r2plus1d_18 state dict of the recipe, as a torch.save zip file."""
    return save_zip(recipe.make_state_dict(), tmp_path_factory.mktemp("r18") / "r18.pth")


def test_torchvision_r2plus1d_18_computes_what_torchvision_computes(recipe, r18_file,
                                                                     tmp_path):
    import keras

    expected = np.load(TORCHVISION / "expected_logits.npy")
    model = build_model("r2plus1d_18", 400, 16, 112, weights=r18_file)
    logits = model.predict(recipe.make_clip(), verbose=0)
    error = np.abs(logits - expected).max() / np.abs(expected).max()
    assert error < 1e-4, error
    # Saved and reloaded, the model still computes the same logits.
    model.save(tmp_path / "r18.keras")
    reloaded = keras.saving.load_model(tmp_path / "r18.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(recipe.make_clip(), verbose=0), logits,
                               rtol=0, atol=1e-5)


def test_a_new_head_when_the_class_count_differs(r18_file, capsys):
    kept = build_model("r2plus1d_18", 400, 8, 32, weights=r18_file)
    assert "400-class classifier kept" in capsys.readouterr().out
    fresh = build_model("r2plus1d_18", 7, 8, 32, weights=r18_file)
    assert "new 7-class classifier" in capsys.readouterr().out
    assert fresh.get_layer("logits").kernel.shape == (512, 7)
    for ours, theirs in zip(fresh.layers, kept.layers):
        if ours.name != "logits":
            for a, b in zip(ours.weights, theirs.weights):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


def _video_resnet_state(stages, mid=lambda stage, block, conv, inp, out: None, classes=5):
    """A torchvision VideoResNet (R(2+1)D stem) state dict laid out from its own rules."""
    rng = np.random.default_rng(0)
    state = {}

    def conv(key, *shape):
        state[key] = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape).astype(np.float32)

    def bn(key, channels):
        state[f"{key}.weight"] = np.ones(channels, np.float32)
        state[f"{key}.bias"] = np.zeros(channels, np.float32)
        state[f"{key}.running_mean"] = np.zeros(channels, np.float32)
        state[f"{key}.running_var"] = np.ones(channels, np.float32)
        state[f"{key}.num_batches_tracked"] = np.array(0, np.int64)

    conv("stem.0.weight", 45, 3, 1, 7, 7)
    bn("stem.1", 45)
    conv("stem.3.weight", 64, 45, 3, 1, 1)
    bn("stem.4", 64)
    inp = 64
    for s, (blocks, out) in enumerate(zip(stages, (64, 128, 256, 512)), 1):
        for b in range(blocks):
            paper = (inp * out * 27) // (inp * 9 + 3 * out)
            for c, cin in ((1, inp), (2, out)):
                m = mid(s, b, c, inp, out) or paper
                conv(f"layer{s}.{b}.conv{c}.0.0.weight", m, cin, 1, 3, 3)
                bn(f"layer{s}.{b}.conv{c}.0.1", m)
                conv(f"layer{s}.{b}.conv{c}.0.3.weight", out, m, 3, 1, 1)
                bn(f"layer{s}.{b}.conv{c}.1", out)
            if b == 0 and s > 1:
                conv(f"layer{s}.{b}.downsample.0.weight", out, inp, 1, 1, 1)
                bn(f"layer{s}.{b}.downsample.1", out)
            inp = out
    state["fc.weight"] = rng.normal(0, 0.01, (classes, 512)).astype(np.float32)
    state["fc.bias"] = np.zeros(classes, np.float32)
    return state


def test_r2plus1d_34_takes_its_channel_counts_from_the_checkpoint(tmp_path):
    # IG-65M's R(2+1)D-34 has mid channels of its own; here the first block of
    # each stage gets 8 more than the formula, its second convolution 16 more.
    def mid(stage, block, conv, inp, out):
        return (inp * out * 27) // (inp * 9 + 3 * out) + 8 * conv if block == 0 else None

    path = save_zip(_video_resnet_state((3, 4, 6, 3), mid), tmp_path / "r34.pth")
    model = build_model("r2plus1d_34", 5, 4, 32, weights=path, bn_epsilon=1e-3)
    block = model.get_layer("stage2_block1")
    assert block.conv1.mid_filters == 230 + 8 and block.conv2.mid_filters == 230 + 16
    assert block.bn1.epsilon == 1e-3
    assert np.isfinite(model.predict(np.zeros((1, 4, 32, 32, 3), np.uint8), verbose=0)).all()


def test_checkpoints_that_do_not_fit_are_named(shared, r18_file, recipe, tmp_path):
    with pytest.raises(pretrained.WeightsError, match=r"\(r2plus1d_18\), not r2plus1d_34"):
        build_model("r2plus1d_34", 5, 4, 32, weights=r18_file)
    with pytest.raises(pretrained.WeightsError, match="not a torchvision R.2.1.D"):
        build_model("r2plus1d_18", 5, 4, 32, weights=CHECKPOINTS / "small_zip.pth")
    state = recipe.make_state_dict()
    missing = {k: v for k, v in state.items() if k != "layer3.1.conv2.1.running_var"}
    unexpected = {**state, "layer2.0.extra.weight": np.zeros(3, np.float32)}
    wrong = {**state, "layer2.1.conv1.0.3.weight": state["layer2.1.conv1.0.3.weight"][:, :2]}
    cases = [(missing, "1 keys missing, first layer3.1.conv2.1.running_var"),
             (unexpected, "1 keys unexpected, first layer2.0.extra.weight"),
             (wrong, "1 keys of the wrong shape, first layer2.1.conv1.0.3.weight")]
    for index, (bad_state, fragment) in enumerate(cases):
        path = save_zip(bad_state, tmp_path / f"bad{index}.pth")
        with pytest.raises(pretrained.WeightsError, match=fragment):
            build_model("r2plus1d_18", 400, 4, 32, weights=path)


@pytest.mark.slow
def test_nothing_imports_torch(shared, r18_file):
    code = ("import sys, numpy as np\n"
            "from model.network.build import build_model\n"
            f"m = build_model('r2plus1d_18', 10, 4, 32, weights=r'{r18_file}')\n"
            "m.predict(np.zeros((1, 4, 32, 32, 3), np.uint8), verbose=0)\n"
            "print(sorted(n for n in sys.modules if n == 'torch' or n.startswith('torch.')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == []
