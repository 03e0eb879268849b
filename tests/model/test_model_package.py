"""model/__init__.py: the names every role shares, and TensorFlow's start without its notices."""

import os
import subprocess
import sys

import pytest

import model
from conftest import REPO

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796523672.430437   11976 port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1796523672.470753   11976 cpu_feature_guard.cc:227] This TensorFlow binary\n",
    "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild\n",
    "E0000 00:00:1796523672.430766   11976 cuda_platform.cc:52] failed call to cuInit\n",
]


def test_the_log_level_decides_which_start_up_lines_pass():
    assert model._above_level(NOTICES, 0) == NOTICES
    # Level 1 hides notices and their continuation lines, never errors.
    assert model._above_level(NOTICES, 1) == NOTICES[4:]
    assert model._above_level(NOTICES, 3) == []
    assert model._above_level(["a Python warning\n"], 3) == ["a Python warning\n"]


def test_held_stderr_holds_what_native_code_writes():
    with model.held_stderr() as held:
        os.write(2, b"from C\n")  # as TensorFlow's and h5py's native code writes
    assert held.text() == "from C\n"


@pytest.mark.slow  # two TensorFlow processes
def test_tensorflow_starts_without_its_notices_unless_asked():
    code = "import model\nmodel.quiet_tensorflow_logs()\nmodel.import_tensorflow()\n"
    quiet = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=quiet,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    asked = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                           env={**quiet, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True,
                           text=True, timeout=120)
    assert "oneDNN custom operations" in asked.stderr  # the user's level wins
