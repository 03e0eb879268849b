"""The README's commands as a new user runs them: in order, in a fresh folder, at small sizes."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from model.network import weights
from model.training.config import resolve_config
from preprocess.synthetic import MOTION_CLASSES

README = (REPO / "README.md").read_text()
# Smaller sizes appended to the README's own commands (argparse keeps the last value).
SMALLER = {
    "preprocess.synthetic": ["--groups", "4", "--clips_per_group", "2", "--num_frames", "30"],
    "preprocess": ["--per_class", "train=4,val=2,test=2"],
    "train.py": ["--epochs", "1", "--steps_per_epoch", "2", "--precise_bn_batches", "1",
                 "--eval_clips", "1"],
}


def blocks(heading, language):
    """The code blocks of one `## heading` section of the README, as text."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def commands(block):
    """Shell commands of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.startswith("#")]


def _program(command):
    words = command.split()
    return words[2] if words[1] == "-m" else os.path.basename(words[1])


@pytest.fixture
def user_folder(tmp_path):
    """A fresh working folder holding the repository's entry points, as a checkout does."""
    for name in ("train.py", "scripts", "model", "preprocess"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def _run(command, cwd, timeout=600):
    """Runs a shell command line, or an argument list, with the environment's `python` first."""
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the commands' own defaults, as a user gets them
    return subprocess.run(command, shell=isinstance(command, str), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_first_hour_runs_as_written_then_the_model_loads_in_python(user_folder):
    (first_hour,) = blocks("The first hour", "bash")
    steps = commands(first_hour)
    assert [_program(step) for step in steps] == ["preprocess.synthetic", "preprocess",
                                                  "train.py", "predict.py"]
    for step in steps:
        command = " ".join([step, *SMALLER.get(_program(step), [])])
        result = _run(command, user_folder)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-3000:])
        # Quiet logs: no CUDA probe error on a machine without a GPU, no Beam extras warning.
        assert "apitools" not in result.stderr, result.stderr[-2000:]
        if _program(step) == "train.py":
            assert "cuInit" not in result.stderr, result.stderr[-2000:]
    assert any(name in result.stdout for name in MOTION_CLASSES), result.stdout  # predicted
    # Each Python example in a fresh interpreter, as the README writes it.
    keras_example, saved_model_example = blocks("Use the model in Python", "python")
    result = _run([sys.executable, "-c", keras_example], user_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"(1, {len(MOTION_CLASSES)})"
    result = _run([sys.executable, "-c", saved_model_example], user_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in MOTION_CLASSES


def test_set_up_is_one_command_then_the_activation(tmp_path):
    (setup,) = blocks("Set up", "bash")
    assert commands(setup) == ["bash scripts/env.sh", "source .venv/bin/activate"]
    # Run (not sourced) on an environment that is up to date, it only says how to activate.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".twoplusone-installed").touch()
    result = subprocess.run(["bash", str(REPO / "scripts" / "env.sh")], cwd=tmp_path,
                            env=dict(os.environ, TWOPLUSONE_VENV=str(venv)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "setup: ready; activate it with: source venv/bin/activate"


def test_the_fine_tuning_commands_name_published_weights():
    (block,) = blocks("Fine-tuning from pretrained weights, by name", "bash")
    trainings = [c for c in commands(block) if _program(c) == "train.py"]
    assert trainings
    for command in trainings:
        config = resolve_config(command.split()[2:])
        assert weights.lookup(config["init_from"]) is not None, command
    for name in re.findall(r"^\| `(\w+)` \|", README, re.M):
        assert weights.lookup(name) is not None, name
