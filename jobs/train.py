"""Ray job: `voxray train FAMILY` (Ray Train + DeepSpeed workers on the GPU nodes); the family
is the first argument (acoustic when it is left out).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py [acoustic|vocoder|talker] --data s3://bucket/store --output s3://bucket/runs/NAME \
            --config jobs/configs/acoustic.yaml [key=value ...]
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("train", sys.argv[1:]))
