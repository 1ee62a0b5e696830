"""Ray job: `voxray preprocess` (Ray Data on the cluster's CPU nodes).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/preprocess.py --input s3://bucket/corpus --output s3://bucket/store [--config FILE] [key=value ...]
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("preprocess", sys.argv[1:]))
