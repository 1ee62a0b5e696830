"""S3 round trip: corpus read from and feature store written to a real S3-compatible server
(moto in server mode on localhost), through s3fs, configured only by the AWS variables."""

import json

import pyarrow.parquet as pq
import pytest

from voxray.config import load_config
from voxray import cleaning
from voxray.data.pipeline import preprocess
from tests.conftest import SAMPLE, sample_lines

pytestmark = pytest.mark.integration


def test_preprocess_s3_to_s3(ray_cluster, s3_env, tmp_path):
    import s3fs

    bucket = s3_env
    fs = s3fs.S3FileSystem()  # endpoint and keys from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID
    lines = sample_lines(6) + ["gone|A file nobody uploaded.|A file nobody uploaded.|spk_m|en-us"]
    for line in lines[:6]:
        utt_id = line.split("|")[0]
        fs.put_file(str(SAMPLE / "wavs" / f"{utt_id}.wav"), f"{bucket}/corpus/wavs/{utt_id}.wav")
    fs.pipe_file(f"{bucket}/corpus/metadata.csv", ("\n".join(lines) + "\n").encode())
    config_path = f"s3://{bucket}/configs/pre.yaml"
    fs.pipe_file(config_path[5:], b"preprocess:\n  rows_per_task: 2\n")

    stats = preprocess(f"s3://{bucket}/corpus", f"s3://{bucket}/store", load_config(config_path))

    assert (stats["input_rows"], stats["kept"], stats["rejected"]) == (7, 6, 1)
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{bucket}/store/stats.json"))["kept"] == 6
    rejects = [json.loads(l) for l in fs.cat_file(f"{bucket}/store/rejected.jsonl").decode().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejects] == [("gone", cleaning.MISSING_FILE)]
    assert rejects[0]["source"] == f"s3://{bucket}/corpus/metadata.csv:7"
    parts = fs.glob(f"{bucket}/store/*/*.parquet")
    rows = sum(pq.ParquetFile(fs.open(p, "rb")).metadata.num_rows for p in parts)
    assert rows == 6
    assert not fs.exists(f"{bucket}/store/_progress")
    assert fs.exists(f"{bucket}/store/vocab.json") and fs.exists(f"{bucket}/store/config.yaml")
