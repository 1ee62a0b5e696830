"""A multi-node Ray cluster on this machine (ray.cluster_utils.Cluster), shaped like cluster.yaml:
a head without CPUs for tasks, two CPU nodes declaring ``cpu_node``, one training node (it declares
a GPU, as a cloud GPU node does, plus a ``train_node`` resource; no CUDA is used). Preprocesses the
sample corpus with every task asking for ``cpu_node`` and trains a few steps with the workers
asking for ``train_node``, then prints, as JSON, on which
node kind every preprocessing task and every training worker ran.

    python -m tests.ops.simulate_cluster OUTPUT_FOLDER

Run in its own process by tests/ops/test_cluster.py: it starts and stops its own Ray.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

import ray
from ray.cluster_utils import Cluster

from voxray.cluster import free_port
from voxray.config import load_config


def main(folder: str) -> None:
    from ray.util.state import list_actors, list_tasks

    from tests.conftest import CPU_CONFIG, SAMPLE
    from voxray.data.pipeline import preprocess
    from voxray.train.recipes import acoustic

    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port})
    try:
        kinds = {cluster.head_node.node_id: "head"}
        for name in ("cpu_a", "cpu_b"):
            kinds[cluster.add_node(num_cpus=2, resources={"cpu_node": 2}).node_id] = name
        kinds[cluster.add_node(num_cpus=2, num_gpus=1, resources={"train_node": 1}).node_id] = "train"
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)

        store = os.path.join(folder, "store")
        preprocess(str(SAMPLE), store, load_config(None, ["preprocess.task_resources={cpu_node: 1}"]))
        time.sleep(3)                                       # task events reach the state API in ~1 s
        tasks = list_tasks(filters=[("type", "=", "NORMAL_TASK")], detail=True, limit=10000, raise_on_missing_output=False)
        preprocessing = collections.Counter(kinds.get(t.node_id, "?") for t in tasks if t.node_id)

        config = load_config(CPU_CONFIG, ["train.max_steps=5", "train.val_every=5", "train.max_failures=0",
                                          "train.num_workers=2", "train.batch_size=4",
                                          "train.worker_resources={train_node: 0.5}"])
        acoustic.train(store, os.path.join(folder, "run"), config)
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=100,
                              raise_on_missing_output=False)
        print("SIMULATION " + json.dumps({
            "preprocess_tasks": dict(preprocessing),
            "train_workers": sorted(kinds.get(a.node_id, "?") for a in workers),
            "store_rows": json.loads(open(os.path.join(store, "stats.json")).read())["rows_on_disk"],
        }), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
