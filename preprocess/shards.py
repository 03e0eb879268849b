"""Shard files cut from fragments written where the videos are decoded.

Beam's TFRecord sink with a fixed shard count groups every record by shard,
so each video's frames would travel from the worker that decoded them,
through the shuffle, to the worker that writes their shard. Here the
decoding worker appends each record to a fragment file of its bundle and
passes on only the fragment's name, its records' sizes and video ids. One
small step then puts each split's records in a seeded random order and cuts
it into shards balanced by bytes, and each shard is written by copying byte
ranges out of the fragments. The pipeline so knows every shard's record
count and size, and the launcher never reads a shard.

The order is a function of the seed and the video ids alone, not of how the
runner bundled the work, so one command writes byte-identical shards on every
run; and every shard is a uniform sample of its split. A reader that mixes a
few shards through a small buffer then draws fair batches however large the
set: shards cut in id order would hold a few classes each, since UCF101's
ids begin with the class name.

Records use the TFRecord framing: the length, its masked CRC32C, the data,
its masked CRC32C. A retried bundle writes new fragments under new names;
fragments are removed when the job ends.
"""

import bisect
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import math
import struct
import uuid

import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from preprocess import index as index_lib
from preprocess import manifest as manifest_lib

FRAGMENTS = "_fragments"
# Aim for shards of 100-200 MB, the size tf.data reads efficiently from GCS.
TARGET_SHARD_BYTES = 150e6
_RAW = CompressionTypes.UNCOMPRESSED


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data):
    """One record in the TFRecord framing, as bytes."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), data,
                     struct.pack("<I", _masked_crc(data))))


@dataclasses.dataclass(frozen=True)
class Fragment:
    """A file of framed records of one split, written by one bundle.

    Attributes:
        split: the split its records belong to.
        path: where it is.
        sizes: the framed size of each record, in file order.
        videos: `(class, frames, height, width)` of each record, for the summary.
        video_ids: each record's video id, which orders the shards.
    """
    split: str
    path: str
    sizes: tuple
    videos: tuple
    video_ids: tuple


class FragmentWriter:
    """Appends the records of one bundle to one fragment file per split."""

    def __init__(self, output_dir):
        self.folder = FileSystems.join(output_dir, FRAGMENTS)
        self._open = {}

    def write(self, split, video_id, example, summary):
        if split not in self._open:
            path = FileSystems.join(self.folder, f"{split}-{uuid.uuid4().hex}.frag")
            self._open[split] = (FileSystems.create(path, compression_type=_RAW), path,
                                 [], [], [])
        handle, _, sizes, videos, video_ids = self._open[split]
        record = tfrecord(example)
        handle.write(record)
        sizes.append(len(record))
        videos.append(summary)
        video_ids.append(video_id)

    def close(self):
        """Closes every fragment; returns them as `Fragment`s."""
        fragments = []
        for split, (handle, path, sizes, videos, video_ids) in sorted(self._open.items()):
            handle.close()
            fragments.append(Fragment(split, path, tuple(sizes), tuple(videos),
                                      tuple(video_ids)))
        self._open = {}
        return fragments


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard to write: byte ranges `(fragment, start, end)` to copy, in order."""
    split: str
    path: str
    ranges: tuple
    records: int
    bytes: int


def shuffle_key(seed, split, video_id):
    """A record's place in its split's shards: a seeded hash of its video id.

    Sorting by it is a uniform random permutation that depends on the seed
    and the ids alone, whatever order or bundles the records arrive in.
    """
    return hashlib.sha256(f"{seed}/{split}/{video_id}".encode()).digest()


def plan_shards(fragments, output_dir, split_shards, seed=0):
    """Cuts each split's records, in a seeded random order, into shards of about equal bytes.

    Args:
        fragments: every `Fragment` of the job.
        split_shards: `{split: shards}`; 0 sizes them to about 150 MB each.
        seed: seed of the order (the job's `--seed`). Defaults to 0.

    Returns:
        A list of `ShardPlan`s, named `<split>/<split>-SSSSS-of-NNNNN.tfrecord`.
    """
    plans = []
    by_split = {}
    for fragment in fragments:
        offset = 0
        for size, video_id in zip(fragment.sizes, fragment.video_ids):
            by_split.setdefault(fragment.split, []).append(
                (shuffle_key(seed, fragment.split, video_id), fragment.path, offset, size))
            offset += size
    for split, keyed in sorted(by_split.items()):
        records = [(path, start, size) for _, path, start, size in sorted(keyed)]
        total = sum(size for _, _, size in records)
        count = split_shards.get(split) or math.ceil(total / TARGET_SHARD_BYTES)
        count = max(1, min(count, len(records)))
        cumulative = list(itertools.accumulate(size for _, _, size in records))
        cuts = [0]
        for shard in range(1, count):
            # The first cut past this shard's share of the bytes, leaving at
            # least one record to this shard and to each one after it.
            cut = bisect.bisect_left(cumulative, total * shard / count) + 1
            cuts.append(min(max(cut, cuts[-1] + 1), len(records) - (count - shard)))
        cuts.append(len(records))
        bounds = list(zip(cuts, cuts[1:]))
        for shard, (start, end) in enumerate(bounds):
            chosen = records[start:end]
            plans.append(ShardPlan(
                split=split,
                path=FileSystems.join(output_dir, split, f"{split}-{shard:05d}-of-{count:05d}"
                                      + manifest_lib.RECORD_SUFFIX),
                ranges=tuple(_merge(chosen)), records=len(chosen),
                bytes=sum(size for _, _, size in chosen)))
    return plans


def _merge(records):
    """Adjacent records of one fragment as one byte range."""
    ranges = []
    for path, start, size in records:
        if ranges and ranges[-1][0] == path and ranges[-1][2] == start:
            ranges[-1][2] = start + size
        else:
            ranges.append([path, start, start + size])
    return [tuple(r) for r in ranges]


def write_shard(plan):
    """Writes one shard by copying its records, and its index; returns its manifest entry.

    The index (`preprocess.index`) is written after the shard is whole, from
    the records as they are copied, so it never describes other bytes.
    """
    create = functools.partial(FileSystems.create, compression_type=_RAW)
    index = index_lib.IndexWriter(create, plan.path)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(create(plan.path))
        opened = {}  # a shuffled shard takes many ranges from each fragment: open it once
        for path, start, end in plan.ranges:
            if path not in opened:
                opened[path] = stack.enter_context(
                    FileSystems.open(path, compression_type=_RAW))
            handle = opened[path]
            handle.seek(start)
            while start < end:
                header = _read_exactly(handle, 12, path, end)
                framed = header + _read_exactly(
                    handle, struct.unpack("<Q", header[:8])[0] + 4, path, end)
                out.write(framed)
                index.add(framed)
                start += len(framed)
    index.close()
    return {"split": plan.split, "path": plan.path, "records": plan.records,
            "bytes": plan.bytes}


def _read_exactly(handle, size, path, end):
    data = handle.read(size)
    if len(data) != size:
        raise IOError(f"fragment {path} ends before byte {end}")
    return data
