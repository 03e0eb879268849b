"""Training: what a run is made of, from its config to its last checkpoint.

`recipe` sets up Keras's fit (strategy, schedule, optimizer, loss, metrics,
callbacks), `precision` the dtype policy and devices, `precise_bn` the
BatchNorm statistics recomputed before each evaluation, `multi_worker` the
loop across machines (with `watchdog` and `replicas`), and `run_dir` the run
folder everything lands in. Importing this package is light.
"""
