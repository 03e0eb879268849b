"""Test helpers: write a records folder directly, and read it, its frames and videos back.

`write_records` is the one place tests write records: it frames
`preprocess.schema` examples into shards as `preprocess.shards` does, indexes
them as `preprocess.index` does, and writes the manifest the reader and
trainer read, with no Beam job. A new record or manifest field is added here
once.
"""

import collections
import os
import pathlib

import cv2
import numpy as np
import tensorflow as tf

from preprocess import __version__
from preprocess import index as index_lib
from preprocess import manifest as manifest_lib
from preprocess import layouts, schema, shards, video

# The manifest's `created` of every test folder: fixed, so that equal videos give equal bytes.
CREATED = "2000-01-01T00:00:00+00:00"


# A corrupt video's bytes. Fixed, not random: some random bytes open as an H.263 stream
# of zero frames, which changes the error a test expects.
NOT_A_VIDEO = b"this is not a video\n" * 2500


def write_records(folder, videos, *, classes=None, num_shards=1, source="test videos",
                  layout="ucf101", split_spec=None, resize="short_side", image_size=None,
                  jpeg_quality=90, fps=None, max_frames=1800, options=None, index=True):
    """Writes `videos` as `python -m preprocess` lays out a records folder; returns it.

    Args:
        folder: the records folder to create.
        videos: dicts, one a video, in record order: `video_id`, `class_name`
            and `frames` (uint8 `[N, H, W, 3]` RGB, JPEG-encoded here at
            `jpeg_quality`, or a list of JPEG bytes as `preprocess.video`
            encodes them); optional `split` (default `all`), `label` (default
            the class's index in `classes`), `group` and `clip` (default
            UCF101's `gNN`/`cNN` of the id, else -1) and `fps` (default 25).
        classes: class names in label order; defaults to the sorted names.
        num_shards: shards per split (fewer when a split has fewer videos).
        source, layout, split_spec: what the manifest says the videos came from.
        resize, image_size, jpeg_quality, fps, max_frames: the frame options
            the manifest records, which inference repeats on new videos.
            `image_size` defaults to the smallest frame side.
        options: other flags of the job to record in the manifest's
            `options`, e.g. `{"per_class": "train=28,val=4,test=8"}`.
        index: write each shard's index beside it (`preprocess.index`), as the
            job does; False leaves the shards alone, as records written before
            indexes were.

    Returns:
        `folder`, holding `<split>/<split>-SSSSS-of-NNNNN.tfrecord` and `manifest.json`.
    """
    folder = str(folder)
    classes = list(classes or sorted({v["class_name"] for v in videos}))
    by_split = collections.defaultdict(list)
    frame_sizes = set()
    for entry in videos:
        jpegs, height, width = _jpegs(entry["frames"], jpeg_quality)
        frame_sizes.add((height, width))
        group, clip = _group_and_clip(entry)
        example = schema.encode_video_example(
            jpegs, label=entry.get("label", classes.index(entry["class_name"])),
            label_text=entry["class_name"], video_id=entry["video_id"], group=group,
            clip=clip, height=height, width=width, fps=float(entry.get("fps", 25.0)))
        by_split[entry.get("split", "all")].append(
            (entry["class_name"], len(jpegs), shards.tfrecord(example)))
    splits = {split: _write_split(folder, split, records, classes, num_shards, index)
              for split, records in sorted(by_split.items())}
    image_size = image_size or min(min(size) for size in frame_sizes)
    manifest_lib.write_manifest(folder, {
        "schema_version": schema.SCHEMA_VERSION,
        "package_version": __version__,
        "created": CREATED,
        "source": str(source),
        "layout": layout,
        "split_spec": split_spec or {"kind": "all"},
        "classes": classes,
        "splits": splits,
        "encoding": {"format": "jpeg", "quality": jpeg_quality, "color": "rgb",
                     "keys": {"frames": schema.IMAGE_ENCODED, "label": schema.LABEL_INDEX,
                              "label_text": schema.LABEL_TEXT}},
        "geometry": {"resize": resize, "image_size": image_size,
                     "frame_sizes": sorted([list(size) for size in frame_sizes])},
        "fps": fps,
        "max_frames": max_frames,
        "failures": manifest_lib.FAILURES_NAME,
        "num_ignored_files": 0,
        "seconds": 0.0,
        "options": {"source": str(source), "layout": layout, "annotations": None,
                    "output_dir": folder, "overwrite": False, "split_lists": None,
                    "split_index": 1, "per_class": None, "split_fractions": None,
                    "class_names": None, "num_classes": None, "classes": None, "seed": 0,
                    "fps": fps, "max_frames": max_frames, "resize": resize,
                    "image_size": image_size, "jpeg_quality": jpeg_quality,
                    "num_shards": num_shards, **(options or {})},
    })
    return pathlib.Path(folder)


def _jpegs(frames, quality):
    """`(JPEG bytes of each frame, height, width)` of uint8 frames or of JPEGs."""
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"frames must be uint8 [N, H, W, 3], not {frames.dtype} "
                             f"{frames.shape}")
        return ([video.encode_jpeg(frame, quality) for frame in frames],
                *frames.shape[1:3])
    jpegs = [bytes(jpeg) for jpeg in frames]
    height, width = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return jpegs, height, width


def _group_and_clip(entry):
    parsed = layouts.parse_ucf101_name(entry["video_id"])
    return (entry.get("group", parsed[1] if parsed else -1),
            entry.get("clip", parsed[2] if parsed else -1))


def _write_split(folder, split, records, classes, num_shards, index):
    """Writes a split's framed records as contiguous shards (and their indexes); returns its
    manifest entry."""
    count = max(1, min(num_shards, len(records)))
    cuts = [len(records) * shard // count for shard in range(count + 1)]
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    names, sizes = [], []
    for shard in range(count):
        name = f"{split}/{split}-{shard:05d}-of-{count:05d}{manifest_lib.RECORD_SUFFIX}"
        chosen = [framed for _, _, framed in records[cuts[shard]:cuts[shard + 1]]]
        data = b"".join(chosen)
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
        if index:
            writer = index_lib.IndexWriter(lambda path: open(path, "wb"),
                                           os.path.join(folder, name))
            for framed in chosen:
                writer.add(framed)
            writer.close()
        names.append(name)
        sizes.append(len(data))
    per_class = collections.Counter(class_name for class_name, _, _ in records)
    return {"num_videos": len(records), "num_failed": 0, "num_selected": len(records),
            "num_frames": sum(frames for _, frames, _ in records),
            "per_class": {name: per_class[name] for name in classes},
            "shards": names,
            "shard_records": [cuts[shard + 1] - cuts[shard] for shard in range(count)],
            "shard_bytes": sizes}


def decode_frames(encoded_frames, indices):
    """JPEG-decodes the frames at `indices` into uint8 `[len(indices), H, W, 3]`."""
    chosen = tf.gather(encoded_frames, indices)
    return tf.map_fn(lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3), chosen,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def decode_video(path, *, fps=None, max_frames=None):
    """Decodes a whole video: `(uint8 RGB [num_frames, H, W, 3], stored fps)`."""
    with video.VideoFile(path) as opened:
        frames = np.stack(list(opened.frames(fps=fps, max_frames=max_frames)))
        return frames, opened.stored_fps(fps)


def read_split(records_dir, split):
    """Parses every record of a split; returns a list of dicts of numpy values."""
    manifest = manifest_lib.read_manifest(str(records_dir))
    paths = manifest_lib.shard_paths(str(records_dir), manifest, split)
    videos = []
    for serialized in tf.data.TFRecordDataset(paths):
        parsed = schema.parse_video_example(serialized)
        first = decode_frames(parsed[schema.IMAGE_ENCODED], [0])
        videos.append({
            "video_id": parsed[schema.VIDEO_ID].numpy().decode(),
            "label": int(parsed[schema.LABEL_INDEX]),
            "label_text": parsed[schema.LABEL_TEXT].numpy().decode(),
            "group": int(parsed[schema.VIDEO_GROUP]),
            "clip": int(parsed[schema.VIDEO_CLIP]),
            "num_frames": int(parsed[schema.NUM_FRAMES]),
            "stored_frames": int(tf.shape(parsed[schema.IMAGE_ENCODED])[0]),
            "height": int(parsed[schema.HEIGHT]),
            "width": int(parsed[schema.WIDTH]),
            "fps": float(parsed[schema.FPS]),
            "first_frame_shape": tuple(first.shape[1:]),
        })
    return videos


def shard_files(records_dir, split):
    """The split's shard file names (their indexes beside them left out)."""
    return sorted(name for name in os.listdir(os.path.join(records_dir, split))
                  if name.endswith(".tfrecord"))


def corrupt_frames(records_dir, split, *, indexed=True):
    """Flips the middle half of the split's first shard's bytes; returns the shard's path.

    The size stays, so only the CRCs tell: the index's per frame, or the
    record's. `indexed=False` also removes every index, as records written
    before indexes were.
    """
    shard = pathlib.Path(records_dir, split, shard_files(records_dir, split)[0])
    if not indexed:
        for index in pathlib.Path(records_dir).glob(f"*/*{index_lib.SUFFIX}"):
            index.unlink()
    data = bytearray(shard.read_bytes())
    middle = slice(len(data) // 4, 3 * len(data) // 4)
    data[middle] = bytes(b ^ 0xFF for b in data[middle])
    shard.write_bytes(bytes(data))
    return shard
