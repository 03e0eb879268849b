"""scripts/benchmark_input.py: it runs end to end on a records folder and reports each figure."""

import json

import numpy as np
import pytest

from preprocess import synthetic, video
from records import write_records
from two_class_run import script


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Three short videos in UCF101's layout, and their records, whose source they are:
    the tutorial's generator, timed last, reads the videos themselves."""
    root = tmp_path_factory.mktemp("benchmark_input")
    source = root / "UCF101"
    source.mkdir()
    rng = np.random.default_rng(0)
    videos = []
    for video_id, class_name in (("v_Grow_g01_c01", "Grow"), ("v_Grow_g02_c01", "Grow"),
                                 ("v_Shrink_g01_c01", "Shrink")):
        path = source / f"{video_id}.avi"
        synthetic.write_video(path, synthetic.render_clip(class_name, rng, num_frames=12,
                                                          height=120, width=160))
        jpegs, _, _, fps = video.encode_video(path, resize="short_side", image_size=48)
        videos.append(dict(video_id=video_id, class_name=class_name, frames=jpegs, fps=fps))
    return write_records(root / "records", videos, num_shards=2, source=source,
                         image_size=48)


def test_input_benchmark_reports_all_three_figures(records, capsys):
    # Figures are printed for people to read, not asserted: this only checks
    # that the script runs end to end on these records and reports each one.
    script("benchmark_input").main([
        "--records", str(records), "--split", "all", "--num_frames", "4", "--frame_step", "2",
        "--image_size", "32", "--batch_size", "2", "--samples_per_video", "2",
        "--seconds", "0.1", "--warmup", "0.05", "--rounds", "2"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["reader"] > 0 and figures["decode_limit"] > 0 and figures["generator"] > 0
    assert len(figures["reader_timings"]) == len(figures["decode_limit_timings"]) == 2
    assert figures["reader_over_limit"] == pytest.approx(
        figures["reader"] / figures["decode_limit"], rel=1e-2)
    assert figures["records"] == str(records)
