"""Measures the preprocessing job's videos per second, one worker against all cores.

    python scripts/benchmark_preprocess.py [--videos DIR] [--work DIR]

Without --videos it writes the synthetic set (8 classes x --groups x
--clips_per_group clips, 50 frames each; default 960 videos). Runs the Beam
job twice on the DirectRunner, in-memory with one worker and multi-processing
over all cores; the last line is JSON.
"""

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from preprocess import pipeline, synthetic  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", help="a UCF101-layout folder; default: synthetic")
    parser.add_argument("--work", help="scratch folder; default: a temporary one")
    parser.add_argument("--image_size", type=int, default=128,
                        help="short side of the stored frames (default: 128)")
    parser.add_argument("--groups", type=int, default=10,
                        help="synthetic groups per class (default: 10)")
    parser.add_argument("--clips_per_group", type=int, default=12,
                        help="synthetic clips per group (default: 12)")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench-preprocess-")
    videos = args.videos
    if not videos:
        synthetic.write_dataset(os.path.join(work, "videos"), groups=args.groups,
                                clips_per_group=args.clips_per_group)
        videos = os.path.join(work, "videos", "UCF101")
    runs = {
        "single_worker": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        "multi_processing": ["--direct_running_mode=multi_processing",
                             f"--direct_num_workers={os.cpu_count()}"],
    }
    figures = {"cores": os.cpu_count(), "source": videos}
    for name, runner in runs.items():
        out = os.path.join(work, f"records-{name}")
        shutil.rmtree(out, ignore_errors=True)
        started = time.time()
        manifest = pipeline.run(["--source", videos, "--output_dir", out,
                                 "--image_size", str(args.image_size)] + runner)
        seconds = time.time() - started
        count = sum(s["num_videos"] for s in manifest["splits"].values())
        frames = sum(s["num_frames"] for s in manifest["splits"].values())
        figures[name] = {"videos": count, "frames": frames, "seconds": round(seconds, 2),
                         "videos_per_second": round(count / seconds, 2),
                         "frames_per_second": round(frames / seconds, 1)}
        print(f"{name}: {count} videos ({frames} frames) in {seconds:.1f} s = "
              f"{count / seconds:.2f} videos/s, {frames / seconds:.0f} frames/s "
              "(wall time, start-up included)", flush=True)
    figures["speedup"] = round(figures["multi_processing"]["videos_per_second"]
                               / figures["single_worker"]["videos_per_second"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
