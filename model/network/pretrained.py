"""Starting from trained weights: published R(2+1)D weights, `.keras` files, run folders.

    model = build_model("r2plus1d_18", 101, 16, 112, weights="kinetics400")
    model = build_model("r2plus1d_18", 101, 16, 112, weights="r2plus1d_18-91a641e6.pth")

torchvision's video ResNets (`VideoResNet` with the R(2+1)D stem) map onto
`model.network.resnets.r2plus1d` layer for layer; `torchvision_table` is that map, as
data. Channel counts come from the checkpoint's shapes, so other members of
the family (IG-65M's R(2+1)D-34, with its own mid channels) load too. The
model then pads like PyTorch, uses the weights' BatchNorm epsilon and
statistics, and normalises its uint8 input inside as the weights expect, so
it computes what their PyTorch network computes. Named weights
(`model.network.weights`) say their epsilon and normalisation themselves; a file of
another name is taken to be torchvision's (epsilon 1e-5, Kinetics statistics).
"""

import os
import re

import numpy as np

from model.network import R2PLUS1D_STAGES, torch_checkpoint
from model.network import weights as named_weights
from model.training.run_dir import RunDir
from model.network.weights import WeightsError  # noqa: F401  raised here too, one class for both

# torchvision's own BatchNorm epsilon; IG-65M's converted Caffe2 weights use 1e-3.
TORCH_BN_EPSILON = 1e-5
# What a torchvision R(2+1)D state dict opens with: the (1, 7, 7) spatial stem.
_STEM_SPATIAL = "stem.0.weight"


def torchvision_table(stages, has_shortcut=lambda stage, block: stage > 1 and block == 0):
    """`[(torchvision prefix, Keras layer path, kind)]` for an R(2+1)D of `stages` blocks.

    `has_shortcut(stage, block)` says which blocks project their shortcut
    (torchvision's `downsample`): by default the first of stages 2-4.

    Kinds: `conv` (weight `[out, in, t, h, w]` -> kernel `[t, h, w, in, out]`),
    `bn` (weight, bias, running mean and variance -> gamma, beta, moving mean
    and variance), `dense` (weight transposed, and bias). Layer paths name a
    layer of the Functional model, then attributes of our blocks.
    """
    rows = [("stem.0", "stem_spatial", "conv"), ("stem.1", "stem_spatial_bn", "bn"),
            ("stem.3", "stem_temporal", "conv"), ("stem.4", "stem_temporal_bn", "bn")]
    for stage, blocks in enumerate(stages, 1):
        for block in range(blocks):
            src, dst = f"layer{stage}.{block}", f"stage{stage}_block{block + 1}"
            for conv in (1, 2):
                rows += [(f"{src}.conv{conv}.0.0", f"{dst}/conv{conv}/spatial", "conv"),
                         (f"{src}.conv{conv}.0.1", f"{dst}/conv{conv}/mid_bn", "bn"),
                         (f"{src}.conv{conv}.0.3", f"{dst}/conv{conv}/temporal", "conv"),
                         (f"{src}.conv{conv}.1", f"{dst}/bn{conv}", "bn")]
            if has_shortcut(stage, block):
                rows += [(f"{src}.downsample.0", f"{dst}/shortcut", "conv"),
                         (f"{src}.downsample.1", f"{dst}/shortcut_bn", "bn")]
    rows.append(("fc", "logits", "dense"))
    return rows


_PARAMS = {"conv": ("weight",), "bn": ("weight", "bias", "running_mean", "running_var"),
           "dense": ("weight", "bias")}


def torchvision_architecture(state, path="the checkpoint"):
    """Blocks per stage and channel counts of a torchvision R(2+1)D state dict.

    Returns:
        `(stages, widths, num_classes)`; `widths` as `model.network.resnets.r2plus1d` takes it.
    """
    stem = state.get(_STEM_SPATIAL)
    if stem is None or stem.ndim != 5 or tuple(stem.shape[1:]) != (3, 1, 7, 7) \
            or "fc.weight" not in state:
        found = stem.shape if stem is not None else "no stem.0.weight"
        raise WeightsError(
            f"{path} is not a torchvision R(2+1)D state dict (a (1, 7, 7) spatial stem "
            f"and an fc layer; found {found}, first keys "
            f"{', '.join(list(state)[:4])}); give r2plus1d_18's or r2plus1d_34's weights")
    blocks = {}
    for key in state:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            stage, block = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if sorted(blocks) != [1, 2, 3, 4]:
        raise WeightsError(f"{path} has stages {sorted(blocks)}, not layer1-layer4 of a "
                           "torchvision video ResNet")
    stages = tuple(blocks[s] for s in (1, 2, 3, 4))
    widths = {
        "stem": (int(stem.shape[0]), int(_require(state, "stem.3.weight", path).shape[0])),
        "stages": tuple(int(_require(state, f"layer{s}.0.conv1.1.weight", path).shape[0])
                        for s in (1, 2, 3, 4)),
        "mid": {f"stage{s}_block{b + 1}": tuple(
            int(_require(state, f"layer{s}.{b}.conv{c}.0.0.weight", path).shape[0])
            for c in (1, 2)) for s in (1, 2, 3, 4) for b in range(blocks[s])},
    }
    return stages, widths, int(state["fc.weight"].shape[0])


def _require(state, key, path):
    if key not in state:
        raise WeightsError(f"{path} lacks {key}, which an R(2+1)D state dict has")
    return state[key]


def build_from_torchvision(name, num_classes, num_frames, image_size, weights, **options):
    """An R(2+1)D whose architecture and weights come from a torchvision-layout checkpoint.

    Args:
        weights: a name of `model.network.weights.NAMED_WEIGHTS` (fetched once into
            Keras's cache) or the path of a `.pth` file.
        **options: as `model.network.resnets.r2plus1d` takes them; `bn_epsilon`
            overrides the weights' own.

    The classifier is kept when `num_classes` matches the checkpoint's, else
    it is a fresh one; a line on stdout says which.
    """
    from model.network import resnets
    fixed_width = WeightsError("pretrained weights fix the width; drop --width_multiplier")
    scaled = options.pop("width_multiplier", 1.0) != 1.0
    if named_weights.mismatch(weights, name):  # refused before any download
        raise WeightsError(named_weights.mismatch(weights, name))
    if scaled and named_weights.lookup(weights):
        raise fixed_width
    label, path, entry = resolve(weights)
    bn_epsilon = options.pop("bn_epsilon", entry.bn_epsilon if entry else TORCH_BN_EPSILON)
    state = torch_checkpoint.load_state_dict(path)
    if scaled:  # a file that is no checkpoint says so first
        raise fixed_width
    stages, widths, source_classes = torchvision_architecture(state, path)
    if R2PLUS1D_STAGES.get(name) != stages:
        named = [n for n, s in R2PLUS1D_STAGES.items() if s == stages]
        raise WeightsError(f"{path} holds a network of {stages} blocks per stage"
                           f"{' (' + named[0] + ')' if named else ''}, not {name}; "
                           f"choose --model {named[0] if named else 'to match it'}")
    model = resnets.r2plus1d(num_classes, stages, num_frames=num_frames,
                             image_size=image_size, bn_epsilon=bn_epsilon,
                             input_stats=input_stats(entry.normalisation if entry else "kinetics"),
                             widths=widths, padding="symmetric", name=name, **options)
    keep_head = source_classes == num_classes
    load_torchvision_state(model, state, stages, keep_head=keep_head, path=path)
    trained_on = f", trained on {entry.num_frames}-frame clips" if entry else ""
    print(f"weights: {name} from {label}{trained_on}, BatchNorm epsilon {bn_epsilon:g}; "
          + (f"its {source_classes}-class classifier kept" if keep_head else
             f"a new {num_classes}-class classifier (the checkpoint has "
             f"{source_classes} classes)"), flush=True)
    return model


def input_stats(normalisation):
    """A `normalisation` of `model.network.weights` as `resnets.r2plus1d`'s `input_stats`."""
    from model.network import resnets
    return {"kinetics": (resnets.KINETICS_MEAN, resnets.KINETICS_STD)}[normalisation]


def resolve(weights):
    """`(label, local path, NamedWeights or None)` of a name or a `.pth` path.

    A name is fetched (downloaded once); a path whose file name is a
    published one is checked against that file's hash, since its epsilon and
    normalisation are taken from the name (and a file that is not its
    network's is refused further on, by its shapes).
    """
    entry = named_weights.lookup(weights)
    if entry is not None:
        path, _ = named_weights.fetch(str(weights))
        return str(weights), path, entry
    if not os.path.isfile(weights):
        raise WeightsError(f"weights {weights} are neither a file nor published weights "
                           f"({', '.join(named_weights.NAMED_WEIGHTS)})")
    name, entry = named_weights.for_file(weights)
    if entry is not None:
        digest = named_weights.sha256(weights)
        if not digest.startswith(entry.sha256):
            raise WeightsError(f"{weights} has the name of {name}'s file but not its bytes "
                               f"(sha256 {digest[:16]}..., published {entry.sha256}); "
                               f"download {entry.url} again, or rename the file if it is "
                               "another checkpoint")
        return f"{weights} ({name})", str(weights), entry
    return str(weights), str(weights), None


def load_torchvision_state(model, state, stages, keep_head=True, path="the checkpoint"):
    """Assigns a torchvision state dict to an R(2+1)D built with its widths.

    Every key must be used (BatchNorm's `num_batches_tracked` aside) and every
    shape must agree; otherwise one `WeightsError` names the first few keys.
    """
    used, missing, wrong, assignments = set(), [], [], []

    def has_shortcut(stage, block):
        return model.get_layer(f"stage{stage}_block{block + 1}").has_projection

    for prefix, layer_path, kind in torchvision_table(stages, has_shortcut):
        if kind == "dense" and not keep_head:
            used.update(f"{prefix}.{p}" for p in _PARAMS[kind])
            continue
        layer = _layer(model, layer_path)
        for param, variable in zip(_PARAMS[kind], _variables(layer, kind)):
            key = f"{prefix}.{param}"
            if key not in state:
                missing.append(key)
                continue
            used.add(key)
            value = _to_keras(state[key], kind, param)
            if tuple(variable.shape) != value.shape:
                wrong.append(f"{key} {tuple(state[key].shape)} for {variable.path} "
                             f"{tuple(variable.shape)}")
                continue
            assignments.append((variable, value))
    unexpected = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    problems = [(missing, "missing"), (unexpected, "unexpected"), (wrong, "of the wrong shape")]
    for keys, what in problems:
        if keys:
            raise WeightsError(f"{path}: {len(keys)} keys {what}, first {'; '.join(keys[:3])}"
                               f"; it is not a torchvision R(2+1)D of {stages} blocks")
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def _layer(model, layer_path):
    first, *rest = layer_path.split("/")
    layer = model.get_layer(first)
    for attribute in rest:
        layer = getattr(layer, attribute)
    return layer


def _variables(layer, kind):
    if kind == "conv":
        return [layer.kernel]
    if kind == "bn":
        return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
    return [layer.kernel, layer.bias]


def _to_keras(value, kind, param):
    value = np.asarray(value, np.float32)
    if kind == "conv":
        return value.transpose(2, 3, 4, 1, 0)
    if kind == "dense" and param == "weight":
        return value.T
    return value


# -----------------------------------------------------------------------------
# --init_from: whatever a user points at, into the model a run builds.
# -----------------------------------------------------------------------------

def source_kind(source):
    """`model.network.weights.source_kind` of a source that must exist: named, run, keras or torch."""
    kind = named_weights.source_kind(source)
    if kind == "missing":
        raise WeightsError(f"--init_from {source} does not exist; give a run folder, a .keras "
                           "file, a PyTorch checkpoint or one of the named weights: "
                           f"{', '.join(named_weights.NAMED_WEIGHTS)}")
    return kind


def describe_source(source, resuming_from=None):
    """What config.json records of an --init_from: its sha256, and a name's URL and file.

    `resuming_from`: the facts an earlier launch of the run recorded, kept as
    they are (the source is not read again).
    """
    if resuming_from is not None:
        return {k: v for k, v in resuming_from.items() if k.startswith("init_from_")}
    entry = named_weights.lookup(source)
    if entry is None:
        return {"init_from_sha256": sha256(source)}
    path, digest = named_weights.fetch(source)  # in the cache: checked, not downloaded
    return {"init_from_url": entry.url, "init_from_file": path, "init_from_sha256": digest}


def sha256(path):
    """The file's SHA-256 (a run folder's: its `model.keras`'s), for config.json."""
    if os.path.isdir(path):
        path = RunDir(path).model
    return named_weights.sha256(path)


def load_keras_source(path):
    """The Keras model at `path` (or in run folder `path`), loaded in safe mode."""
    import keras

    import model.network.layers  # noqa: F401  registers our layers for loading
    if os.path.isdir(path):
        run = RunDir(path)
        run.require(run.model)
        path = run.model
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises several types for a bad file
        raise WeightsError(f"cannot load {path} as a Keras model: "
                           f"{str(error).splitlines()[0][:200]}") from None


def architecture_options(source):
    """What of an R(2+1)D's build lives in its config, not its weights, to build it alike.

    Copying weights by name carries none of these: the input normalisation
    (a `Normalization` layer holds its statistics as config), PyTorch-style
    padding and the BatchNorm epsilon. A run continued from a Kinetics or
    IG-65M fine-tuning would otherwise compute something else, silently.

    Returns:
        `{"input_stats", "padding", "bn_epsilon"}` options of `build_model`,
        those the source has.
    """
    import keras
    names = {layer.name: layer for layer in source.layers}
    options = {"padding": "symmetric" if "stem_pad" in names else "same"}
    if "input_norm" in names:
        config = names["input_norm"].get_config()
        options["input_stats"] = (list(np.ravel(config["mean"])),
                                  list(np.sqrt(np.ravel(config["variance"]))))
    norms = [layer for layer in source._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    if norms:
        options["bn_epsilon"] = norms[0].epsilon
    return options


def copy_weights(source, target, head="logits"):
    """Copies every layer's weights from `source` to `target` by name where all shapes agree.

    Returns:
        `(copied layer names, whether the head was copied)`. A head whose
        class count differs stays fresh; any other layer of `target` with
        weights that `source` lacks or shapes differently is an error, since
        then the two are not the same architecture.
    """
    by_name = {layer.name: layer for layer in source.layers}
    copied, mismatched = [], []
    for layer in target.layers:
        if not layer.weights:
            continue
        theirs = by_name.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if theirs is None or [tuple(w.shape) for w in theirs.weights] != shapes:
            if layer.name != head:
                mismatched.append(layer.name)
            continue
        layer.set_weights(theirs.get_weights())
        copied.append(layer.name)
    if mismatched:
        raise WeightsError(f"{source.name} does not match this model in "
                           f"{len(mismatched)} layers, first {', '.join(mismatched[:3])}; "
                           "use the same --model and --width_multiplier as the source")
    return copied, head in copied
