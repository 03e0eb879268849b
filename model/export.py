"""Exports a trained model so that inference needs nothing but the run folder.

Writes `model.keras` (reloads with `keras.saving.load_model` once `model` is
imported), a TensorFlow SavedModel whose `serve` signature takes uint8 clips
and returns logits and probabilities, and `classes.json`.
"""

import json
import os

import keras
import tensorflow as tf

CLASSES_NAME = "classes.json"
KERAS_NAME = "model.keras"
SAVED_MODEL_NAME = "saved_model"


def export_model(model, run_dir, class_names, num_frames, image_size):
    """Writes the three exports into `run_dir`; returns their paths."""
    keras_path = os.path.join(run_dir, KERAS_NAME)
    model.save(keras_path)
    saved_path = os.path.join(run_dir, SAVED_MODEL_NAME)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(clips):
        logits = tf.cast(model(clips, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive.add_endpoint(
        name="serve", fn=serve,
        input_signature=[tf.TensorSpec([None, num_frames, image_size, image_size, 3],
                                       tf.uint8, name="clips")])
    archive.write_out(saved_path, verbose=False)
    classes_path = os.path.join(run_dir, CLASSES_NAME)
    with open(classes_path, "w") as handle:
        json.dump(class_names, handle, indent=1)
    return {"keras": keras_path, "saved_model": saved_path, "classes": classes_path}
