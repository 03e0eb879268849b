"""Times `python -m preprocess` against a plain one-process loop on the same videos.

    python scripts/benchmark_preprocess.py [--copies 40] [--rounds 2] [--work DIR]

The videos are the real UCF101 clips in ../shared/data/ucf101, each linked
`--copies` times under UCF101 names (without them: synthetic 320x240 videos
of 220 frames). The plain loop is written here, as a user without Beam would
write it: OpenCV decodes, resizes the short side to 128 and JPEG-encodes
every frame, `tf.train.SequenceExample` serialises each video and one
`TFRecordWriter` writes them. Both run as fresh processes, alternating, so
start-up counts; the job runs with its defaults. Prints each run, the
medians and their ratio; the last line is JSON.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_UCF101 = REPO.parent / "shared" / "data" / "ucf101"


def plain_loop(source, output, image_size=128, quality=90):
    """Decodes every video of a folder into one TFRecord file, in one process."""
    import cv2
    import tensorflow as tf

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if isinstance(value, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    paths = sorted(pathlib.Path(source).glob("*.avi"))
    classes = sorted({p.stem.split("_")[1] for p in paths})
    with tf.io.TFRecordWriter(str(output)) as writer:
        for path in paths:
            capture = cv2.VideoCapture(str(path))
            fps = capture.get(cv2.CAP_PROP_FPS)
            jpegs = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                height, width = frame.shape[:2]
                scale = image_size / min(height, width)
                size = (round(width * scale), round(height * scale))
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                jpegs.append(cv2.imencode(".jpg", frame,
                                          [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
            capture.release()
            name = path.stem.split("_")
            context = tf.train.Features(feature={
                "clip/label/index": feature(classes.index(name[1])),
                "clip/label/text": feature(name[1].encode()),
                "video/id": feature(path.stem.encode()),
                "video/group": feature(int(name[2][1:])),
                "video/clip": feature(int(name[3][1:])),
                "video/num_frames": feature(len(jpegs)),
                "image/height": feature(size[1]),
                "image/width": feature(size[0]),
                "video/fps": feature(float(fps)),
            })
            frames = tf.train.FeatureList(feature=[feature(j) for j in jpegs])
            example = tf.train.SequenceExample(
                context=context,
                feature_lists=tf.train.FeatureLists(feature_list={"image/encoded": frames}))
            writer.write(example.SerializeToString())
    return len(paths)


def make_videos(folder, copies):
    """Links the real clips `copies` times under UCF101 names; synthetic ones without them."""
    folder.mkdir(parents=True, exist_ok=True)
    real = sorted(REAL_UCF101.glob("v_*.avi")) if REAL_UCF101.is_dir() else []
    if not real:
        from preprocess import synthetic
        synthetic.write_dataset(folder.parent / "synthetic", groups=copies, clips_per_group=1,
                                num_frames=220)
        return folder.parent / "synthetic" / "UCF101", "synthetic 320x240, 220 frames"
    for clip in real:
        cls = clip.stem.split("_")[1]
        for copy in range(copies):
            link = folder / f"v_{cls}_g{copy // 7 + 1:02d}_c{copy % 7 + 1:02d}.avi"
            if not link.exists():
                os.symlink(clip, link)
    return folder, f"{len(real)} real UCF101 clips x {copies}"


def timed(command):
    started = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=40,
                        help="links of each real clip (default 40: 120 videos)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="loop and job runs each, alternating (default 2)")
    parser.add_argument("--work", help="scratch folder; default: a temporary one")
    parser.add_argument("--job_args", default="",
                        help="extra flags for the job, e.g. '--direct_num_workers=1'")
    parser.add_argument("--plain_loop", nargs=2, metavar=("SOURCE", "OUTPUT"),
                        help=argparse.SUPPRESS)  # the loop's own process
    args = parser.parse_args(argv)
    if args.plain_loop:
        plain_loop(*args.plain_loop)
        return
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="bench-preprocess-"))
    source, described = make_videos(work / "videos", args.copies)
    loop = [sys.executable, __file__, "--plain_loop", str(source), str(work / "loop.tfrecord")]
    job = [sys.executable, "-m", "preprocess", "--source", str(source), "--output_dir",
           str(work / "records"), "--overwrite", *args.job_args.split()]
    times = {"loop": [], "job": []}
    for round_ in range(args.rounds):
        for name, command in (("loop", loop), ("job", job)):
            times[name].append(timed(command))
            print(f"round {round_ + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    manifest = json.loads((work / "records" / "manifest.json").read_text())
    videos = sum(split["num_videos"] for split in manifest["splits"].values())
    frames = sum(split["num_frames"] for split in manifest["splits"].values())
    loop_s, job_s = statistics.median(times["loop"]), statistics.median(times["job"])
    print(f"{videos} videos, {frames} frames ({described}), {os.cpu_count()} cores: "
          f"plain loop {loop_s:.1f} s, python -m preprocess {job_s:.1f} s, "
          f"job {loop_s / job_s:.2f}x faster (medians of {args.rounds}, whole processes)")
    print(json.dumps({"videos": videos, "frames": frames, "source": described,
                      "cores": os.cpu_count(), "machine": platform.machine(),
                      "job_args": args.job_args, "loop_seconds": times["loop"],
                      "job_seconds": times["job"], "loop_median": round(loop_s, 2),
                      "job_median": round(job_s, 2), "ratio": round(loop_s / job_s, 2)}))


if __name__ == "__main__":
    main()
