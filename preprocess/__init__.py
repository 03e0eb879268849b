"""twoplusone's data side: the Beam job that writes video TFRecords and the reader of them.

`preprocess.schema` defines the records, `preprocess.pipeline` writes them,
`preprocess.reader` turns them into clips for training and evaluation. The
job's command line is `preprocess.options`, what it decodes `preprocess.tasks`,
and its output folder's checks and manifest `preprocess.outputs`.
Submodules are imported on use, so reading records does not import Beam.
"""

# The package's version, the one place it is written: setup.py reads it from
# here, and the manifest and a run's config.json record it.
__version__ = "0.1.0"
