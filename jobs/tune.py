"""Ray job: `voxray tune FAMILY` (Ray Tune + Optuna + ASHA; every trial a Ray Train run); the
family is the first argument (acoustic when it is left out).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune.py --data s3://bucket/store --output s3://bucket/sweeps/NAME --trials 32 \
            --config jobs/configs/acoustic.yaml [--search-space FILE] [key=value ...]
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("tune", sys.argv[1:]))
