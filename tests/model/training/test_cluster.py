"""A worker's place in `TF_CONFIG`'s cluster: checked, the chief found, its peers named."""

import json

import pytest

from model.training import cluster as cluster_lib


def test_tf_config_is_checked():
    with pytest.raises(cluster_lib.ClusterError, match="needs TF_CONFIG"):
        cluster_lib.Cluster({})
    for bad in ("not json", '{"cluster": {}}',
                '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'):
        with pytest.raises(cluster_lib.ClusterError, match="not a cluster with this task"):
            cluster_lib.Cluster({"TF_CONFIG": bad})
    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert cluster_lib.Cluster({"TF_CONFIG": json.dumps(two)}).is_chief
    two["task"]["index"] = 1
    assert not cluster_lib.Cluster({"TF_CONFIG": json.dumps(two)}).is_chief
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                  "task": {"type": "worker", "index": 0}}
    cluster = cluster_lib.Cluster({"TF_CONFIG": json.dumps(with_chief)})
    assert not cluster.is_chief and cluster.peers() == {"chief 0": "c:1"}


def test_workers_are_ordered_chief_first():
    config = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]},
              "task": {"type": "worker", "index": 1}}
    cluster = cluster_lib.Cluster({"TF_CONFIG": json.dumps(config)})
    assert cluster.name == "worker 1" and cluster.num_workers == 3 and cluster.index == 2
    assert cluster.peers() == {"chief 0": "c:1", "worker 0": "a:1"}
    config["task"] = {"type": "chief", "index": 0}
    chief = cluster_lib.Cluster({"TF_CONFIG": json.dumps(config)})
    assert chief.is_chief and chief.index == 0
