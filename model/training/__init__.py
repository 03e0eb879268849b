"""Training: what a run is made of, from its config to its last checkpoint.

- The config: `config` (presets, defaults, flags and their checks),
  `config_file` (`--config` files), `cluster` (a worker's place in TF_CONFIG).
- The data: `data` (the datasets a run reads), `data_service` (the tf.data
  service's dispatcher and workers), `input_wait` (how long steps wait for it).
- The fit: `fit` (Keras's fit on one machine, our loop across machines in
  `multi_worker`, with `watchdog` and `replicas`), `recipe` (strategy,
  schedule, optimizer, loss, metrics and callbacks), `precision`,
  `precise_bn`.
- The record of it: `run_dir` (the run folder's files), `launches` (time
  across resumes), `experiments` (settings and results to compare runs by).

Importing this package is light; its modules load TensorFlow as they need it.
"""
