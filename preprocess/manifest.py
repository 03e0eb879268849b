"""The manifest: what a preprocessing run wrote, read back by the reader and trainer.

`manifest.json` sits at the top of a records folder and is written last, so
its presence means the run finished. It lists the classes in label order, the
shard files and counts of each split, the frame geometry and encoding, and
the options used. `check_request` and `check_frame_size` check what a run
or an evaluation asks of the records against it. Importing this module is
light (no TensorFlow), so that it can also hold the reading defaults a
command line needs before TensorFlow loads.
"""

import json
import os

from preprocess import schema
from preprocess.errors import UserError

MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"
RECORD_SUFFIX = ".tfrecord"

# The default smallest area fraction of Inception-style random resized crops:
# more than Inception's 0.08, so that a crop keeps at least 40% of a frame. The
# reader's crops and train.py's --crop_scale both read it here, in a module
# light enough for a command line that is checked before TensorFlow loads.
MIN_CROP_SCALE = 0.4


class ManifestError(UserError):
    """A records folder that cannot be read; the message says what to fix."""


class RequestError(ManifestError):
    """A request the records cannot serve (a split, a frame size); the message says what to fix."""


def _filesystems():
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def write_manifest(output_dir, manifest):
    fs = _filesystems()
    with fs.create(fs.join(output_dir, MANIFEST_NAME)) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8"))


def read_bytes(path):
    """A small file's bytes, or None if it is missing: local paths without TensorFlow,
    so that a command line's records are checked before it loads; `gs://` with it."""
    if "://" not in str(path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
    import tensorflow as tf
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def read_manifest(records_dir):
    """Reads and checks `manifest.json`; raises `ManifestError` with the fix."""
    path = os.path.join(records_dir, MANIFEST_NAME)
    text = read_bytes(path)
    if text is None:
        raise ManifestError(f"no {MANIFEST_NAME} in {records_dir}; run "
                            "`python -m preprocess --source SRC --output_dir "
                            f"{records_dir}` first (or finish the run that was "
                            "interrupted)")
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path} is not valid JSON ({error}); "
                            "preprocess again with --overwrite") from None
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise ManifestError(f"{records_dir} holds records of schema version {version}, "
                            f"this code reads version {schema.SCHEMA_VERSION}; "
                            "preprocess again with --overwrite")
    return manifest


def shard_paths(records_dir, manifest, split):
    """Full paths of a split's shards; raises `ManifestError` if the split is unusable."""
    splits = manifest["splits"]
    if split not in splits:
        raise ManifestError(f"no split {split!r} in {records_dir}; it has "
                            f"{', '.join(sorted(splits)) or 'no splits'}")
    if not splits[split]["num_videos"]:
        raise ManifestError(f"split {split!r} in {records_dir} has no videos "
                            "(all failed or none were selected); see "
                            f"{FAILURES_NAME}")
    return [os.path.join(records_dir, shard) for shard in splits[split]["shards"]]


def check_shards_per_worker(records_dir, split, num_shards, workers):
    """Each of `workers` input pipelines reads its own shards, so there must be enough."""
    if num_shards < workers:
        raise ManifestError(
            f"the {split} split of {records_dir} has {num_shards} shard(s) for {workers} "
            f"workers, each of which reads its own; preprocess again with --num_shards "
            f"{workers} or more")


def pick_split(splits, wanted, fallback):
    """`wanted`, else `fallback`, whichever the manifest's splits hold videos of; else None."""
    for name in (wanted, fallback):
        if name in splits and splits[name]["num_videos"]:
            return name
    return None


def check_request(manifest, request, num_workers=None):
    """Checks a training run's request against its records' manifest.

    Args:
        manifest: as `read_manifest` returns it.
        request: a `train.py` config; reads `records`, `train_split`,
            `val_split`, `test_split`, `eval_checkpoint` and `image_size`.
        num_workers: the input pipelines that read their own training shards,
            or None on one machine.

    Returns:
        `(val_split or None, test_split)`: a missing split falls back to the other.

    Raises:
        ManifestError: a split is missing or empty, the frames are too small
            or the training shards too few for the workers.
    """
    records = request["records"]
    splits = manifest["splits"]
    train_shards = shard_paths(records, manifest, request["train_split"])
    if num_workers:  # each worker reads its own shards
        check_shards_per_worker(records, request["train_split"], len(train_shards),
                                num_workers)
    val_split = pick_split(splits, request["val_split"], request["test_split"])
    test_split = pick_split(splits, request["test_split"], request["val_split"])
    if test_split is None:
        raise RequestError(f"{records} has no {request['test_split']} or "
                           f"{request['val_split']} split with videos to evaluate on; "
                           "preprocess with one (e.g. --per_class train=30,val=10,test=10)")
    if request["eval_checkpoint"] == "best" and val_split in (None, test_split):
        raise RequestError(f"--eval_checkpoint best needs a validation split apart from the "
                           f"{test_split} split, and {records} has none; use "
                           "--eval_checkpoint last or preprocess with a val split")
    check_frame_size(manifest, records, request["image_size"],
                     "--image_size {size} is larger than the {smallest}-pixel frames in "
                     "{records}", "lower it, or preprocess with a larger --image_size")
    return val_split, test_split


def check_frame_size(manifest, records_dir, image_size, problem, fix):
    """Refuses clips of side `image_size` larger than the smallest stored frames' short side.

    Args:
        manifest: as `read_manifest` returns it.
        records_dir: the folder it was read from, for the message.
        image_size: the clips' side.
        problem: the caller's words for the problem, in terms of its own
            flags, formatted with `size`, `smallest` and `records`.
        fix: the caller's advice, after a semicolon, formatted likewise.

    Raises:
        RequestError: the frames are too small.
    """
    smallest = min((min(size) for size in manifest["geometry"]["frame_sizes"]), default=0)
    if image_size > smallest:
        words = dict(size=image_size, smallest=smallest, records=records_dir)
        raise RequestError(f"{problem.format(**words)}; {fix.format(**words)}")
