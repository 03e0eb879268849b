"""Evaluation of a trained model: multi-clip video accuracy, per-class reports and plots.

Clip scores are softmax probabilities; a video's score is the mean over its
clips (and crops), the usual multi-clip protocol of video classification.
"""

import collections
import csv
import json

import numpy as np

from model import TOP_K_ACCURACY, VAL_ACCURACY, top_k
from model.training.run_dir import write_text, write_whole


def predict_videos(model, dataset, strategy=None):
    """Runs a `(clips, labels, video_ids)` dataset through a model.

    The model is called directly, in inference mode: under `MirroredStrategy`,
    `predict_on_batch` feeds the whole batch to every replica and returns one
    copy of the outputs per replica. With `strategy`, each batch is split over
    its replicas, in order (`model.training.replicas`).

    Returns:
        `(clip_probs, clip_labels, video_ids)` as numpy arrays, in dataset order.
    """
    forward = logits_function(model, strategy)
    probs, labels, ids = [], [], []
    for clips, batch_labels, batch_ids in dataset:
        logits = forward(clips)
        probs.append(softmax(np.asarray(logits, np.float64)))
        labels.append(batch_labels.numpy())
        ids.extend(v.decode() for v in batch_ids.numpy())
    return np.concatenate(probs), np.concatenate(labels), np.array(ids)


def logits_function(model, strategy=None):
    """The model in inference mode, as a graph function from clips to float32 logits.

    The one way evaluation and prediction call a model, so that the two give
    the same numbers for the same clips. With a `strategy` of several
    replicas, each batch is split over them, and their logits joined in order.
    """
    import tensorflow as tf

    from model.training.replicas import PerReplica
    forward = PerReplica(strategy, lambda clips: tf.cast(model(clips, training=False),
                                                         tf.float32))
    replicas = forward.replicas

    def logits(clips):
        # A last batch smaller than the replicas would leave one with no clip,
        # which a BatchNorm in inference cannot take: pad with copies of the
        # last clip, and drop their logits.
        count = int(clips.shape[0])
        short = -count % replicas
        if short:
            clips = tf.concat([clips, tf.repeat(clips[-1:], short, axis=0)], axis=0)
        return tf.concat(forward(clips), axis=0)[:count]

    return logits


def evaluate_split(model, records_dir, split, spec, class_names, *, batch_size,
                   skip_corrupt=False, strategy=None):
    """Multi-clip video evaluation of one split of a records folder.

    Args:
        model: a Keras model from clips to logits.
        records_dir: a folder written by `python -m preprocess`.
        split: which split to evaluate, e.g. `test`.
        spec: the evaluation `ClipSpec` (its clips and crops are the views).
        class_names: the model's classes, in label order.
        batch_size: clips per batch.
        skip_corrupt: skip unreadable records instead of failing. Defaults to False.
        strategy: split each batch over this strategy's replicas. Defaults to
            None: one device.

    Returns:
        `(report, confusion)` of `classification_report`.
    """
    from preprocess import reader
    dataset = reader.make_dataset(records_dir, split, spec, batch_size=batch_size,
                                  with_video_id=True, skip_corrupt=skip_corrupt)
    return classification_report(*predict_videos(model, dataset, strategy), class_names)


def write_report(metrics_path, confusion_path, split, report, confusion, class_names,
                 **facts):
    """The confusion matrix plot, then `metrics.json`: `{split: report, **facts}`.

    The metrics are written last and atomically, since they mark the
    evaluation complete.
    """
    plot_confusion_matrix(confusion, class_names, confusion_path,
                          title=f"{split}: video accuracy {report['accuracy']:.1%}")
    metrics = {split: report, **facts}
    write_text(metrics_path, json.dumps(metrics, indent=2))  # whole: it marks a run complete
    return metrics


def accuracy_summary(split, report):
    """A report's accuracies in one line, as train.py and scripts/evaluate.py print them."""
    return (f"{split} video accuracy {report['accuracy']:.3f} "
            f"(clip {report['clip_accuracy']:.3f}, top-5 {report[TOP_K_ACCURACY]:.3f}, "
            f"mean class {report['mean_class_accuracy']:.3f}) over {report['num_videos']} "
            "videos")


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def video_scores(clip_probs, clip_labels, video_ids):
    """Averages clip probabilities per video; returns `(ids, probs, labels)`."""
    order = list(dict.fromkeys(video_ids))
    index = {video_id: i for i, video_id in enumerate(order)}
    sums = np.zeros((len(order), clip_probs.shape[1]))
    counts = np.zeros(len(order))
    labels = np.zeros(len(order), np.int64)
    for probs, label, video_id in zip(clip_probs, clip_labels, video_ids):
        i = index[video_id]
        sums[i] += probs
        counts[i] += 1
        labels[i] = label
    return order, sums / counts[:, None], labels


def classification_report(clip_probs, clip_labels, video_ids, class_names):
    """The metrics of `metrics.json` and the video-level confusion matrix."""
    num_classes = len(class_names)
    _, probs, labels = video_scores(clip_probs, clip_labels, video_ids)
    predicted = probs.argmax(axis=1)
    best_k = np.argsort(-probs, axis=1)[:, :top_k(num_classes)]
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for truth, guess in zip(labels, predicted):
        confusion[truth, guess] += 1
    per_class = {}
    recalls = []
    for c, name in enumerate(class_names):
        support = int(confusion[c].sum())
        predicted_c = int(confusion[:, c].sum())
        recall = confusion[c, c] / support if support else None
        precision = confusion[c, c] / predicted_c if predicted_c else None
        per_class[name] = {"precision": _maybe(precision), "recall": _maybe(recall),
                           "support": support}
        if recall is not None:
            recalls.append(recall)
    metrics = {
        "accuracy": float((predicted == labels).mean()),
        "clip_accuracy": float((clip_probs.argmax(axis=1) == clip_labels).mean()),
        # With fewer than five classes this is top-k over all of them.
        TOP_K_ACCURACY: float(np.mean([label in row for label, row in zip(labels, best_k)])),
        "mean_class_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "num_videos": int(len(labels)),
        "num_clips": int(len(clip_labels)),
        "per_class": per_class,
    }
    return metrics, confusion


def _maybe(value):
    return None if value is None else float(value)


def read_history(history_csv):
    """`{epoch (from 0): row}` of `history.csv`; a resumed run appends, the last row wins."""
    with open(history_csv, newline="") as handle:
        # Rows that are not an epoch's (a repeated header, a torn last line) are skipped.
        return collections.OrderedDict((int(row["epoch"]), row)
                                       for row in csv.DictReader(handle)
                                       if (row.get("epoch") or "").isdigit())


def best_epoch(history_csv, metric=VAL_ACCURACY):
    """The epoch (from 1) of the highest `metric`, the first of ties, as ModelCheckpoint keeps."""
    by_epoch = read_history(history_csv)
    scores = {epoch: float(row[metric]) for epoch, row in by_epoch.items()
              if row.get(metric) not in (None, "")}
    return max(scores, key=lambda e: (scores[e], -e)) + 1 if scores else None


def plot_learning_curves(history_csv, path):
    """Loss and accuracy per epoch, training against validation, from `history.csv`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_epoch = read_history(history_csv)
    rows = list(by_epoch.values())
    epochs = [e + 1 for e in by_epoch]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            key = prefix + metric
            if rows and key in rows[0]:
                axis.plot(epochs, [float(r[key]) for r in by_epoch.values()],
                          marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Learning curves")
    figure.tight_layout()
    write_whole(path, lambda partial: figure.savefig(partial, dpi=100))
    plt.close(figure)


def plot_confusion_matrix(confusion, class_names, path, title="Confusion matrix"):
    """A labelled heat map of a confusion matrix (rows: truth, columns: prediction)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    size = max(5, 0.45 * n + 3)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(n), class_names, rotation=90)
    axis.set_yticks(range(n), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if n <= 30:
        limit = confusion.max() / 2 if confusion.size else 0
        for i in range(n):
            for j in range(n):
                axis.text(j, i, int(confusion[i, j]), ha="center", va="center",
                          color="white" if confusion[i, j] > limit else "black",
                          fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    write_whole(path, lambda partial: figure.savefig(partial, dpi=100))
    plt.close(figure)
