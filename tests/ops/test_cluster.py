"""cluster.yaml against Ray's own autoscaler config validation, and a multi-node simulation of
where preprocessing and training land (tests/ops/simulate_cluster.py, in its own process)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import jsonschema
import pytest
import yaml

from tests.conftest import REPO
from voxray.config import load_config

CLUSTER = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_validation(cluster_config):
    prepared = _validate(cluster_config)
    assert prepared["provider"]["type"] == "aws"
    # the check is real: a misspelt field or a wrong type is refused
    broken = copy.deepcopy(cluster_config)
    broken["available_node_types"]["gpu_1x"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)
    broken = copy.deepcopy(cluster_config)
    broken["idle_timeout_minutes"] = "ten"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def test_cluster_yaml_node_types(cluster_config):
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]
    workers = {name: spec for name, spec in types.items() if spec is not head}
    assert head["resources"]["CPU"] == 0
    assert all(spec["min_workers"] == 0 and spec["max_workers"] >= 1 for spec in workers.values())
    assert cluster_config["max_workers"] >= max(spec["max_workers"] for spec in workers.values())
    assert 0 < cluster_config["idle_timeout_minutes"] <= 30
    cpu = [spec for spec in workers.values() if "GPU" not in spec["resources"]]
    gpu = [spec for spec in workers.values() if spec["resources"].get("GPU", 0) > 0]
    assert len(cpu) == 1 and "cpu_node" in cpu[0]["resources"]
    assert sorted(spec["resources"]["GPU"] for spec in gpu) == [1, 8]
    # every node reaches S3 through its instance profile
    assert all(spec["node_config"]["IamInstanceProfile"] for spec in types.values())
    # the preprocessing config asks for what only the CPU type has
    pre = load_config(str(REPO / "jobs" / "configs" / "preprocess-cluster.yaml")).preprocess
    assert set(pre.task_resources) <= set(cpu[0]["resources"])
    assert not any(set(pre.task_resources) & set(spec["resources"]) for spec in gpu)


def test_cluster_yaml_keeps_keys_out_and_ports_closed(cluster_config):
    text = CLUSTER.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AWS_SECRET", "AKIA"):
        assert secret.lower() not in text.lower()
    rules = cluster_config["provider"]["security_group"]["IpPermissions"]
    assert [(rule["FromPort"], rule["ToPort"]) for rule in rules] == [(22, 22)]
    head_start = " ".join(cluster_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert cluster_config["file_mounts"]["~/voxray-stack/constraints.txt"] == "./constraints.txt"


def test_multi_node_simulation_places_work_by_resources(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    result = subprocess.run([sys.executable, "-m", "tests.ops.simulate_cluster", str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SIMULATION ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    placed = json.loads(lines[0].removeprefix("SIMULATION "))
    # preprocessing spread over both CPU nodes, none on the training node or the head
    assert set(placed["preprocess_tasks"]) == {"cpu_a", "cpu_b"}, placed
    assert placed["store_rows"] == {"train": 50, "val": 5, "test": 9}
    # both training workers on the training node
    assert placed["train_workers"] == ["train", "train"], placed
