"""Exports a trained model so that inference needs nothing but the run folder.

Writes `model.keras` (reloads with `keras.saving.load_model` once `model.layers` is
imported), a TensorFlow SavedModel whose `serve` signature takes uint8 clips
and returns logits and probabilities, and `classes.json`.
"""

import json

import keras
import tensorflow as tf


def export_model(model, run, class_names, num_frames, image_size):
    """Writes the three exports into a `model.run_dir.RunDir`."""
    model.save(run.model)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(clips):
        logits = tf.cast(model(clips, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive.add_endpoint(
        name="serve", fn=serve,
        input_signature=[tf.TensorSpec([None, num_frames, image_size, image_size, 3],
                                       tf.uint8, name="clips")])
    archive.write_out(run.saved_model, verbose=False)
    with open(run.classes, "w") as handle:
        json.dump(class_names, handle, indent=1)
