"""Inference: a trained model's evaluation, predictions, timelines and exports.

`evaluation` scores a split with several clips per video, `predictor`
predicts files and folders, `timeline` predicts long videos window by
window, `export` writes the models a run hands on, and `cli` is the
command-line plumbing of `scripts/predict.py` and `scripts/evaluate.py`.
Importing this package is light.
"""
