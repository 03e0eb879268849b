"""twoplusone's models, in three subpackages by role, as Model Garden keeps them apart.

- `model.network`: the (2+1)D ResNets, their layers and the weights they load
  (`from model.network.build import build_model`).
- `model.training`: what a run is made of: its config, strategies, precision,
  the fit on one machine or several, precise BatchNorm and the run folder.
- `model.inference`: evaluation, prediction, timelines and the exports.

Importing this package is light (no TensorFlow): it holds the names every
role shares, so a command line can be checked before TensorFlow loads.
"""

import contextlib
import os
import re
import shutil
import sys
import tempfile

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")

# The metrics every trainer, loop and report names: the one home of their names.
ACCURACY = "accuracy"
TOP_K_ACCURACY = "top5_accuracy"
VAL_ACCURACY = "val_" + ACCURACY
VAL_TOP_K_ACCURACY = "val_" + TOP_K_ACCURACY


def nvidia_driver_present():
    """Whether this machine has an NVIDIA driver, whatever TensorFlow sees (no TensorFlow)."""
    return bool(shutil.which("nvidia-smi")) or os.path.exists("/proc/driver/nvidia")


def quiet_tensorflow_logs():
    """Hides TensorFlow's C++ notices and warnings; call before TensorFlow loads.

    On a machine without an NVIDIA driver its errors too: there TensorFlow's
    CUDA probe logs "failed call to cuInit" as an error on every start, and
    the real errors of a CPU run reach Python as exceptions anyway. A
    TF_CPP_MIN_LOG_LEVEL already set wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia_driver_present() else "3")


# A line of TensorFlow's C++ log: severity, date, time, thread, file:line.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def import_tensorflow():
    """Imports TensorFlow, holding back the notices it logs before it reads its log level.

    TensorFlow 2.16 and later log as they load, before absl's logging reads
    TF_CPP_MIN_LOG_LEVEL: "All log messages before absl::InitializeLog() ...",
    oneDNN's notice and the CUDA probe's, each once per library that logs.
    Entry points call this once their command line is checked, after
    `quiet_tensorflow_logs`; it applies TF_CPP_MIN_LOG_LEVEL to those lines
    itself, so a user who sets it to 0 still sees them all. Anything else
    written while TensorFlow loads passes through.

    Returns:
        The `tensorflow` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0)
    with held_stderr() as held:
        import tensorflow
    sys.stderr.write("".join(_above_level(held.text().splitlines(keepends=True), level)))
    sys.stderr.flush()
    return tensorflow


class _Held:
    """What `held_stderr` held back: `text()` once its block has ended."""

    def __init__(self):
        self._text = ""

    def text(self):
        return self._text


@contextlib.contextmanager
def held_stderr():
    """Holds back what is written to stderr, by Python or by C++, for the caller to sift.

    Yields a `_Held` whose `text()` is what was written, once the block has
    ended (also when it raised). The file descriptor itself is redirected,
    since TensorFlow's and h5py's native code write to it directly.
    """
    held = _Held()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield held
        finally:
            try:
                sys.stderr.flush()
            finally:  # stderr comes back even if the held flush fails (a full disk)
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            held._text = captured.read().decode("utf-8", "replace")


def _above_level(lines, level):
    """The lines of TensorFlow's start-up output that `level` does not hide.

    A line that is not a log line's first continues the one above it.
    """
    kept, hiding = [], False
    for line in lines:
        match = _LOG_LINE.match(line)
        if match:
            hiding = _SEVERITY[match[1]] < level
        elif line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            hiding = level >= 1  # it only introduces the notices below it
        if not hiding:
            kept.append(line)
    return kept


def top_k(num_classes):
    """The k of the top-k accuracy: 5, or every class when there are fewer."""
    return min(5, num_classes)
