"""Shared fixtures: one real local Ray cluster per session, a real S3 server, corpus builders."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile

from voxray.cluster import free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "corpus" / "sample"
CODESWITCH = REPO / "corpus" / "codeswitch"
CPU_CONFIG = str(REPO / "jobs" / "configs" / "acoustic-cpu.yaml")

# Ray Train's controller looks at its workers every 2 s, so a finished run waits up to 2 s for it to
# notice (benchmarks/RESULTS.md, "Where a short run's time goes"); the suite's ~70 short runs poll
# every 0.25 s. Every Ray the tests start inherits it (an embedded one, `ray start`, job drivers).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray, shared by every test that runs a pipeline or a training run.

    4 logical CPUs on the 2-core machine: two training workers hold one each and Ray Data's read
    tasks for their shards need the others."""
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not ray.is_initialized():
        # with the dashboard: a sweep's stopped trials need Ray Train's placement-group cleaner
        from voxray.cluster import start_local

        start_local(num_cpus=4, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_store(ray_cluster, tmp_path_factory) -> str:
    """The committed sample corpus preprocessed once per session (64 utterances, 2 speakers,
    en-us + ms): train 50, val 5, test 9."""
    from voxray.config import load_config
    from voxray.data.pipeline import preprocess

    store = str(tmp_path_factory.mktemp("sample") / "store")
    preprocess(str(SAMPLE), store, load_config())
    return store


# Rows appended to the committed code-switched manifest in ``codeswitch_store``: each must be
# rejected (bad_tags) or malformed, with its reason.
BAD_CODESWITCH_ROWS = [
    {"id": "bad_tag_count", "text": "Saya nak pergi shopping lah.", "word_langs": ["ms", "ms", "en"]},
    {"id": "bad_particle", "text": "Jom makan lah.", "particle_tags": [None, None, "lahh"]},
    {"id": "bad_language", "text": "Jom makan.", "word_langs": ["ms", "fr"]},
    {"id": "bad_tag_type", "text": "Jom makan.", "word_langs": "ms ms"},
    {"id": "two_tag_lists", "text": "Jom makan.", "word_langs": ["ms", "ms"], "language_tags": ["ms", "ms"]},
]


@pytest.fixture(scope="session")
def codeswitch_store(ray_cluster, tmp_path_factory) -> str:
    """The committed code-switched corpus (44 utterances, Malay/English, particles) preprocessed
    once per session with ``preprocess.code_switch=ms,en`` and one augmentation draw per train row,
    plus ``BAD_CODESWITCH_ROWS``."""
    import json

    from voxray.config import load_config
    from voxray.data.pipeline import preprocess

    folder = tmp_path_factory.mktemp("codeswitch")
    audio = str(CODESWITCH / "wavs" / "cs_spk_f_001.wav")
    bad = [{"audio": audio, "speaker_id": "spk_f", "language": "ms", **row} for row in BAD_CODESWITCH_ROWS]
    manifest = folder / "manifest.jsonl"
    manifest.write_text((CODESWITCH / "manifest.jsonl").read_text(encoding="utf-8").replace(
        '"audio": "wavs/', f'"audio": "{CODESWITCH}/wavs/') + "".join(json.dumps(r) + "\n" for r in bad),
        encoding="utf-8")
    store = str(folder / "store")
    preprocess(str(manifest), store, load_config(overrides=["preprocess.code_switch=ms,en",
                                                            "preprocess.augment.copies=1"]))
    return store


@pytest.fixture(scope="session")
def base_run(sample_store, tmp_path_factory) -> str:
    """120 steps of the tiny model through the CLI and the CPU config from jobs/configs, with a
    relative --output as a user would type it (Ray workers run in another directory); evaluated
    on 2 test utterances at the end (RUN/eval); its best checkpoint exported to RUN/best."""
    from voxray import cli

    folder = tmp_path_factory.mktemp("base")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        code = cli.main(["train", "acoustic", "--data", sample_store, "--output", "run", "--config", CPU_CONFIG,
                         "train.max_steps=120", "train.val_every=20", "train.max_failures=0",
                         "train.evaluate_at_end=true", "train.evaluate_limit=2", "train.export_best=true"])
    finally:
        os.chdir(cwd)
    assert code == 0
    return str(folder / "run")


def sample_lines(count: int | None = None, language: str | None = None) -> list[str]:
    lines = (SAMPLE / "metadata.csv").read_text(encoding="utf-8").splitlines()
    if language:
        lines = [line for line in lines if line.split("|")[4] == language]
    return lines[:count] if count else lines


def make_ljspeech(folder: Path, lines: list[str], extra: dict[str, bytes] | None = None) -> Path:
    """An LJSpeech folder holding the sample wavs named by ``lines`` plus ``extra`` files."""
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    for line in lines:
        utt_id = line.split("|")[0]
        source = SAMPLE / "wavs" / f"{utt_id}.wav"
        if source.exists():
            shutil.copy(source, folder / "wavs" / f"{utt_id}.wav")
    for name, data in (extra or {}).items():
        (folder / "wavs" / name).write_bytes(data)
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    # A few harmonics so pitch trackers see a voiced, speech-like signal.
    signal = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
    return (level * signal / np.max(np.abs(signal))).astype(np.float32)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto in server mode) on localhost, as s3fs's tests use."""
    port = free_port()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@contextmanager
def s3_bucket(endpoint: str) -> Iterator[str]:
    """The standard AWS variables pointing at the local server, and a fresh bucket, for a while."""
    import boto3
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = f"voxray-{time.time_ns() % 10**12}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield bucket
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(s3_server):
    """The AWS variables and a fresh bucket for one test."""
    with s3_bucket(s3_server) as bucket:
        yield bucket


VOCODER_CPU_CONFIG = str(REPO / "jobs" / "configs" / "vocoder-cpu.yaml")


@pytest.fixture(scope="session")
def vocoder_run(sample_store, tmp_path_factory) -> str:
    """The tiny HiFi-GAN trained briefly through the CLI and the CPU config from jobs/configs."""
    from voxray import cli

    run = str(tmp_path_factory.mktemp("vocoder") / "run")
    code = cli.main(["train", "vocoder", "--data", sample_store, "--output", run, "--config", VOCODER_CPU_CONFIG,
                     "train.max_steps=40", "train.val_every=20", "train.log_every=10", "train.max_failures=0"])
    assert code == 0
    return run


CODEC_FIT = ["codec.n_codebooks=4", "codec.codebook_size=64", "codec.fit_vectors=1000", "codec.fit_steps=30",
             "codec.batch_vectors=512"]
TALKER_CPU_CONFIG = str(REPO / "jobs" / "configs" / "talker-cpu.yaml")


@pytest.fixture(scope="session")
def codec_folder(sample_store, tmp_path_factory) -> str:
    """voxray's mel codec (4 codebooks of 64) fitted on the sample store through the CLI."""
    from voxray import cli

    folder = str(tmp_path_factory.mktemp("codec") / "codec")
    assert cli.main(["codec", "fit", "--data", sample_store, "--output", folder, *CODEC_FIT]) == 0
    return folder


@pytest.fixture(scope="session")
def codes_store(sample_store, codec_folder, tmp_path_factory) -> str:
    """The sample store encoded with that codec through the CLI (every row gets audio_codes)."""
    from voxray import cli

    encoded = str(tmp_path_factory.mktemp("codes") / "store")
    assert cli.main(["codec", "encode", "--codec", codec_folder, "--data", sample_store, "--output", encoded]) == 0
    return encoded


@pytest.fixture(scope="session")
def talker_run(codes_store, tmp_path_factory) -> str:
    """The tiny talker trained on the encoded store through the CLI and the CPU config from
    jobs/configs, on 2 workers at ZeRO-3 (the CPU config's one worker at ZeRO-0 is the demo's)."""
    from voxray import cli

    run = str(tmp_path_factory.mktemp("talker") / "run")
    code = cli.main(["train", "talker", "--data", codes_store, "--output", run, "--config", TALKER_CPU_CONFIG,
                     "train.max_steps=60", "train.val_every=30", "train.log_every=10", "train.max_failures=0",
                     "train.num_workers=2", "deepspeed.zero_stage=3"])
    assert code == 0
    return run
