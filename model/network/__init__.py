"""The network: Keras 3 (2+1)D ResNets chosen by name, and the published weights they load.

    from model.network.build import build_model
    model = build_model("r2plus1d_18", num_classes=101, num_frames=16, image_size=112)
    model = build_model("r2plus1d_18", 101, 16, 112, weights="kinetics400")

Importing this package is light (no TensorFlow): it names the networks, so
a command line can be checked before TensorFlow loads; `build` makes one by
name. The layers live in `layers` (import
`model.network.layers` before `keras.saving.load_model` reads a model of
ours: it registers our layers with Keras), the networks in `resnets`,
published weights by name in `weights`, PyTorch files read without PyTorch
in `torch_checkpoint`, and the mapping of their keys to our layers in
`pretrained`.
"""

# Blocks per stage of the paper's depths.
R2PLUS1D_STAGES = {
    "r2plus1d_10": (1, 1, 1, 1),
    "r2plus1d_18": (2, 2, 2, 2),
    "r2plus1d_34": (3, 4, 6, 3),
}
MODEL_NAMES = ("tutorial", *R2PLUS1D_STAGES)
