"""Ray job: `voxray evaluate` (Ray Data actors synthesise and measure a store's split; `--gpu`
puts each on a GPU).

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py --model s3://bucket/runs/NAME/final --vocoder s3://bucket/runs/VOC/final \
            --data s3://bucket/store --output s3://bucket/evals/NAME [--actors 4] [--gpu]
        # another system's audio (s3://bucket/other/<id>.wav), same measures:
        python jobs/evaluate.py --audio s3://bucket/other --data s3://bucket/store --output s3://bucket/evals/other
"""

import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("evaluate", sys.argv[1:]))
