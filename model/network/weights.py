"""Published R(2+1)D weights by name: the one table of where each file lives and what it holds.

    network = build_model("r2plus1d_18", 101, 16, 112, weights="kinetics400")
    python train.py --records records/ucf101 --output_dir runs/r18k --init_from kinetics400

`fetch(name)` downloads a file once, with `keras.utils.get_file`, into Keras's
cache (`$KERAS_HOME/models/`, `~/.keras/models/` by default), and keeps it
only if its SHA-256 is the published one; every later use checks the cached
file again and reads it without the network. A name also fixes what the file
needs to compute what its authors' network computed: the architecture, the
BatchNorm epsilon, the input normalisation; the clip length it was trained
on is recorded beside them. Importing this module loads no TensorFlow, so a
command line can be checked against the table first.
"""

import dataclasses
import hashlib
import os
import re

from preprocess.errors import UserError

# Where in Keras's cache the files go (keras.applications' own weights use the same folder).
CACHE_SUBDIR = "models"


class WeightsError(UserError):
    """Weights that cannot be had, or do not fit the model asked for."""


@dataclasses.dataclass(frozen=True)
class NamedWeights:
    """One published weights file and what it takes to use it.

    Args:
        url: where the file is published.
        sha256: its SHA-256 as hex: all 64 digits where a source gives them,
            else the 8 that end its file name (torch.hub's convention: the
            start of the file's SHA-256).
        architecture: the `model.R2PLUS1D_STAGES` network it fits.
        bn_epsilon: the BatchNorm epsilon its statistics were computed with.
        num_classes: classes of its classifier.
        num_frames: the clip length it was trained on (frames of 112x112).
        normalisation: `"kinetics"`: pixels in [0, 1] less Kinetics-400's
            mean, over its deviation (`model.network.resnets.KINETICS_MEAN`, `_STD`).
        source: where the numbers above come from.
    """

    url: str
    sha256: str
    architecture: str
    bn_epsilon: float
    num_classes: int
    num_frames: int
    normalisation: str
    source: str

    @property
    def file_name(self):
        return self.url.rsplit("/", 1)[-1]


_TORCHVISION = "https://download.pytorch.org/models/"
_IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
# moabitcoin/ig65m-pytorch converted VMZ's Caffe2 R(2+1)D-34 blobs; its
# ig65m/models.py builds them with epsilon 1e-3 ("exact Caffe2" BatchNorm),
# and its extract.py, like VMZ's own PyTorch port (pt/vmz/func/test.py),
# feeds them Kinetics-normalised clips. Class counts as that models.py
# asserts them (its last commit: 487 for 8 frames, 359 for 32).
_IG65M_SOURCE = "moabitcoin/ig65m-pytorch v1.0.0 (ig65m/models.py, ig65m/cli/extract.py)"
NAMED_WEIGHTS = {
    # torchvision's R(2+1)D-18, Kinetics-400: 67.5% video top-1 (torchvision's
    # R2Plus1D_18_Weights: 16-frame clips, 15 fps, 5 clips a video). The full
    # hash and size (126,162,996 bytes) as four public repositories record
    # them, agreeing with the file name and torchvision's _file_size 120.318 MiB.
    "kinetics400": NamedWeights(
        url=_TORCHVISION + "r2plus1d_18-91a641e6.pth",
        sha256="91a641e6c2ab531d1aca5f4321b4d802ec5c3babc15df855cdb6e39c6a1107c8",
        architecture="r2plus1d_18", bn_epsilon=1e-5, num_classes=400, num_frames=16,
        normalisation="kinetics", source="torchvision R2Plus1D_18_Weights.KINETICS400_V1"),
    # IG-65M's R(2+1)D-34 (65 million Instagram videos, weak hashtag labels),
    # fine-tuned on Kinetics-400: 80.0% (32 frames) and 74.9% (8 frames) video
    # top-1 on Kinetics-400 (VMZ's c2/tutorials/model_zoo.md).
    "ig65m_kinetics400": NamedWeights(
        url=_IG65M + "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth", sha256="ade133f1",
        architecture="r2plus1d_34", bn_epsilon=1e-3, num_classes=400, num_frames=32,
        normalisation="kinetics", source=_IG65M_SOURCE),
    "ig65m_kinetics400_clip8": NamedWeights(
        url=_IG65M + "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", sha256="0aa0550b",
        architecture="r2plus1d_34", bn_epsilon=1e-3, num_classes=400, num_frames=8,
        normalisation="kinetics", source=_IG65M_SOURCE),
    # The same network pretrained on IG-65M alone, its classifier over hashtags.
    "ig65m": NamedWeights(
        url=_IG65M + "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", sha256="449a7af9",
        architecture="r2plus1d_34", bn_epsilon=1e-3, num_classes=359, num_frames=32,
        normalisation="kinetics", source=_IG65M_SOURCE),
    "ig65m_clip8": NamedWeights(
        url=_IG65M + "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", sha256="9bae36ae",
        architecture="r2plus1d_34", bn_epsilon=1e-3, num_classes=487, num_frames=8,
        normalisation="kinetics", source=_IG65M_SOURCE),
}


def lookup(name):
    """The entry of a name of `NAMED_WEIGHTS`, or None for anything else (a path)."""
    return NAMED_WEIGHTS.get(str(name))


def source_kind(source):
    """What an `--init_from` is: the one place that tells, light enough for a command line.

    Returns:
        `named` (a name of `NAMED_WEIGHTS`), `run` (a folder: a run of ours),
        `keras` (a `.keras` file), `torch` (any other file), or `missing`.
    """
    if lookup(source) is not None:
        return "named"
    path = str(source)
    if os.path.isdir(path):
        return "run"
    if not os.path.isfile(path):
        return "missing"
    return "keras" if path.endswith(".keras") else "torch"


def for_file(path):
    """`(name, entry)` whose published file has this file's name, or `(None, None)`.

    A file downloaded by hand keeps its published name, and with it the
    epsilon and normalisation it needs.
    """
    base = os.path.basename(str(path))
    for name, entry in NAMED_WEIGHTS.items():
        if entry.file_name == base:
            return name, entry
    return None, None


def mismatch(name, model_name):
    """Why weights `name` do not fit `model_name`, or None when they do (or are no name)."""
    entry = lookup(name)
    if entry is None or entry.architecture == model_name:
        return None
    return (f"{name} are {entry.architecture} weights and do not fit {model_name}; choose "
            f"--model {entry.architecture}")


def cache_path(name):
    """Where `fetch` keeps the file of `name`: `$KERAS_HOME/models/<file name>`.

    KERAS_HOME is read at each call (Keras reads it once, at import), with
    Keras's own default.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return os.path.join(os.path.expanduser(home), CACHE_SUBDIR, NAMED_WEIGHTS[name].file_name)


def fetch(name):
    """The local path of the file of `name`, downloaded once and checked at every use.

    A cached file whose hash is not the published one is deleted and fetched
    again. A download goes to a temporary name and becomes the cached file
    only once its hash is right; a wrong one is deleted. Either way nothing
    unchecked is ever returned or kept.

    Returns:
        `(path, sha256 hex digest)`.

    Raises:
        WeightsError: in one line, naming the URL, the expected hash, and how
            to pass a file downloaded another way.
    """
    entry = NAMED_WEIGHTS[name]
    path = cache_path(name)
    if os.path.exists(path):
        digest = sha256(path)
        if digest.startswith(entry.sha256):
            return path, digest
        os.remove(path)
        print(f"weights: {path} is not the published file (sha256 {digest[:16]}...); "
              "downloading it again", flush=True)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_abandoned_downloads(folder, entry.file_name)
    partial = _download(name, entry, folder)
    digest = sha256(partial)
    if not digest.startswith(entry.sha256):
        os.remove(partial)
        raise WeightsError(
            f"{entry.url} sent a file whose sha256 is {digest[:16]}..., not the published "
            f"{entry.sha256}; it was deleted. {_by_hand(name, entry)}")
    os.replace(partial, path)  # atomic: another process sees the whole file or none
    return path, digest


def _download(name, entry, folder):
    """Downloads the file to a name of this process; returns its path."""
    import keras

    # The process id keeps two processes (workers of one machine) from
    # writing the same file.
    partial_name = f"{entry.file_name}.{os.getpid()}.partial"
    try:
        # An absolute cache_subdir is the folder itself; get_file deletes what
        # it wrote when the transfer fails or is interrupted.
        return keras.utils.get_file(partial_name, entry.url, cache_subdir=folder,
                                    force_download=True)
    except Exception as error:  # get_file raises a bare Exception for HTTP and URL errors
        reason = str(error).replace(f"URL fetch failure on {entry.url}: ", "")
        reason = reason.replace("None -- ", "").strip()
        raise WeightsError(f"cannot download {name} from {entry.url} ({reason}). "
                           f"{_by_hand(name, entry)}") from None


def _by_hand(name, entry):
    return (f"Download it another way, check that its sha256 begins {entry.sha256[:16]}, "
            f"and pass its path instead of {name!r} (or save it as {cache_path(name)})")


def _remove_abandoned_downloads(folder, file_name):
    """Deletes partial downloads of `file_name` whose process no longer runs (killed)."""
    pattern = re.compile(re.escape(file_name) + r"\.(\d+)\.partial$")
    for other in os.listdir(folder):
        match = pattern.match(other)
        if match and not _running(int(match[1])):
            try:
                os.remove(os.path.join(folder, other))
            except FileNotFoundError:
                pass


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sha256(path):
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
