"""Test helpers: read a records folder, its frames and whole videos back for assertions."""

import os

import numpy as np
import tensorflow as tf

from preprocess import manifest as manifest_lib
from preprocess import schema, video


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
    return sorted(os.listdir(os.path.join(records_dir, split)))
