"""A run's config: defaults, presets, flags and the checks that refuse a request in one line."""

import subprocess
import sys

import pytest

from conftest import REPO
from model.training import config as config_lib
from model.training.config import BASE, PRESETS, TrainError, build_parser, resolve_config
from preprocess.manifest import MIN_CROP_SCALE

# A small R(2+1)D run on a cosine schedule, as the trainer's own tests ask for.
ARGS = ["--records", "r", "--output_dir", "o", "--model", "r2plus1d_10",
        "--width_multiplier", "0.25", "--schedule", "cosine", "--epochs", "1"]


def test_command_line_over_preset_over_base():
    config = resolve_config(["--records", "r", "--output_dir", "o", "--preset", "demo",
                             "--epochs", "3"])
    assert config["epochs"] == 3  # the command line
    assert config["width_multiplier"] == PRESETS["demo"]["width_multiplier"]  # the preset
    assert config["crop_scale"] == BASE["crop_scale"] == MIN_CROP_SCALE  # the base
    assert config["overwrite"] is False and config["allow_cpu"] is False


def test_help_ends_each_flag_with_its_default():
    text = " ".join(build_parser().format_help().split())
    assert f"smallest area fraction of resized crops (default: {MIN_CROP_SCALE})" in text
    assert "frames per clip (default: 10; presets set their own)" in text


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--samples_per_video", "0"], "--samples_per_video must be at least 1"),
    (["--learning_rate", "0"], "--learning_rate must be"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--warmup_epochs", "3"], "must not exceed --epochs"),
    (["--warmup_epochs", "1", "--schedule", "constant"], "--warmup_epochs needs --schedule cosine"),
    (["--strategy", "multi_worker", "--overwrite"],
     "--overwrite cannot be used with --strategy multi_worker"),
    (["--model", "tutorial", "--image_size", "48"],
     "the tutorial model has a fixed width and no dropout; drop --width_multiplier and "
     "--dropout or choose an r2plus1d --model"),
    (["--bn_epsilon", "0"], "--bn_epsilon must be positive"),
    (["--model", "tutorial", "--width_multiplier", "1", "--init_from", "{repo}/README.md"],
     "PyTorch weights do not fit the tutorial"),
    (["--precise_bn_batches", "-1"], "--precise_bn_batches"),
    (["--model", "r2plus1d_18", "--init_from", "kinetics400"],
     "--init_from kinetics400 fixes the network's width; drop --width_multiplier"),
    (["--init_from", "kinetics400"], "choose --model r2plus1d_18 (or --preset "
                                     "r2plus1d_18_kinetics)"),
])
def test_bad_requests_are_refused_before_any_work(args, fragment):
    args = [arg.format(repo=REPO) for arg in args]
    with pytest.raises(TrainError) as raised:
        resolve_config([*ARGS, *args])
    assert fragment in str(raised.value)


@pytest.mark.parametrize("args, message", [
    # The preset set the width: there is no flag of the user's to drop.
    (["--preset", "demo", "--model", "tutorial"],
     "--preset demo sets --width_multiplier 0.25; the tutorial model has a fixed width and "
     "no dropout; pass --width_multiplier 1.0 or choose an r2plus1d --model"),
    # One value of the preset's, one of the user's.
    (["--preset", "r2plus1d_18", "--model", "tutorial", "--width_multiplier", "0.5"],
     "--preset r2plus1d_18 sets --dropout 0.5; the tutorial model has a fixed width and no "
     "dropout; pass --dropout 0.0, drop --width_multiplier or choose an r2plus1d --model"),
    (["--preset", "demo", "--model", "r2plus1d_18", "--init_from", "kinetics400"],
     "--preset demo sets --width_multiplier 0.25; --init_from kinetics400 fixes the "
     "network's width; pass --width_multiplier 1.0"),
    # Every value the user's own: the flags to drop, as always.
    (["--preset", "demo", "--model", "tutorial", "--width_multiplier", "0.5"],
     "the tutorial model has a fixed width and no dropout; drop --width_multiplier and "
     "--dropout or choose an r2plus1d --model"),
])
def test_a_value_a_preset_set_is_named_with_the_preset(args, message):
    with pytest.raises(TrainError) as raised:
        resolve_config(["--records", "r", "--output_dir", "o", *args])
    assert str(raised.value) == message


def test_the_advice_works():
    resolve_config(["--records", "r", "--output_dir", "o", "--preset", "demo", "--model",
                    "tutorial", "--width_multiplier", "1.0"])
    resolve_config(["--records", "r", "--output_dir", "o", "--preset", "demo", "--model",
                    "r2plus1d_18", "--init_from", "kinetics400", "--width_multiplier", "1.0"])


def test_importing_the_config_loads_no_tensorflow():
    code = ("import sys\nfrom model.training import config\n"
            "config.resolve_config(['--records', 'r', '--output_dir', 'o'])\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_every_default_has_a_reason():
    source = open(config_lib.__file__).read()
    start = source.index("BASE = dict(")
    base = source[start:source.index("\n)\n", start)]
    for line in base.splitlines()[1:]:
        assert "#" in line, line
