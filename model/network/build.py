"""`build_model`: a network of ours by name, fresh or with published or PyTorch weights.

`build_for_run` makes the network a `train.py` run trains, from its config.
"""

import functools
import os

from model.network import MODEL_NAMES, R2PLUS1D_STAGES


def build_model(name, num_classes, num_frames=None, image_size=None, flip=False,
                weights=None, **options):
    """Builds a model by name: `tutorial`, `r2plus1d_10`, `r2plus1d_18` or `r2plus1d_34`.

    Args:
        name: which network.
        num_classes: number of output logits.
        num_frames: clip length (None leaves it free where the network allows).
        image_size: frame side (the tutorial's network needs it).
        flip: random horizontal flips in training, as the model's first layer,
            so they run on the accelerator. Defaults to False.
        weights: as keras.applications' `weights=`: a name of
            `model.network.weights.NAMED_WEIGHTS` (`"kinetics400"`, `"ig65m_kinetics400"`,
            ...: downloaded once into Keras's cache and checked against its
            published hash), or the path of a torchvision-layout R(2+1)D
            checkpoint (`.pth`, read without PyTorch); None for fresh
            weights. The channel counts, BatchNorm epsilon and input
            normalisation come with the weights; the classifier is kept when
            `num_classes` matches theirs. Defaults to None.
        **options: `width_multiplier`, `dropout`, `bn_momentum`, `bn_epsilon`
            for the R(2+1)D networks (with `weights`, `bn_epsilon` overrides
            the weights' own: 1e-3 for IG-65M's, else PyTorch's 1e-5).

    Returns:
        A `keras.Model` from uint8 clips `[batch, frames, size, size, 3]` to
        float32 logits `[batch, num_classes]`, built under the current dtype policy.
    """
    from model.network import resnets
    if name == "tutorial":
        if weights is not None:
            raise ValueError("no published weights fit the tutorial model; train it from "
                             "scratch or choose an r2plus1d model")
        if options:
            raise ValueError(f"the tutorial model takes no options, got {sorted(options)}")
        return resnets.tutorial(num_classes, num_frames=num_frames, image_size=image_size,
                                flip=flip)
    if name in R2PLUS1D_STAGES and weights is not None:
        from model.network import pretrained
        return pretrained.build_from_torchvision(name, num_classes, num_frames, image_size,
                                                 weights, flip=flip, **options)
    if name in R2PLUS1D_STAGES:
        return resnets.r2plus1d(num_classes, R2PLUS1D_STAGES[name],
                                num_frames=num_frames, image_size=image_size,
                                flip=flip, name=name, **options)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def build_for_run(config, num_classes, run):
    """The network a run trains: fresh, from --init_from, or a resumed run's own.

    Args:
        config: a resolved `train.py` config.
        num_classes: the records' class count.
        run: the run's `model.training.run_dir.RunDir`.
    """
    from model.network import pretrained
    if run.resume_epoch() and os.path.exists(run.architecture):
        # BackupAndRestore restores the weights and optimizer; the architecture
        # is the run's own, so --init_from is not read again.
        return run.read_architecture()
    options = {} if config["model"] == "tutorial" else dict(
        width_multiplier=config["width_multiplier"], dropout=config["dropout"])
    if config["bn_epsilon"] is not None:
        options["bn_epsilon"] = config["bn_epsilon"]
    source = config["init_from"]
    kind = source and pretrained.source_kind(source)
    build = functools.partial(build_model, config["model"], num_classes,
                              config["num_frames"], config["image_size"], flip=config["flip"])
    if kind in ("named", "torch"):  # a name is downloaded once, then read from the cache
        return build(weights=source, **options)
    if not kind:
        return build(**options)
    loaded = pretrained.load_keras_source(source)
    if config["model"] != "tutorial":  # built as the source was, --bn_epsilon still wins
        options = {**pretrained.architecture_options(loaded), **options}
    network = build(**options)
    copied, head = pretrained.copy_weights(loaded, network)
    print(f"weights: {len(copied)} layers from {source}; "
          + ("its classifier kept" if head else "a new classifier"), flush=True)
    return network
