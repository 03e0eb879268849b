"""The predictor: videos in order with their failures named, clips batched across videos,
a decoder that reads ahead, and rows written as JSON lines or CSV."""

import io
import json

import numpy as np
import pytest

from model.inference.predictor import (PROBABILITY_DECIMALS, ClipBatches, Prediction, Predictor,
                                       RowWriter, read_ahead)
from preprocess import synthetic
from two_class_run import BRIGHTNESS_CONFIG, brightness_run


def test_clip_batches_hand_back_each_item_in_order_with_its_clips_mean():
    calls = []

    def probabilities(clips):  # stands in for a model: each clip's values are its scores
        calls.append(len(clips))
        return clips.astype(np.float64)

    batches = ClipBatches(probabilities, batch_size=4)
    sizes = [3, 0, 5, 1, 2]  # 0: a video that failed
    done = []
    for n, size in enumerate(sizes):
        clips = np.array([[n, k] for k in range(size)]) if size else None
        done += batches.add(Prediction(n), clips)
    done += batches.flush()
    assert calls == [4, 4, 3]
    assert [p.item for p in done] == [0, 1, 2, 3, 4]
    assert [p.clips for p in done] == sizes
    assert done[1].probabilities is None
    for n, size in enumerate(sizes):
        if size:
            np.testing.assert_allclose(done[n].probabilities, [n, (size - 1) / 2])


def test_videos_come_back_in_order_each_scored_or_with_its_failure(tmp_path):
    predictor = Predictor(brightness_run(tmp_path / "run"))
    assert predictor.class_names == ["Dark", "Light"]
    paths = []
    for name, level in (("dark", 30), ("light", 220), ("grey", 90)):
        paths.append(tmp_path / f"{name}.avi")
        synthetic.write_video(paths[-1], np.full((20, 120, 160, 3), level, np.uint8))
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"not a video" * 100)
    asked = [paths[0], corrupt, paths[1], tmp_path / "gone.avi", paths[2]]
    done = list(predictor.predict_videos([str(p) for p in asked], batch_size=3, workers=2))
    assert [p.item for p in done] == [str(p) for p in asked]
    assert [p.error for p in done] == [None, "OpenCV cannot open it as a video", None,
                                       "no such file", None]
    clips = BRIGHTNESS_CONFIG["eval_clips"] * BRIGHTNESS_CONFIG["eval_crops"]
    assert [p.clips for p in done] == [clips, 0, clips, 0, clips]
    assert [predictor.top(p.probabilities, 1)[0][0] for p in done if p.error is None] == [
        "Dark", "Light", "Dark"]
    # Each is a row: a failed one with its error and no classes.
    rows = [predictor.row(p, top=1) for p in done]
    assert [row["error"] for row in rows] == [p.error for p in done]
    assert rows[1] == {"path": str(corrupt), "top": [], "clips": 0,
                       "seconds": rows[1]["seconds"], "error": "OpenCV cannot open it as a video"}
    assert rows[2]["top"] == predictor.top(done[2].probabilities, 1) and rows[2]["clips"] == clips
    # One video alone scores as it did among the others.
    alone = dict(predictor.predict(str(paths[2])))
    np.testing.assert_allclose([alone["Dark"], alone["Light"]], done[4].probabilities)


def test_read_ahead_keeps_the_order_and_raises_the_producers_error():
    assert list(read_ahead(iter(range(50)), 3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("the decoder broke")

    got = []
    with pytest.raises(ValueError, match="the decoder broke"):
        for item in read_ahead(failing(), 2):
            got.append(item)
    assert got == [1]


def test_rows_are_json_lines_or_csv_with_a_column_pair_per_rank():
    row = {"path": "a.avi", "top": [("Grow", 0.75), ("Shrink", 0.25)], "clips": 2}
    stream = io.StringIO()
    RowWriter(stream, "jsonl", ("path", "top", "clips"), top=2).write(row)
    assert json.loads(stream.getvalue()) == {
        "path": "a.avi", "clips": 2, "top": [{"class": "Grow", "probability": 0.75},
                                             {"class": "Shrink", "probability": 0.25}]}
    stream = io.StringIO()
    writer = RowWriter(stream, "csv", ("path", "top", "clips"), top=3)
    writer.write(row)
    assert stream.getvalue().splitlines() == [
        "path,class_1,probability_1,class_2,probability_2,class_3,probability_3,clips",
        "a.avi,Grow,0.75,Shrink,0.25,,,2"]


def test_rows_round_probabilities_to_four_decimals_and_leave_none_empty():
    assert PROBABILITY_DECIMALS == 4
    ranking = [("Grow", np.float64(2 / 3)), ("Shrink", 0.33332), ("Rest", 1.5e-5)]
    row = {"path": "a.avi", "top": ranking, "probability": 0.123456789, "error": None}
    fields = ("path", "top", "probability", "error")
    stream = io.StringIO()
    RowWriter(stream, "jsonl", fields, top=3).write(row)
    assert stream.getvalue() == (
        '{"path": "a.avi", "top": [{"class": "Grow", "probability": 0.6667}, '
        '{"class": "Shrink", "probability": 0.3333}, {"class": "Rest", "probability": 0.0}], '
        '"probability": 0.1235, "error": null}\n')
    stream = io.StringIO()
    RowWriter(stream, "csv", fields, top=3).write(row)
    assert stream.getvalue().splitlines()[1] == "a.avi,Grow,0.6667,Shrink,0.3333,Rest,0.0,0.1235,"
    # A failed video's row: its error, no classes.
    stream = io.StringIO()
    RowWriter(stream, "csv", fields, top=2).write(
        {"path": "b.avi", "top": [], "probability": None, "error": "no such file"})
    assert stream.getvalue().splitlines()[1] == "b.avi,,,,,,no such file"
