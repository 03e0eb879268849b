"""The manifest: what a preprocessing run wrote, read back by the reader and trainer.

`manifest.json` sits at the top of a records folder and is written last, so
its presence means the run finished. It lists the classes in label order, the
shard files and counts of each split, the frame geometry and encoding, and
the options used.
"""

import json
import os

from preprocess import schema
from preprocess.errors import UserError

MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"
RECORD_SUFFIX = ".tfrecord"


class ManifestError(UserError):
    """A records folder that cannot be read; the message says what to fix."""


def _filesystems():
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def write_manifest(output_dir, manifest):
    fs = _filesystems()
    with fs.create(fs.join(output_dir, MANIFEST_NAME)) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8"))


def read_manifest(records_dir):
    """Reads and checks `manifest.json`; raises `ManifestError` with the fix."""
    import tensorflow as tf
    path = os.path.join(records_dir, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise ManifestError(f"no {MANIFEST_NAME} in {records_dir}; run "
                            "`python -m preprocess --source SRC --output_dir "
                            f"{records_dir}` first (or finish the run that was "
                            "interrupted)")
    with tf.io.gfile.GFile(path) as handle:
        try:
            manifest = json.load(handle)
        except json.JSONDecodeError as error:
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
