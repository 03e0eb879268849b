"""The index of a shard: where each video's frames lie, so the reader reads only a clip's bytes.

A 16-frame clip of a 168-frame UCF101 video needs a tenth of its record;
reading and parsing the whole record for every clip is what bounds the
sequential reader. The Beam job writes, beside each shard
`<split>-SSSSS-of-NNNNN.tfrecord`, an index `<split>-SSSSS-of-NNNNN.index`
(the shards stay the TFRecords Model Garden reads; a glob of `*.tfrecord`
skips the index). Its layout, little-endian:

    header   magic, the shard's size and fingerprint, record count, ids' size
    records  per record: its offset in the shard, where its frame table is in
             this file, frame count, label, height, width (`RECORD`)
    ids      per record its video id: lengths (uint16), then UTF-8 bytes
    frames   per record, per frame: the JPEG's offset in the shard, its
             length and its CRC32C (`FRAME`)

The reader holds the record tables of a split in memory (32 bytes a video
plus its id: about 130 MB for Kinetics-700's 650k videos, ids and
TensorFlow's copies included) and reads a clip's frame entries lazily, with
the clip. A frame's CRC32C is checked on every
read, as TFRecord's own CRCs are checked on a sequential read. An index
records its shard's size and a fingerprint of its first and last 64 KiB, so
a truncated, replaced or foreign shard is refused instead of read wrong; an
in-place edit of equal size is not caught, save by the frames' CRCs.
"""

import hashlib
import os
import struct

import google_crc32c
import numpy as np

from preprocess import schema
from preprocess.errors import UserError

MAGIC = b"2P1IDX01"
SUFFIX = ".index"
_HEADER = struct.Struct("<8sQ32sII")  # magic, shard bytes, fingerprint, records, ids bytes
RECORD = np.dtype([("offset", "<u8"), ("frames_at", "<u8"), ("num_frames", "<u4"),
                   ("label", "<i4"), ("height", "<u4"), ("width", "<u4")])
FRAME = np.dtype([("offset", "<u8"), ("length", "<u4"), ("crc", "<u4")])
_FINGERPRINT_SPAN = 64 << 10
_TFRECORD_HEADER = 12  # a record's length (8 bytes) and its CRC (4) precede its data


# What a frame that fails its CRC says; TensorFlow wraps it in its own error.
CORRUPT_FRAME = "fails its CRC"


class IndexMismatchError(UserError):
    """An index that does not belong to its shard; the message says what to do."""


def corrupt_frame(error):
    """The ranged read's own line (a corrupt frame, a shard cut short), from the
    TensorFlow error that carries it out of the input pipeline; else None."""
    marker = f"{IndexMismatchError.__name__}: "
    for line in str(error).splitlines():
        if marker in line:
            return line[line.index(marker) + len(marker):].strip()
    return None


def index_path(shard_path):
    """Where the index of `shard_path` lies: beside it, `.tfrecord` replaced."""
    stem = shard_path[:-len(".tfrecord")] if shard_path.endswith(".tfrecord") else shard_path
    return stem + SUFFIX


def fingerprint(size, head, tail):
    """A shard's fingerprint from its size and its first and last 64 KiB."""
    return hashlib.sha256(struct.pack("<Q", size) + bytes(head) + bytes(tail)).digest()


class IndexWriter:
    """Builds a shard's index as the shard's records are written in order.

    Args:
        open_output: a function of a path that returns a writable binary file
            (Beam's `FileSystems.create`, or `open(path, "wb")`).
        shard_path: the shard being written.
    """

    def __init__(self, open_output, shard_path):
        self.open_output = open_output
        self.shard_path = shard_path
        self.records, self.ids, self.frames = [], [], []
        self.size = 0
        self.head = bytearray()
        self.tail = bytearray()
        self._frames_bytes = 0

    def add(self, framed):
        """Notes one TFRecord-framed record, as it is appended to the shard."""
        data = memoryview(framed)[_TFRECORD_HEADER:-4]
        context, spans = schema.describe_video_example(data)
        start = self.size + _TFRECORD_HEADER
        frames = np.empty(len(spans), FRAME)
        for i, (offset, length) in enumerate(spans):
            frames[i] = (start + offset, length,
                         google_crc32c.value(bytes(data[offset:offset + length])))
        self.records.append((self.size, self._frames_bytes, len(spans),
                             context[schema.LABEL_INDEX], context[schema.HEIGHT],
                             context[schema.WIDTH]))
        self.ids.append(context[schema.VIDEO_ID].encode("utf-8"))
        self.frames.append(frames)
        self._frames_bytes += frames.nbytes
        self._see(framed)

    def _see(self, framed):
        if len(self.head) < _FINGERPRINT_SPAN:
            self.head += framed[:_FINGERPRINT_SPAN - len(self.head)]
        self.tail = (self.tail + framed)[-_FINGERPRINT_SPAN:]
        self.size += len(framed)

    def close(self):
        """Writes the index; the shard must be whole by now."""
        ids = struct.pack(f"<{len(self.ids)}H", *map(len, self.ids)) + b"".join(self.ids)
        records = np.array(self.records, RECORD)
        base = _HEADER.size + records.nbytes + len(ids)
        records["frames_at"] += base
        with self.open_output(index_path(self.shard_path)) as out:
            out.write(_HEADER.pack(MAGIC, self.size, fingerprint(self.size, self.head, self.tail),
                                   len(records), len(ids)))
            out.write(records.tobytes())
            out.write(ids)
            for frames in self.frames:
                out.write(frames.tobytes())


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def _is_local(path):
    return "://" not in path


class _Files:
    """Ranged reads of local files (`os.pread`) or remote ones (`tf.io.gfile`).

    Each read opens and closes its file: no descriptor is held between reads,
    so a split of thousands of shards holds none, and tf.data's threads share
    nothing (two system calls more a clip, a few microseconds).
    """

    def read(self, path, offset, length):
        if _is_local(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        else:
            import tensorflow as tf
            with tf.io.gfile.GFile(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        if len(data) != length:
            raise IndexMismatchError(f"{path} ends before byte {offset + length}: it was "
                                     f"truncated after its index was checked; copy it again "
                                     "or preprocess again")
        return data

    def exists(self, path):
        if _is_local(path):
            return os.path.exists(path)
        import tensorflow as tf
        return tf.io.gfile.exists(path)

    def size(self, path):
        if _is_local(path):
            return os.path.getsize(path)
        import tensorflow as tf
        return tf.io.gfile.stat(path).length


def records_digest(shard_path):
    """A SHA-256 of what a shard's index says of its records, or None without an index.

    Its header, record table and ids: the shard's size and fingerprint, and
    every video's id, label, size, frame count and place. Two shards whose
    records differ in any of these differ here, even at equal byte counts;
    the frame tables (the bulk of an index) are left out.
    """
    path, files = index_path(shard_path), _Files()
    if not files.exists(path):
        return None
    header = files.read(path, 0, _HEADER.size)
    magic, _, _, count, ids_bytes = _HEADER.unpack(header)
    if magic != MAGIC:
        return None
    tables = files.read(path, _HEADER.size, count * RECORD.itemsize + ids_bytes)
    return hashlib.sha256(header + tables).hexdigest()


def has_indexes(shard_paths):
    """Whether every shard has an index beside it (records written before indexes had none)."""
    import tensorflow as tf
    return bool(shard_paths) and all(tf.io.gfile.exists(index_path(p)) for p in shard_paths)


class SplitIndex:
    """The record tables of a split's shards, checked against their shards.

    Attributes:
        shards: the shard paths, in the manifest's order.
        records: a `RECORD` array of every video, shard by shard, in file order.
        shard: the shard number of each record.
        video_ids: each record's video id.

    Raises:
        IndexMismatchError: an index whose shard is not the one it was written for.
    """

    def __init__(self, shard_paths):
        self.shards = list(shard_paths)
        self.files = _Files()
        tables, numbers, ids = [], [], []
        for number, path in enumerate(self.shards):
            table, video_ids = self._read(path)
            tables.append(table)
            numbers.append(np.full(len(table), number, np.int32))
            ids += video_ids
        self.records = np.concatenate(tables) if tables else np.empty(0, RECORD)
        self.shard = np.concatenate(numbers) if numbers else np.empty(0, np.int32)
        self.video_ids = np.array(ids, dtype=object)

    def _read(self, shard_path):
        path = index_path(shard_path)
        files = self.files
        if not files.exists(path):
            raise IndexMismatchError(f"{shard_path} has no index beside it; preprocess again "
                                     "to write one, or read the shards whole")
        header = files.read(path, 0, _HEADER.size)
        magic, size, print_, count, ids_bytes = _HEADER.unpack(header)
        if magic != MAGIC:
            raise IndexMismatchError(f"{path} is not an index of this version; preprocess again "
                              "with --overwrite, or delete the .index files to read the "
                              "shards whole")
        actual = files.size(shard_path)
        span = min(_FINGERPRINT_SPAN, actual)
        if actual != size or fingerprint(actual, files.read(shard_path, 0, span),
                                         files.read(shard_path, actual - span, span)) != print_:
            raise IndexMismatchError(
                f"{path} does not belong to {shard_path} (the shard is {actual} bytes, the "
                f"index was written for {size}, or their contents differ): the shard was "
                "truncated, replaced or written by another job; copy both again, or delete "
                "the .index files to read the shards whole")
        table = np.frombuffer(files.read(path, _HEADER.size, count * RECORD.itemsize), RECORD)
        raw = files.read(path, _HEADER.size + table.nbytes, ids_bytes)
        lengths = struct.unpack_from(f"<{count}H", raw)
        ids, at = [], 2 * count
        for length in lengths:
            ids.append(raw[at:at + length].decode("utf-8"))
            at += length
        return table, ids

    def frames(self, shard, frames_at, indices):
        """`read_frames` as a TensorFlow op: a string tensor of the shape of `indices`.

        A Python function inside the graph (`tf.numpy_function`): tf.data
        runs it on its map threads, and it holds the GIL only between reads.
        """
        import tensorflow as tf
        jpegs = tf.numpy_function(self.read_frames, [shard, frames_at, indices], tf.string,
                                  stateful=False)
        return tf.ensure_shape(jpegs, indices.shape)

    def read_frames(self, shard, frames_at, indices):
        """The JPEG bytes of frames `indices` of one record, checked against their CRCs.

        Args:
            shard: the record's shard number.
            frames_at: where its frame table lies in the shard's index.
            indices: int array `[n]` or `[clips, n]`, each row ascending.

        Returns:
            An object array of bytes, of the shape of `indices`.
        """
        shard_path = self.shards[int(shard)]
        rows = np.atleast_2d(indices)
        out = np.empty(rows.shape, dtype=object)
        for r, row in enumerate(rows.tolist()):
            first, last = min(row), max(row)
            table = np.frombuffer(self.files.read(index_path(shard_path),
                                                  int(frames_at) + first * FRAME.itemsize,
                                                  (last - first + 1) * FRAME.itemsize), FRAME)
            # Plain lists: indexing numpy records one by one costs more than the read.
            offsets, lengths, crcs = (table[key].tolist() for key in ("offset", "length", "crc"))
            start = offsets[0]
            data = self.files.read(shard_path, start, offsets[-1] + lengths[-1] - start)
            for c, index in enumerate(row):
                at = offsets[index - first] - start
                jpeg = data[at:at + lengths[index - first]]
                if google_crc32c.value(jpeg) != crcs[index - first]:
                    raise IndexMismatchError(
                        f"frame {index} at byte {offsets[index - first]} of {shard_path} "
                        f"{CORRUPT_FRAME}: the shard is corrupt; copy or preprocess it again, "
                        "or pass --skip_corrupt to skip unreadable records")
                out[r, c] = jpeg
        return out.reshape(np.shape(indices))
