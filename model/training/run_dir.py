"""The run folder: the one place that names what `train.py` writes and reads back.

    runs/r18/
        config.json            every resolved option, the run's identity, versions
        architecture.json      the network's Keras config, which a resumed run rebuilds
        checkpoints/last.keras, checkpoints/best.keras
        backup/                Keras BackupAndRestore state (resume after a kill)
        logs/                  TensorBoard: Keras's curves, and the run's HParams at its end
        launches.json          each launch's epochs, steps and seconds (wall time across resumes)
        history.csv, metrics.json, learning_curves.png, confusion_matrix.png
        model.keras, saved_model/, classes.json      the exports inference needs
        .lock                  held by the run writing here (`preprocess.folder_lock`)

A run's identity is every option that changes what it computes plus the
records' fingerprint; the identical command resumes a run, another identity
is refused unless it starts over.
"""

import hashlib
import json
import os
import platform
import shutil

from preprocess import __version__
from preprocess.errors import UserError, no_room, out_of_room
from preprocess.folder_lock import LOCK_NAME
from preprocess.index import records_digest
from preprocess.manifest import MANIFEST_NAME, read_bytes

# Options that do not change what a run computes; a resume may differ in them.
# The records are known by their fingerprint, not by the path typed to them:
# records moved or named another way are the same records.
NOT_IDENTITY = ("output_dir", "overwrite", "strategy", "collective_timeout", "allow_cpu",
                "data_service", "data_service_timeout", "records")
# What inference needs of the manifest to turn a new video into frames the same way.
MANIFEST_SUMMARY_KEYS = ("source", "split_spec", "geometry", "fps", "max_frames",
                         "encoding", "created", "schema_version")


class RunDirError(UserError):
    """A run folder that cannot be used as asked."""


def partial_path(path):
    """Where `path` is written before it is renamed into place; Keras wants its suffix kept."""
    for suffix in (".weights.h5", ".keras", ".json", ".csv", ".png"):
        if path.endswith(suffix):
            return path[:-len(suffix)] + ".partial" + suffix
    return path + ".partial"


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def write_whole(path, write):
    """Calls `write(partial_path(path))`, then renames that over `path`.

    A full disk or an error mid-write leaves the previous file whole and no
    partial one; a kill may leave a partial one, which no reader opens and
    the next write removes. `path` may be a folder (a SavedModel), which is
    not renamed over another: the old one is moved aside, the new one moved
    in, and only then the old one removed; a kill in between leaves the old
    one aside, and the next write puts it back before it starts.
    """
    partial, previous = partial_path(path), path + ".previous"
    if os.path.exists(previous) and not os.path.exists(path):
        os.replace(previous, path)  # a kill between the two moves of a folder
    _remove(partial)
    _remove(previous)
    try:
        write(partial)
        if os.path.isdir(partial) and os.path.isdir(path):
            os.replace(path, previous)
        os.replace(partial, path)
    except BaseException as error:
        _remove(partial)
        if os.path.exists(previous) and not os.path.exists(path):
            os.replace(previous, path)
        room = out_of_room(error)
        if room:  # named as the file it was to be, not its partial or a file within
            raise no_room(path, room[1]) from error
        raise
    _remove(previous)


def write_text(path, text):
    """Writes `text` to `path` whole (`write_whole`)."""
    def write(partial):
        with open(partial, "w", newline="") as handle:
            handle.write(text)
    write_whole(path, write)


class RunDir:
    """Paths of one run folder, and its `config.json`.

    Args:
        path: the folder (created by `prepare`).
    """

    def __init__(self, path):
        self.path = str(path)
        join = lambda *names: os.path.join(self.path, *names)  # noqa: E731
        self.config = join("config.json")
        self.architecture = join("architecture.json")
        self.last_checkpoint = join("checkpoints", "last.keras")
        self.best_checkpoint = join("checkpoints", "best.keras")
        self.backup = join("backup")
        self.logs = join("logs")
        self.history = join("history.csv")
        self.launches = join("launches.json")
        self.metrics = join("metrics.json")
        self.learning_curves = join("learning_curves.png")
        self.confusion_matrix = join("confusion_matrix.png")
        self.model = join("model.keras")
        self.saved_model = join("saved_model")
        self.classes = join("classes.json")

    def is_complete(self, identity, records_dir=None):
        """Whether the folder holds a finished run of this identity (its metrics are last).

        `records_dir`: the run's records, to match a run recorded before
        (`same_run`).
        """
        return (os.path.exists(self.metrics) and os.path.exists(self.config)
                and same_run(self.read_config().get("identity"), identity, records_dir))

    def prepare(self, identity, overwrite=False, records_dir=None):
        """Makes the folder; refuses one that holds a run of another identity.

        With `overwrite`, an existing folder is emptied first. `records_dir`:
        as for `is_complete`.
        """
        if overwrite and os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if name == LOCK_NAME:  # ours, held while we write: removing it would free it
                    continue
                path = os.path.join(self.path, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        elif os.path.exists(self.config):
            previous = self.read_config().get("identity") or {}
            previous = _as_recorded_now(previous, identity, records_dir)
            if previous != identity:
                changed = sorted(k for k in set(previous) | set(identity)
                                 if previous.get(k) != identity.get(k))
                if changed == ["records_fingerprint"]:
                    raise RunDirError(
                        f"{self.path} holds a run of other records: --records names records "
                        "of other videos or other preprocessing options than the run's "
                        f"(its config.json says which); point --records at those, pass "
                        "--overwrite to start over, or choose another --output_dir")
                raise RunDirError(f"{self.path} holds a run of another configuration "
                                  f"({', '.join(changed)} differ); pass --overwrite to "
                                  "start over or choose another --output_dir")
        os.makedirs(self.path, exist_ok=True)

    def write_config(self, config, identity, **facts):
        """Writes `config.json`: the options, the identity, versions and `facts`."""
        import keras
        import tensorflow as tf
        record = {"identity": identity, "config": config, **facts,
                  "versions": {"twoplusone": __version__, "tensorflow": tf.__version__,
                               "keras": keras.__version__,
                               "python": platform.python_version()}}
        write_text(self.config, json.dumps(record, indent=2))

    def read_config(self):
        """The dict `write_config` wrote; `RunDirError` when there is none."""
        if not os.path.exists(self.config):
            raise RunDirError(f"{self.config} is missing; point at a run folder that "
                              "train.py wrote")
        try:
            with open(self.config) as handle:
                return json.load(handle)
        except ValueError:
            raise RunDirError(f"{self.config} is damaged; pass --overwrite to train this "
                              "run again, or choose another --output_dir") from None

    def write_architecture(self, model):
        """Writes the model's architecture; whole, since a kill may come at any time."""
        write_text(self.architecture, model.to_json())

    def read_architecture(self):
        """The model `write_architecture` described, with fresh weights."""
        import keras

        import model.network.layers  # noqa: F401  registers our layers
        with open(self.architecture) as handle:
            return keras.models.model_from_json(handle.read())

    def resume_epoch(self):
        """The number of epochs the `BackupAndRestore` backup has completed (0: none)."""
        path = os.path.join(self.backup, "training_metadata.json")
        if not os.path.exists(path):
            return 0
        try:
            with open(path) as handle:
                return int(json.load(handle).get("epoch", 0))
        except (ValueError, AttributeError):
            raise RunDirError(f"{path} is damaged, so the run cannot resume; pass "
                              "--overwrite to train it again from the start") from None

    def repair_history(self, epochs_done):
        """Keeps `history.csv` to the epochs the backup holds, before a run resumes.

        A run killed after its history row but before its backup, or while
        writing the row, or two runs in one folder before folders were locked,
        leave rows the resumed run would repeat, a torn last line, or a second
        header; the resumed run appends to what is left.
        """
        if not os.path.exists(self.history):
            return
        with open(self.history, newline="") as handle:
            lines = handle.read().splitlines()
        header = lines[0] if lines else ""
        rows = {}
        for line in lines[1:]:
            epoch, _, rest = line.partition(",")
            fields = line.count(",") + 1
            if (epoch.isdigit() and int(epoch) < epochs_done
                    and fields == header.count(",") + 1 and rest):
                rows[int(epoch)] = line  # a repeated epoch: the last row wins
        kept = ([header] if rows else []) + [rows[e] for e in sorted(rows)]
        write_text(self.history, "".join(f"{line}\n" for line in kept))

    def require(self, *paths):
        """Raises `RunDirError` naming the first of `paths` that is missing."""
        for path in paths:
            if not os.path.exists(path):
                raise RunDirError(f"{path} is missing; point at a run folder that "
                                  "train.py finished")


def identity(config, records_dir):
    """What makes two runs the same run: the computing options and the records."""
    return {**computing_options(config), "records_fingerprint": fingerprint(records_dir)}


def computing_options(config):
    """The options that change what a run computes (all but `NOT_IDENTITY`)."""
    return {key: value for key, value in config.items() if key not in NOT_IDENTITY}


# What a manifest says of the job's run rather than of the records: the
# identical command writes byte-identical shards at another time, from a path
# typed another way, with or without --overwrite.
RUN_ONLY = ("created", "seconds", "source", "num_ignored_files")
RUN_ONLY_OPTIONS = ("source", "output_dir", "overwrite")


def fingerprint(records_dir):
    """A short hash of the records: what their manifest and their shards' indexes say of them.

    The manifest gives every shard, count and option; the indexes every
    video's id, label and frames' place (`index.records_digest`). The same
    for the records the identical preprocessing command writes again;
    other records, or records of other options, differ. Records without
    indexes (written before them) are known by their whole manifest.
    """
    text = read_bytes(os.path.join(records_dir, MANIFEST_NAME))
    try:
        manifest = json.loads(text)
        shards = [shard for info in manifest["splits"].values() for shard in info["shards"]]
    except (TypeError, ValueError, KeyError, AttributeError):
        return _whole_manifest_fingerprint(records_dir)
    digests = [records_digest(os.path.join(records_dir, shard)) for shard in shards]
    if not shards or None in digests:
        return _whole_manifest_fingerprint(records_dir)
    kept = {key: value for key, value in manifest.items() if key not in RUN_ONLY}
    if isinstance(kept.get("options"), dict):
        kept["options"] = {key: value for key, value in kept["options"].items()
                           if key not in RUN_ONLY_OPTIONS}
    kept["shard_records"] = digests
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def _whole_manifest_fingerprint(records_dir):
    # What runs recorded before `fingerprint` left out what is the job's own.
    return hashlib.sha256(read_bytes(os.path.join(records_dir, MANIFEST_NAME)) or b""
                          ).hexdigest()[:16]


def same_run(previous, identity, records_dir=None):
    """Whether a run folder's recorded identity is `identity` (`_as_recorded_now`)."""
    return _as_recorded_now(previous, identity, records_dir) == identity


def _as_recorded_now(previous, identity, records_dir=None):
    """A recorded identity as this version records it.

    A run recorded before the records were known by their fingerprint alone
    also holds their path, which is left out; given `records_dir`, a
    fingerprint of before (the whole manifest's) of these records counts as
    theirs.
    """
    previous = {key: value for key, value in (previous or {}).items() if key != "records"}
    recorded = previous.get("records_fingerprint")
    if (records_dir is not None and recorded != identity["records_fingerprint"]
            and recorded == _whole_manifest_fingerprint(records_dir)):
        previous["records_fingerprint"] = identity["records_fingerprint"]
    return previous


def manifest_summary(manifest):
    return {k: manifest[k] for k in MANIFEST_SUMMARY_KEYS}
