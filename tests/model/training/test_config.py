"""A run's config: defaults, presets, flags and the checks that refuse a request in one line."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, assert_one_line_error, in_fresh_python
from model.training import config as config_lib
from model.training.config import (BASE, PRESETS, TrainError, build_parser, format_settings,
                                   resolve_config)
from preprocess.errors import UserError
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
    assert ("frames per clip (default: 10; presets set their own: see --print_config)"
            in text)
    assert "--preset NAME --print_config shows one's settings" in text


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
     "the tutorial model has a fixed width and no dropout; drop --width_multiplier or "
     "choose an r2plus1d --model"),
    (["--model", "tutorial", "--image_size", "48", "--dropout", "0.2"],
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
    # The user's own value over the preset's: dropping it would bring back the preset's.
    (["--preset", "demo", "--model", "tutorial", "--width_multiplier", "0.5"],
     "the tutorial model has a fixed width and no dropout; pass --width_multiplier 1.0 or "
     "choose an r2plus1d --model"),
    # Every value the user's own, over no preset's: the flags to drop, as always.
    (["--preset", "demo", "--model", "tutorial", "--width_multiplier", "1.0", "--dropout",
      "0.2"],
     "the tutorial model has a fixed width and no dropout; drop --dropout or choose an "
     "r2plus1d --model"),
])
def test_a_value_a_preset_set_is_named_with_the_preset(args, message):
    with pytest.raises(TrainError) as raised:
        resolve_config(["--records", "r", "--output_dir", "o", *args])
    assert str(raised.value) == message


@pytest.mark.parametrize("text, args, message", [
    ("model: tutorial\nwidth_multiplier: 0.5\n", [],
     "the tutorial model has a fixed width and no dropout; drop the line width_multiplier: "
     "from {file} or choose an r2plus1d --model"),
    ("model: tutorial\nwidth_multiplier: 0.5\n", ["--dropout", "0.2"],
     "the tutorial model has a fixed width and no dropout; drop --dropout and drop the line "
     "width_multiplier: from {file} or choose an r2plus1d --model"),
    # A flag over the file's line: the flag is what to drop.
    ("model: tutorial\nwidth_multiplier: 0.5\n", ["--width_multiplier", "0.75"],
     "the tutorial model has a fixed width and no dropout; drop --width_multiplier or "
     "choose an r2plus1d --model"),
    # A value given over a preset that sets it too: dropping it would bring the preset's back.
    ("preset: r2plus1d_18\nmodel: tutorial\ndropout: 0.3\n", ["--width_multiplier", "0.5"],
     "the tutorial model has a fixed width and no dropout; set dropout: 0.0 in {file} and "
     "drop --width_multiplier or choose an r2plus1d --model"),
    ("preset: r2plus1d_18\nmodel: tutorial\nwidth_multiplier: 0.5\n", [],
     "--preset r2plus1d_18 sets --dropout 0.5; the tutorial model has a fixed width and no "
     "dropout; pass --dropout 0.0, drop the line width_multiplier: from {file} or choose "
     "an r2plus1d --model"),
])
def test_a_value_a_config_file_gave_is_named_as_its_line(tmp_path, text, args, message):
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    with pytest.raises(TrainError) as raised:
        resolve_config(["--records", "r", "--output_dir", "o", "--config", str(path), *args])
    assert str(raised.value) == message.format(file=path)


def test_a_preset_flag_under_a_file_says_which_settings_the_file_keeps(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    path.write_text(format_settings(resolve_config(["--preset", "demo", "--records", "r",
                                                    "--output_dir", "o"])))
    config = resolve_config(["--records", "r", "--output_dir", "o", "--config", str(path),
                             "--preset", "r2plus1d_18", "--epochs", "2"])
    assert (config["preset"], config["model"], config["epochs"]) == ("r2plus1d_18",
                                                                     "r2plus1d_10", 2)
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 1 and notes[0].startswith(
        f"train: note: --preset r2plus1d_18 sets only what {path} leaves out; the file's "
        "own values win for model r2plus1d_10, "), notes
    assert "epochs" not in notes[0]  # a flag's value is the flag's
    # A file that leaves the preset's settings to it: nothing to say.
    path.write_text("seed: 3\nprecise_bn_batches: 10\n")
    resolve_config(["--records", "r", "--output_dir", "o", "--config", str(path),
                    "--preset", "r2plus1d_18"])
    assert capsys.readouterr().err == ""
    # A command refused: its error comes alone.
    path.write_text("model: tutorial\nwidth_multiplier: 0.5\n")
    with pytest.raises(TrainError):
        resolve_config(["--records", "r", "--output_dir", "o", "--config", str(path),
                        "--preset", "demo"])
    assert capsys.readouterr().err == ""


def test_the_advice_works():
    resolve_config(["--records", "r", "--output_dir", "o", "--preset", "demo", "--model",
                    "tutorial", "--width_multiplier", "1.0"])
    resolve_config(["--records", "r", "--output_dir", "o", "--preset", "demo", "--model",
                    "r2plus1d_18", "--init_from", "kinetics400", "--width_multiplier", "1.0"])


def test_importing_the_config_loads_no_tensorflow():
    # A preset that names published weights too: their table is read, not TensorFlow.
    result, loaded = in_fresh_python(
        "from model.training import config\n"
        "config.resolve_config(['--records', 'r', '--output_dir', 'o'])\n"
        "config.resolve_config(['--records', 'r', '--output_dir', 'o', "
        "'--preset', 'r2plus1d_34_ig65m'])\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert loaded == []


def test_every_default_has_a_reason():
    source = open(config_lib.__file__).read()
    start = source.index("BASE = dict(")
    base = source[start:source.index("\n)\n", start)]
    for line in base.splitlines()[1:]:
        assert "#" in line, line


# -----------------------------------------------------------------------------
# Config files and --print_config.
# -----------------------------------------------------------------------------

WHERE = ["--records", "r", "--output_dir", "o"]


def write(path, text):
    path.write_text(text)
    return str(path)


def test_command_line_over_file_over_preset_over_base(tmp_path):
    path = write(tmp_path / "exp.yaml", "preset: demo\nepochs: 7\nbatch_size: 4\n"
                                        "learning_rate: 1e-4\nflip: true\n")
    config = resolve_config([*WHERE, "--config", path, "--batch_size", "2"])
    assert config["batch_size"] == 2  # the command line over the file
    assert config["epochs"] == 7 and config["flip"] is True  # the file over its preset
    assert config["learning_rate"] == 1e-4  # YAML's string "1e-4", read as --learning_rate reads it
    assert config["preset"] == "demo"
    assert config["width_multiplier"] == PRESETS["demo"]["width_multiplier"]  # the file's preset
    assert config["crop_scale"] == BASE["crop_scale"]  # the base
    assert "config" not in config and "print_config" not in config  # not settings of the run
    # A preset on the command line wins over the file's; the file's values still apply.
    config = resolve_config([*WHERE, "--config", path, "--preset", "r2plus1d_18"])
    assert config["preset"] == "r2plus1d_18" and config["epochs"] == 7
    assert config["num_frames"] == PRESETS["r2plus1d_18"]["num_frames"]


def test_a_json_file_and_nulls_where_the_default_is_none(tmp_path):
    path = write(tmp_path / "exp.json", json.dumps(
        {"preset": "r2plus1d_18_kinetics", "init_from": None, "eval_crops": 1}))
    config = resolve_config([*WHERE, "--config", path])
    assert config["init_from"] is None  # from scratch, whatever the preset starts from
    assert config["eval_crops"] == 1 and config["model"] == "r2plus1d_18"


@pytest.mark.parametrize("text, message", [
    ("epoch: 3\n", "exp.yaml: unknown setting 'epoch'; did you mean epochs?"),
    ("epochs: 3.5\n", "exp.yaml: epochs must be a whole number (as --epochs takes), not 3.5"),
    ("epochs: true\n", "exp.yaml: epochs must be a whole number (as --epochs takes), not True"),
    ("learning_rate: fast\n", "exp.yaml: learning_rate must be a number (as --learning_rate "
                              "takes), not 'fast'"),
    ("optimizer: adamw\n", "exp.yaml: optimizer must be one of adam, sgd (as --optimizer "
                           "takes), not 'adamw'"),
    ("eval_crops: 2\n", "exp.yaml: eval_crops must be one of 1, 3 (as --eval_crops takes), "
                        "not 2"),
    ("preset: r18\n", "exp.yaml: preset must be one of demo, "),
    ("flip: 1\n", "exp.yaml: flip must be true or false (as --flip takes), not 1"),
    ("jit_compile: \"yes\"\n", "exp.yaml: jit_compile must be true or false"),
    ("train_split: 3\n", "exp.yaml: train_split must be a string (as --train_split takes), "
                         "not 3"),
    ("epochs:\n", "exp.yaml: epochs must be given a value (as --epochs takes), not None"),
    ("epochs: [3\n", "exp.yaml is not valid YAML (line 2: "),
    ("- epochs\n", "exp.yaml must hold settings as `name: value` lines (a mapping), not a list"),
    # The file's values meet the same checks as the command line's.
    ("epochs: 0\n", "--epochs must be at least 1"),
])
def test_a_bad_file_is_refused_in_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "exp.yaml", text)
    with pytest.raises(UserError) as raised:
        resolve_config([*WHERE, "--config", path])
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_file_and_yaml_that_would_run_code_are_refused(tmp_path):
    with pytest.raises(UserError, match="--config .*nope.yaml: no such file"):
        resolve_config([*WHERE, "--config", str(tmp_path / "nope.yaml")])
    marker = tmp_path / "ran"
    path = write(tmp_path / "exp.yaml", f"epochs: !!python/object/apply:os.system "
                                        f"['touch {marker}']\n")
    with pytest.raises(UserError, match="exp.yaml is not valid YAML"):
        resolve_config([*WHERE, "--config", path])
    assert not marker.exists()  # yaml.safe_load: data, never code


def test_records_and_output_dir_are_required_except_to_print(capsys):
    with pytest.raises(UserError, match="required: --records, --output_dir"):
        resolve_config([])
    with pytest.raises(UserError, match="required: --output_dir"):
        resolve_config(["--records", "r"])
    assert config_lib.resolve_command_line(["--print_config"]).print_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_printed_settings_load_back_as_the_same_config(tmp_path, preset):
    argv = ["--preset", preset, "--epochs", "30", "--seed", "5", "--no-flip", "--deterministic"]
    config = resolve_config([*WHERE, *argv])
    printed = config_lib.format_settings(config, [*argv, "--print_config"])
    # Every setting, and only settings: where a run reads and writes is not one.
    assert set(yaml.safe_load(printed)) == set(config) - {"records", "output_dir", "overwrite"}
    path = write(tmp_path / "printed.yaml", printed)
    assert resolve_config([*WHERE, "--config", path]) == config
    # Printed again from the file, the settings are the same text.
    again = config_lib.format_settings(resolve_config([*WHERE, "--config", path]))
    assert again.split("\n", 2)[2] == printed.split("\n", 2)[2]  # past the two comment lines


def test_print_config_prints_a_preset_and_exits_without_a_run_folder(tmp_path, capsys):
    import train
    out = tmp_path / "run"
    assert train.main(["--preset", "r2plus1d_18", "--print_config"]) == 0
    printed = capsys.readouterr().out
    settings = yaml.safe_load(printed)
    assert settings == {key: value for key, value in
                        resolve_config([*WHERE, "--preset", "r2plus1d_18"]).items()
                        if key not in ("records", "output_dir", "overwrite")}
    assert settings["num_frames"] == 16 and settings["optimizer"] == "sgd"
    assert printed.startswith("# The settings of: python train.py --preset r2plus1d_18 "
                              "--print_config\n")
    assert train.main(["--records", "r", "--output_dir", str(out), "--print_config"]) == 0
    assert not out.exists()
    assert "records" not in yaml.safe_load(capsys.readouterr().out)


def test_a_runs_config_json_is_a_config_file(tmp_path, capsys):
    from model.training.run_dir import RunDir, identity
    (tmp_path / "records").mkdir()
    original = resolve_config(["--records", str(tmp_path / "records"), "--output_dir",
                               str(tmp_path / "run"), "--preset", "demo", "--epochs", "3",
                               "--overwrite"])
    run = RunDir(tmp_path / "run")
    run.prepare({})
    run.write_config(original, identity(original, str(tmp_path / "records")),
                     policy="float32", replicas=1, global_batch=8)
    capsys.readouterr()
    again = resolve_config(["--records", "other", "--output_dir", "elsewhere",
                            "--config", run.config])
    assert again == {**original, "records": "other", "output_dir": "elsewhere",
                     "overwrite": False}
    notes = capsys.readouterr().err.splitlines()
    assert notes == [f"train: {run.config}: ignoring records, output_dir, overwrite: where a "
                     "run reads and writes comes from the command line (--records, "
                     "--output_dir, --overwrite)"]


def test_a_bad_config_file_is_one_error_line_from_train(tmp_path):
    path = write(tmp_path / "exp.yaml", "learning_rat: 0.1\n")
    result = subprocess.run([sys.executable, "train.py", "--config", path, "--print_config"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "exp.yaml: unknown setting 'learning_rat'; did you mean "
                                  "learning_rate?")
