"""Times reading a PyTorch checkpoint without PyTorch, and building R(2+1)D-18 from it.

    python scripts/benchmark_weights.py --checkpoint r2plus1d_18-91a641e6.pth

Reads the file `--rounds` times (`model.network.torch_checkpoint.load_state_dict`),
then builds `r2plus1d_18` with `weights=` once, and prints the median read
time, the build time and the file's size; the last line is JSON.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python scripts/benchmark_weights.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="a torchvision r2plus1d_18 checkpoint (.pth)")
    parser.add_argument("--rounds", type=int, default=5, help="reads to time (default: 5)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"no such file: {args.checkpoint}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    from model.network import torch_checkpoint
    from model.network.build import build_model
    reads = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        state = torch_checkpoint.load_state_dict(args.checkpoint)
        reads.append(time.perf_counter() - started)
    values = sum(value.size for value in state.values())
    started = time.perf_counter()
    build_model("r2plus1d_18", 400, 16, 112, weights=args.checkpoint)
    build = time.perf_counter() - started
    figures = {"checkpoint": args.checkpoint, "megabytes": os.path.getsize(args.checkpoint) / 1e6,
               "tensors": len(state), "values": values,
               "read_seconds": statistics.median(reads), "read_timings": reads,
               "build_seconds": build, "cores": os.cpu_count()}
    print(f"read {figures['megabytes']:.1f} MB ({len(state)} tensors, {values:,} values) "
          f"in {figures['read_seconds']:.3f} s (median of {args.rounds}); "
          f"r2plus1d_18 built with these weights in {build:.1f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
