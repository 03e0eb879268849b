"""twoplusone's data side: the Beam job that writes video TFRecords and the reader of them.

`preprocess.schema` defines the records, `preprocess.pipeline` writes them,
`preprocess.reader` turns them into clips for training and evaluation.
Submodules are imported on use, so reading records does not import Beam.
"""
