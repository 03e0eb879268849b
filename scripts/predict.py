"""Predicts the action in video files with a model that train.py exported.

    python scripts/predict.py --model runs/demo VIDEO [VIDEO ...]

Prints the top-5 classes with their probabilities for each video; the last
line is all predictions as JSON.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python scripts/predict.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run folder written by train.py")
    parser.add_argument("--top", type=int, default=5,
                        help="how many classes to print per video (default: 5)")
    parser.add_argument("videos", nargs="+", help="video files to classify")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be at least 1, not {args.top}")
    missing = [v for v in args.videos if not os.path.isfile(v)]
    if missing:
        print(f"error: no such video file: {', '.join(missing)}", file=sys.stderr)
        return 2

    from model.inference import Predictor
    from preprocess.errors import UserError
    try:
        predictor = Predictor(args.model)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, status = {}, 0
    for path in args.videos:
        try:
            ranking = predictor.predict(path, top=args.top)
        except UserError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            status = 1
            continue
        results[path] = ranking
        print(path)
        for name, probability in ranking:
            print(f"  {probability:7.2%}  {name}")
    print(json.dumps({path: [{"class": n, "probability": round(p, 6)} for n, p in r]
                      for path, r in results.items()}))
    return status


if __name__ == "__main__":
    sys.exit(main())
