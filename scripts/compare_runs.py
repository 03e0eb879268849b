"""Compares finished runs: one row a run, the settings that differ, and the results.

    python scripts/compare_runs.py runs/
    python scripts/compare_runs.py runs/r18 runs/r18_lr01 --format csv > runs.csv

Takes run folders, or folders searched for the run folders below them. The
results are the test split's video accuracy, top-5 and mean class
accuracy, the epochs, the wall time of all the run's launches (a resumed run
adds up) and the training clips per second. Runs still training (no
metrics.json yet) are named on stderr and left out. Reads JSON files only: no
TensorFlow, so it answers at once.
"""

import sys

from model.training import experiments
from preprocess import errors


def build_parser():
    parser = errors.ArgumentParser(prog="python scripts/compare_runs.py",
                                   description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("runs", nargs="+", metavar="RUN_OR_PARENT",
        help="run folders written by train.py, or folders that hold them")
    add("--format", choices=("markdown", "csv"), default="markdown",
        help="a Markdown table to read, or CSV with the numbers as recorded "
             "(default: markdown)")
    return parser


def main(argv=None):
    return errors.run_command(compare, sys.argv[1:] if argv is None else argv)


def compare(argv):
    args = build_parser().parse_args(argv)
    finished, unfinished = experiments.find_runs(args.runs)
    if unfinished:
        print(f"compare_runs: leaving out {len(unfinished)} unfinished run(s), without "
              f"metrics.json yet: {', '.join(unfinished)}", file=sys.stderr)
    if not finished:
        raise experiments.CompareError(f"no finished runs in {', '.join(args.runs)}: none "
                                       "has its metrics.json yet")
    runs = [experiments.read_run(folder) for folder in finished]
    sys.stdout.write(experiments.comparison_table(runs, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
