"""A worker's place in `TF_CONFIG`'s cluster, read without TensorFlow.

The trainer reads it before TensorFlow loads, to know whether this worker is
the chief that writes (and locks) the run folder.
"""

import json
import os

from preprocess.errors import UserError


class ClusterError(UserError):
    """A cluster that cannot train; the message says what to fix."""


class Cluster:
    """This worker's place in `TF_CONFIG`'s cluster.

    Raises:
        ClusterError: `TF_CONFIG` is missing or malformed.
    """

    def __init__(self, environ=os.environ):
        text = environ.get("TF_CONFIG")
        example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                   '"task": {"type": "worker", "index": 0}}\'')
        if not text:
            raise ClusterError(f"--strategy multi_worker needs TF_CONFIG on every worker, "
                               f"e.g. {example}")
        try:
            config = json.loads(text)
            cluster, task = config["cluster"], config["task"]
            self.task_type, self.task_id = task["type"], int(task["index"])
            self.addresses = {(kind, index): address for kind in ("chief", "worker")
                              for index, address in enumerate(cluster.get(kind, []))}
            ok = (self.task_type, self.task_id) in self.addresses
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ClusterError(f"TF_CONFIG is not a cluster with this task in it: {text}; "
                               f"write it as {example}")
        self.is_chief = (self.task_type == "chief"
                         or (self.task_type == "worker" and self.task_id == 0
                             and ("chief", 0) not in self.addresses))

    @property
    def name(self):
        return f"{self.task_type} {self.task_id}"

    @property
    def num_workers(self):
        return len(self.addresses)

    @property
    def index(self):
        """This worker's place among all of them, the chief first."""
        return sorted(self.addresses).index((self.task_type, self.task_id))

    def peers(self):
        return {f"{kind} {index}": address for (kind, index), address in self.addresses.items()
                if (kind, index) != (self.task_type, self.task_id)}
