"""The record schema: encode then parse gives back frames and metadata, eagerly and in tf.data."""


import numpy as np
import tensorflow as tf

from conftest import in_fresh_python
from preprocess import schema, video
from records import decode_frames


def _example(num_frames=6):
    frames = [np.full((16, 24, 3), 10 * i, np.uint8) for i in range(num_frames)]
    jpegs = [video.encode_jpeg(f, quality=95) for f in frames]
    return schema.encode_video_example(
        jpegs, label=3, label_text="Shotput", video_id="v_Shotput_g05_c02",
        group=5, clip=2, height=16, width=24, fps=25.0)


def test_round_trip_eager():
    parsed = schema.parse_video_example(tf.constant(_example()))
    assert int(parsed[schema.LABEL_INDEX]) == 3
    assert parsed[schema.LABEL_TEXT].numpy() == b"Shotput"
    assert parsed[schema.VIDEO_ID].numpy() == b"v_Shotput_g05_c02"
    assert int(parsed[schema.VIDEO_GROUP]) == 5 and int(parsed[schema.VIDEO_CLIP]) == 2
    assert int(parsed[schema.NUM_FRAMES]) == 6
    assert parsed[schema.IMAGE_ENCODED].shape == (6,)
    frames = decode_frames(parsed[schema.IMAGE_ENCODED], [1, 4]).numpy()
    assert frames.shape == (2, 16, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames[:, 0, 0, 0], [10, 40], atol=2)


def test_round_trip_in_dataset_map_matches_eager():
    def decode(serialized):
        parsed = schema.parse_video_example(serialized)
        return decode_frames(parsed[schema.IMAGE_ENCODED], tf.constant([0, 5]))

    dataset = tf.data.Dataset.from_tensors(_example()).map(decode)
    in_graph = next(iter(dataset)).numpy()
    eager = decode(tf.constant(_example())).numpy()
    np.testing.assert_array_equal(in_graph, eager)


def test_model_garden_keys():
    # TF Model Garden's video readers look for these exact keys.
    assert schema.IMAGE_ENCODED == "image/encoded"
    assert schema.LABEL_INDEX == "clip/label/index"
    example = tf.train.SequenceExample.FromString(_example())
    assert set(example.feature_lists.feature_list) == {"image/encoded"}
    assert "clip/label/index" in example.context.feature


def test_the_writer_gives_the_message_tensorflow_builds():
    # The writer speaks protobuf's wire format itself; TensorFlow's own
    # message, built field by field, must be the same message.
    jpegs = [b"\xff\xd8one", b"", b"\xff\xd8" + bytes(range(256)) * 3]
    ours = tf.train.SequenceExample.FromString(schema.encode_video_example(
        jpegs, label=300, label_text="Café crème", video_id="a!b&c", group=-1, clip=-1,
        height=128, width=171, fps=12.5))

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if isinstance(value, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    context = {schema.LABEL_INDEX: 300, schema.LABEL_TEXT: "Café crème".encode(),
               schema.VIDEO_ID: b"a!b&c", schema.VIDEO_GROUP: -1, schema.VIDEO_CLIP: -1,
               schema.NUM_FRAMES: 3, schema.HEIGHT: 128, schema.WIDTH: 171,
               schema.FPS: 12.5}
    theirs = tf.train.SequenceExample(
        context=tf.train.Features(feature={k: feature(v) for k, v in context.items()}),
        feature_lists=tf.train.FeatureLists(feature_list={
            schema.IMAGE_ENCODED: tf.train.FeatureList(feature=[feature(j) for j in jpegs])}))
    assert ours == theirs
    parsed = schema.parse_video_example(theirs.SerializeToString())
    assert int(parsed[schema.VIDEO_GROUP]) == -1
    assert parsed[schema.LABEL_TEXT].numpy().decode() == "Café crème"


def test_writing_needs_no_tensorflow():
    result, loaded = in_fresh_python(
        "from preprocess import pipeline, schema\n"
        "schema.encode_video_example([b'x'], label=0, label_text='a', video_id='v', "
        "group=1, clip=1, height=1, width=1, fps=1.0)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert loaded == []
