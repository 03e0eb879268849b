"""Command line of the preprocessing job.

    python -m preprocess --source SRC --output_dir OUT [options] [Beam options]

See `preprocess.pipeline` for what it does and `--help` for the flags.
"""

import logging
import os
import sys

# TensorFlow's C++ start-up chatter hides the job's own progress; workers inherit this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Without its gcp extra, importing Beam warns that BigQuery's clients are missing;
# the job never uses BigQuery, and the line would stand before every message.
logging.getLogger().addFilter(
    lambda record: not record.getMessage().startswith("apitools not found"))

from preprocess.pipeline import main  # noqa: E402

sys.exit(main())
