"""The record schema: encode then parse gives back frames and metadata, eagerly and in tf.data."""

import numpy as np
import tensorflow as tf

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
