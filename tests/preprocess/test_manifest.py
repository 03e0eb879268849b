"""The manifest's checks of a request: splits, their fallbacks, shards per worker, frame sizes."""

import pytest

from preprocess import manifest as manifest_lib
from preprocess.manifest import ManifestError, RequestError, check_request, pick_split


def _manifest(val=4, test=8, train_shards=2, frame_sizes=((54, 72),)):
    """A manifest as `read_manifest` returns it, of the splits and frames asked."""
    def split(name, videos, shards=1):
        return {"num_videos": videos, "shards": [f"{name}/{name}-{i:05d}.tfrecord"
                                                 for i in range(shards)]}
    splits = {"train": split("train", 56, train_shards)}
    if val is not None:
        splits["val"] = split("val", val)
    if test is not None:
        splits["test"] = split("test", test)
    return {"classes": ["Grow", "SlideRight"], "splits": splits,
            "geometry": {"frame_sizes": [list(size) for size in frame_sizes]}}


def _request(**changes):
    return {"records": "records", "train_split": "train", "val_split": "val",
            "test_split": "test", "eval_checkpoint": "last", "image_size": 48, **changes}


def test_a_fitting_request_gets_its_splits():
    assert check_request(_manifest(), _request()) == ("val", "test")
    assert check_request(_manifest(), _request(), num_workers=2) == ("val", "test")


@pytest.mark.parametrize("manifest, expected", [
    (_manifest(val=None), ("test", "test")),  # no val: validate on test
    (_manifest(val=0), ("test", "test")),     # an empty split counts as none
    (_manifest(test=None), ("val", "val")),   # no test: evaluate on val
])
def test_a_missing_split_falls_back_to_the_other(manifest, expected):
    assert check_request(manifest, _request()) == expected


def test_pick_split():
    splits = _manifest(val=0)["splits"]
    assert pick_split(splits, "val", "test") == "test"
    assert pick_split(splits, "test", "val") == "test"
    assert pick_split(splits, "holdout", "val") is None


@pytest.mark.parametrize("manifest, request_changes, workers, fragment", [
    (_manifest(), dict(train_split="holdout"), None, "no split 'holdout' in records"),
    (_manifest(val=None, test=None), {}, None,
     "records has no test or val split with videos to evaluate on"),
    (_manifest(), dict(image_size=64), None,
     "--image_size 64 is larger than the 54-pixel frames in records; lower it, or "
     "preprocess with a larger --image_size"),
    (_manifest(), dict(eval_checkpoint="best", val_split="test"), None,
     "--eval_checkpoint best needs a validation split apart from the test split"),
    (_manifest(val=None), dict(eval_checkpoint="best"), None,
     "--eval_checkpoint best needs a validation split"),
    (_manifest(train_shards=2), {}, 3, "has 2 shard(s) for 3 workers"),
])
def test_a_request_the_records_cannot_serve_names_the_fix(manifest, request_changes, workers,
                                                          fragment):
    with pytest.raises(ManifestError) as raised:
        check_request(manifest, _request(**request_changes), num_workers=workers)
    assert fragment in str(raised.value)


def test_frame_size_is_checked_against_the_smallest_frames_in_the_callers_words():
    manifest = _manifest(frame_sizes=((54, 72), (60, 80)))
    manifest_lib.check_frame_size(manifest, "records", 54, "unused", "unused")
    with pytest.raises(RequestError, match=r"^clips of 55 need 55 > 54 in records; fix 55$"):
        manifest_lib.check_frame_size(manifest, "records", 55,
                                      "clips of {size} need {size} > {smallest} in {records}",
                                      "fix {size}")
