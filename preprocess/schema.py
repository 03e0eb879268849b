"""The record schema: the one place that says how a video becomes a TFRecord and back.

Every video is one `tf.train.SequenceExample`. The keys follow TF Model Garden's
video readers (`image/encoded` as a feature list of JPEG frames,
`clip/label/index` and `clip/label/text` in the context), so its readers can
consume our records too. The Beam writer (`preprocess.pipeline`) and the tf.data
reader (`preprocess.reader`) both import this module; neither declares a key.
Writing needs no TensorFlow; parsing imports it when first called.
"""

import struct

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

# The type of every context feature; the reader builds its parse spec from it.
CONTEXT_TYPES = {LABEL_INDEX: "int64", LABEL_TEXT: "string", VIDEO_ID: "string",
                 VIDEO_GROUP: "int64", VIDEO_CLIP: "int64", NUM_FRAMES: "int64",
                 HEIGHT: "int64", WIDTH: "int64", FPS: "float32"}


# The writer speaks protobuf's wire format itself, so that the preprocessing
# job, which only writes, need not import TensorFlow in every worker. Field
# numbers are those of tensorflow/core/example/{example,feature}.proto:
# SequenceExample{context=1, feature_lists=2}; Features{map feature=1};
# FeatureLists{map feature_list=1}; FeatureList{repeated feature=1};
# Feature{bytes_list=1, float_list=2, int64_list=3}; *List{repeated value=1}.

def _varint(value):
    value &= (1 << 64) - 1  # negative int64s take ten bytes, two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number, payload):
    """A length-delimited field: tag, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(*values):
    return _field(1, b"".join(_field(1, v.encode("utf-8") if isinstance(v, str) else v)
                              for v in values))


def _float_feature(value):
    return _field(2, _field(1, struct.pack("<f", value)))


def _int64_feature(value):
    return _field(3, _field(1, _varint(int(value))))


def _map(features):
    """A protobuf map<string, message> field, number 1."""
    return b"".join(_field(1, _field(1, key.encode("utf-8")) + _field(2, value))
                    for key, value in features.items())


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
    context = _map({
        LABEL_INDEX: _int64_feature(label),
        LABEL_TEXT: _bytes_feature(label_text),
        VIDEO_ID: _bytes_feature(video_id),
        VIDEO_GROUP: _int64_feature(group),
        VIDEO_CLIP: _int64_feature(clip),
        NUM_FRAMES: _int64_feature(len(jpeg_frames)),
        HEIGHT: _int64_feature(height),
        WIDTH: _int64_feature(width),
        FPS: _float_feature(fps),
    })
    frames = b"".join(_field(1, _bytes_feature(jpeg)) for jpeg in jpeg_frames)
    return _field(1, context) + _field(2, _map({IMAGE_ENCODED: frames}))


def parse_video_example(serialized, context_keys=None):
    """Parses one serialised record into a dict of tensors; works in `Dataset.map`.

    Returns the context features `context_keys` (default: all) under their
    keys, plus `IMAGE_ENCODED`: a string tensor `[num_frames]` of still-encoded
    JPEG frames, so that a reader decodes only the frames it needs. Parsing
    fewer keys is cheaper, which a reader pays for on every clip.
    """
    import tensorflow as tf
    keys = CONTEXT_TYPES if context_keys is None else context_keys
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={key: tf.io.FixedLenFeature([], tf.dtypes.as_dtype(CONTEXT_TYPES[key]))
                          for key in keys},
        sequence_features={IMAGE_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string)})
    return {**context, IMAGE_ENCODED: sequence[IMAGE_ENCODED]}


# Reading back what `encode_video_example` wrote, without TensorFlow: the
# index of a shard (`preprocess.index`) records where each frame's JPEG lies.

def _read_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data, start=0, end=None):
    """`(number, start, end)` of each length-delimited field of a message."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag & 7 != 2:
            raise ValueError(f"field {tag >> 3} is not length-delimited; not a record of ours")
        length, pos = _read_varint(data, pos)
        yield tag >> 3, pos, pos + length
        pos += length


def _only(data, start, end, number):
    """The span of the one field `number` inside `data[start:end]`."""
    for field, a, b in _fields(data, start, end):
        if field == number:
            return a, b
    raise ValueError(f"field {number} missing; not a record of ours")


def describe_video_example(serialized):
    """The context values and the JPEG spans of one record that `encode_video_example` wrote.

    Returns:
        `(context, spans)`: the context features by key (ints, floats and
        strings), and `(start, length)` of each frame's JPEG bytes within
        `serialized`, in frame order.
    """
    data = memoryview(serialized)
    context, spans = {}, []
    for number, start, end in _fields(data):
        for _, entry_start, entry_end in _fields(data, start, end):  # map entries
            key = bytes(data[slice(*_only(data, entry_start, entry_end, 1))]).decode()
            value = _only(data, entry_start, entry_end, 2)
            if number == 1 and key in CONTEXT_TYPES:
                kind, a, b = next(_fields(data, *value))  # the Feature's one list
                payload = _only(data, a, b, 1)
                if kind == 1:
                    context[key] = bytes(data[slice(*payload)]).decode()
                elif kind == 2:
                    context[key] = struct.unpack("<f", data[slice(*payload)])[0]
                else:
                    number_value = _read_varint(data, payload[0])[0]
                    context[key] = number_value - (1 << 64) if number_value >> 63 else number_value
            elif number == 2 and key == IMAGE_ENCODED:
                for _, a, b in _fields(data, *value):  # one Feature per frame
                    bytes_list = _only(data, a, b, 1)
                    jpeg = _only(data, *bytes_list, 1)
                    spans.append((jpeg[0], jpeg[1] - jpeg[0]))
    return context, spans
