"""The record schema: the one place that says how a video becomes a TFRecord and back.

Every video is one `tf.train.SequenceExample`. The keys follow TF Model Garden's
video readers (`image/encoded` as a feature list of JPEG frames,
`clip/label/index` and `clip/label/text` in the context), so its readers can
consume our records too. The Beam writer (`preprocess.pipeline`) and the tf.data
reader (`preprocess.reader`) both import this module; neither declares a key.
"""

import tensorflow as tf

# Bump when a record written by an older version can no longer be read.
SCHEMA_VERSION = 1

# Feature list: one JPEG-encoded RGB frame per step, in temporal order.
IMAGE_ENCODED = "image/encoded"
# Context features.
LABEL_INDEX = "clip/label/index"
LABEL_TEXT = "clip/label/text"
VIDEO_ID = "video/id"
VIDEO_GROUP = "video/group"
VIDEO_CLIP = "video/clip"
NUM_FRAMES = "video/num_frames"
HEIGHT = "image/height"
WIDTH = "image/width"
FPS = "video/fps"

CONTEXT_FEATURES = {
        LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
        LABEL_TEXT: tf.io.FixedLenFeature([], tf.string),
        VIDEO_ID: tf.io.FixedLenFeature([], tf.string),
        VIDEO_GROUP: tf.io.FixedLenFeature([], tf.int64),
        VIDEO_CLIP: tf.io.FixedLenFeature([], tf.int64),
        NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        FPS: tf.io.FixedLenFeature([], tf.float32),
}
SEQUENCE_FEATURES = {
        IMAGE_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string),
}


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes(value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _float(value):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def encode_video_example(jpeg_frames, *, label, label_text, video_id, group,
                                                  clip, height, width, fps):
    """Serialises one video's JPEG frames and metadata as a SequenceExample.

    Args:
        jpeg_frames: sequence of JPEG bytes, one per frame, in temporal order.
        label: integer class index (the manifest's class order).
        label_text: class name.
        video_id: the video's name without extension, e.g.
            `v_ApplyEyeMakeup_g01_c01`.
        group: the group (UCF101's `gNN`, an annotation's group), or -1.
        clip: clip number within the group (UCF101's `cNN`), or -1.
        height: frame height in pixels.
        width: frame width in pixels.
        fps: frame rate of the stored frames.

    Returns:
        The serialised `tf.train.SequenceExample` as bytes.
    """
    context = tf.train.Features(feature={
        LABEL_INDEX: _int64(label),
        LABEL_TEXT: _bytes(label_text),
        VIDEO_ID: _bytes(video_id),
        VIDEO_GROUP: _int64(group),
        VIDEO_CLIP: _int64(clip),
        NUM_FRAMES: _int64(len(jpeg_frames)),
        HEIGHT: _int64(height),
        WIDTH: _int64(width),
        FPS: _float(fps),
    })
    frames = tf.train.FeatureList(feature=[
        tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg]))
        for jpeg in jpeg_frames
    ])
    example = tf.train.SequenceExample(
        context=context,
        feature_lists=tf.train.FeatureLists(feature_list={IMAGE_ENCODED: frames}))
    return example.SerializeToString()


def parse_video_example(serialized):
    """Parses one serialised record into a dict of tensors; works in `Dataset.map`.

    Returns every context feature under its key, plus `IMAGE_ENCODED`: a string
    tensor `[num_frames]` of still-encoded JPEG frames, so that a reader decodes
    only the frames it needs.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features=CONTEXT_FEATURES,
        sequence_features=SEQUENCE_FEATURES)
    return {**context, IMAGE_ENCODED: sequence[IMAGE_ENCODED]}
