"""Exports a trained model so that inference needs nothing but the run folder.

Writes `model.keras` (reloads with `keras.saving.load_model` once `model.network.layers` is
imported), a TensorFlow SavedModel whose `serve` signature takes uint8 clips
and returns logits and probabilities, and `classes.json`.

Both exports compute in float32, whatever precision trained the model: the
variables of a mixed-precision model are float32 already, and float16 or
bfloat16 layers would run many times slower on the CPUs that often serve.
"""

import json

import keras
import tensorflow as tf

from model.training.run_dir import write_text, write_whole


def float32_copy(model):
    """`model` itself if it computes in float32, else a float32 copy with its weights."""
    config = json.loads(model.to_json())
    changed = []

    def to_float32(node):
        if isinstance(node, dict):
            if (node.get("class_name") == "DTypePolicy"
                    and node.get("config", {}).get("name", "").startswith("mixed_")):
                changed.append(node["config"]["name"])
                node["config"]["name"] = "float32"
            for value in node.values():
                to_float32(value)
        elif isinstance(node, list):
            for value in node:
                to_float32(value)

    to_float32(config)
    if not changed:
        return model
    copy = keras.models.model_from_json(json.dumps(config))
    copy.set_weights(model.get_weights())
    return copy


def export_model(model, run, class_names, num_frames, image_size):
    """Writes the three exports into a `model.training.run_dir.RunDir`, computing in float32.

    Each is written whole or not at all (`run_dir.write_whole`): a full disk
    mid-export leaves no file cut short for inference to read.
    """
    model = float32_copy(model)
    write_whole(run.model, model.save)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(clips):
        logits = tf.cast(model(clips, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive.add_endpoint(
        name="serve", fn=serve,
        input_signature=[tf.TensorSpec([None, num_frames, image_size, image_size, 3],
                                       tf.uint8, name="clips")])
    write_whole(run.saved_model, lambda path: archive.write_out(path, verbose=False))
    write_text(run.classes, json.dumps(class_names, indent=1))
