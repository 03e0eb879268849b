"""Frame functions: decoding videos, frame-rate skipping, resize policies, JPEG encoding."""

import numpy as np
import pytest

from conftest import REAL_CLIPS
from preprocess import video
from records import decode_video


def test_keep_frame_resamples_without_duplicates():
    kept = [i for i in range(25) if video.keep_frame(i, 25, 10)]
    assert len(kept) == 10 and kept[0] == 0
    assert all(video.keep_frame(i, 25, None) for i in range(5))
    assert all(video.keep_frame(i, 25, 30) for i in range(5))


@pytest.mark.parametrize("policy,size,expected", [
    ("short_side", 128, (128, 171)),
    ("short_side", 112, (112, 149)),
    ("pad", 224, (224, 224)),
])
def test_resized_shape(policy, size, expected):
    assert video.resized_shape(240, 320, policy, size) == expected
    frame = np.zeros((240, 320, 3), np.uint8)
    assert video.resize_frame(frame, policy, size).shape == expected + (3,)


def test_pad_keeps_content_centered_with_black_bars():
    frame = np.full((240, 320, 3), 200, np.uint8)
    padded = video.resize_frame(frame, "pad", 224)
    assert padded[0, 112].max() == 0 and padded[-1, 112].max() == 0  # bars
    assert padded[112, 112].min() == 200


def test_decode_real_clip(real_ucf101_dir):
    frames, fps = decode_video(real_ucf101_dir / "v_Shotput_g05_c02.avi")
    assert frames.shape == (REAL_CLIPS["v_Shotput_g05_c02"][3], 240, 320, 3)
    assert fps == 25.0
    few, fps10 = decode_video(real_ucf101_dir / "v_Shotput_g05_c02.avi",
                                    fps=10, max_frames=20)
    assert few.shape[0] == 20 and fps10 == 10


def test_encoding_skips_conversions_and_dropped_frames_without_changing_a_byte(
        real_ucf101_dir):
    path = real_ucf101_dir / "v_CricketBowling_g05_c02.avi"
    every, _ = decode_video(path)  # RGB, every frame read in full
    kept = [i for i in range(len(every)) if video.keep_frame(i, 25, 10)]
    expected = [video.encode_jpeg(video.resize_frame(every[i], "short_side", 64), 90)
                for i in kept]
    jpegs, height, width, fps = video.encode_video(path, resize="short_side",
                                                   image_size=64, fps=10)
    assert (height, width, fps) == (64, 85, 10)
    assert jpegs == expected


def test_decode_errors(tmp_path):
    empty = tmp_path / "v_X_g01_c01.avi"
    empty.write_bytes(b"")
    text = tmp_path / "v_X_g01_c02.avi"
    text.write_text("not a video at all\n" * 100)
    for path in (empty, text, tmp_path / "missing.avi"):
        with pytest.raises(video.VideoDecodeError):
            decode_video(path)
