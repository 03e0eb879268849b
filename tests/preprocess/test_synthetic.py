"""The synthetic action set: XviD files in UCF101's layout whose classes differ only in motion."""

import numpy as np
import pytest

from preprocess import layouts, synthetic
from records import decode_video


def test_synthetic_video_is_xvid_320x240_25fps(tmp_path):
    import cv2
    frames = synthetic.render_clip("SlideLeft", np.random.default_rng(0), num_frames=12)
    path = tmp_path / "v_SlideLeft_g01_c01.avi"
    synthetic.write_video(path, frames)
    capture = cv2.VideoCapture(str(path))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    capture.release()
    decoded, fps = decode_video(path)
    assert fourcc.upper() in ("XVID", "FMP4", "DIVX", "MP4V")
    assert decoded.shape == (12, 240, 320, 3) and fps == 25


@pytest.mark.parametrize("forward,backward", [
    ("SlideLeft", "SlideRight"), ("SlideUp", "SlideDown"),
    ("TurnClockwise", "TurnCounterclockwise"), ("Grow", "Shrink"),
])
def test_synthetic_classes_differ_only_in_motion(forward, backward):
    # With the same scene, each class is its partner played backwards: every
    # frame of one is a frame of the other, so only the motion tells them apart.
    one = synthetic.render_clip(forward, np.random.default_rng(2), num_frames=9)
    other = synthetic.render_clip(backward, np.random.default_rng(2), num_frames=9)
    assert np.abs(one.astype(int) - other[::-1]).mean() < 0.5
    assert np.abs(one.astype(int) - other).mean() > 1


def test_a_dataset_is_every_class_group_and_clip_in_ucf101_names(tmp_path):
    paths = synthetic.write_dataset(tmp_path, classes=("Grow", "SlideUp"), groups=2,
                                    clips_per_group=2, num_frames=2)
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == [f"v_{c}_g0{g}_c0{k}.avi" for c in ("Grow", "SlideUp") for g in (1, 2)
                     for k in (1, 2)]
    assert all(p.startswith(str(tmp_path / "UCF101")) for p in paths)
    assert layouts.parse_ucf101_name("v_SlideUp_g02_c01") == ("SlideUp", 2, 1)

    def scene(video_id):
        """A corner of the first frame, far from the shape, without its clip's lighting."""
        corner = decode_video(tmp_path / "UCF101" / f"{video_id}.avi")[0][0, :40, :40]
        return corner.astype(float) - corner.mean(axis=(0, 1))

    def differ(a, b):
        return np.abs(scene(a) - scene(b)).mean()

    # A group shares its scene across classes and clips, under each clip's own lighting.
    same_group = [differ("v_Grow_g01_c01", "v_SlideUp_g01_c01"),
                  differ("v_Grow_g01_c01", "v_Grow_g01_c02")]
    other_group = differ("v_Grow_g01_c01", "v_Grow_g02_c01")
    assert max(same_group) < 2 < 5 < other_group, (same_group, other_group)


def test_an_unknown_class_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown synthetic class 'Jump'; choose from SlideLeft"):
        synthetic.render_clip("Jump", np.random.default_rng(0), num_frames=2)


def test_the_command_writes_the_set(tmp_path, capsys):
    synthetic.main(["--output_dir", str(tmp_path), "--groups", "1", "--clips_per_group", "1",
                    "--num_frames", "2"])
    assert len(list((tmp_path / "UCF101").glob("*.avi"))) == len(synthetic.MOTION_CLASSES)
    assert "synthetic: wrote 8 videos of 8 classes" in capsys.readouterr().out
