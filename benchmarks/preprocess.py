"""Preprocessing throughput, measured side by side in one run on the same audio.

    .venv/bin/python benchmarks/preprocess.py [--copies 16] [--set key=value ...]

Builds an LJSpeech corpus from ``copies`` copies of the committed sample corpus, then reports
audio-seconds processed per wall-second (x real time) for:

  mel floor     decoded 22.05 kHz audio -> log-mel only (the compute floor)
  plain loop    one process, the pipeline's own functions (scan pass, feature pass, parquet write)
  ray 1 CPU     the Ray Data pipeline on a fresh local Ray with num_cpus=1
  ray 2 CPUs    the same with num_cpus=2

Ray start-up (ray.init) is excluded; everything from planning to the final stats.json is
included. Each CPU count gets a fresh Ray in a subprocess and runs the pipeline twice: "cold"
includes starting the worker processes and their imports (~2 s each here), "warm" is the second
run on the same cluster, as on a long-running one. Targets: pipeline >= 40x real
time per core; Ray per-core overhead <= 20% over the plain loop; 2 CPUs >= 1.7x one CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "corpus" / "sample"


def build_corpus(folder: Path, copies: int) -> float:
    """``copies`` x the sample corpus; returns its total decoded audio seconds."""
    import soundfile

    (folder / "wavs").mkdir(parents=True)
    lines, seconds = [], 0.0
    for line in (SAMPLE / "metadata.csv").read_text().splitlines():
        utt_id, rest = line.split("|", 1)
        source = SAMPLE / "wavs" / f"{utt_id}.wav"
        seconds += soundfile.info(source).duration * copies
        for copy in range(copies):
            os.link(source, folder / "wavs" / f"{utt_id}_c{copy}.wav")
            lines.append(f"{utt_id}_c{copy}|{rest}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    return seconds


def kept_seconds(stats: dict) -> float:
    return stats["audio_seconds"]


def run_ray(corpus: Path, output: Path, cpus: int, overrides: list[str]) -> dict:
    """A fresh Ray in a subprocess: a cold run (workers start and import) then a warm one."""
    code = (
        "import json, sys, time, ray\n"
        "ray.init(num_cpus=int(sys.argv[3]), include_dashboard=False, log_to_driver=False)\n"
        "ray.data.DataContext.get_current().enable_progress_bars = False\n"
        "from voxray.config import load_config\n"
        "from voxray.data.pipeline import preprocess\n"
        "for run in ('cold', 'warm'):\n"
        "    start = time.perf_counter()\n"
        "    stats = preprocess(sys.argv[1], sys.argv[2] + run, load_config(overrides=sys.argv[4:]))\n"
        "    print('RESULT', json.dumps({'run': run, 'wall': time.perf_counter() - start,"
        " 'kept': stats['kept'], 'audio_seconds': stats['audio_seconds']}))\n"
    )
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(corpus), str(output), str(cpus), *overrides],
                          capture_output=True, text=True, env=env, check=False)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            results[result.pop("run")] = result
    if set(results) != {"cold", "warm"}:
        raise RuntimeError(f"ray run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return results


def run_plain(corpus: Path, output: Path, overrides: list[str]) -> dict:
    """The same work in one process: plan, scan every batch, process every batch, write."""
    import pyarrow as pa

    from voxray.config import load_config
    from voxray.data import readers
    from voxray.data.process import Context, process_units, scan_units
    from voxray.data.store import FeatureStoreSink

    class TaskContext:  # what a Datasink sees of its Ray task
        def __init__(self, index: int) -> None:
            self.task_idx = index

    config = load_config(overrides=overrides)
    start = time.perf_counter()
    units = readers.plan(str(corpus), "ljspeech")
    per_batch = max(1, config.preprocess.rows_per_task // readers.unit_rows(units[0]))
    batches = [pa.table({"unit": [json.dumps(u) for u in units[i:i + per_batch]]})
               for i in range(0, len(units), per_batch)]
    context = Context(config)
    context.absorb([scan_units(b, context).to_pylist()[0] for b in batches])
    sink = FeatureStoreSink(str(output), config.audio.n_mels)
    kept, seconds = 0, 0.0
    for index, batch in enumerate(batches):
        partial = sink.write([process_units(batch, context)], TaskContext(index))
        kept += partial.kept
        seconds += sum(partial.split_seconds.values())
    return {"wall": time.perf_counter() - start, "kept": kept, "audio_seconds": seconds}


def run_stages(corpus: Path) -> dict:
    """Per-stage cost over the corpus (one process): where the time goes."""
    import torch

    from voxray.config import load_config
    from voxray import dsp
    from voxray.data.process import clean_audio
    from voxray.text import G2P, normalize_text

    config = load_config()
    spec, pre = config.audio, config.preprocess
    rows = [line.split("|") for line in (corpus / "metadata.csv").read_text().splitlines()]
    raw = [(corpus / "wavs" / f"{r[0]}.wav").read_bytes() for r in rows]
    timings = {"clean": 0.0, "mel": 0.0, "f0": 0.0, "g2p": 0.0}
    cleaned = []
    start = time.perf_counter()
    for data in raw:
        cleaned.append(clean_audio(data, config).waveform)
    timings["clean"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for wave in cleaned:
            dsp.log_mel(torch.from_numpy(wave), spec)
    timings["mel"] = time.perf_counter() - start
    start = time.perf_counter()
    for wave in cleaned:
        n = spec.frames_for(wave.shape[0])
        dsp.f0_contour(wave[: n * spec.hop_length], spec, n, pre.f0_floor, pre.f0_ceil)
    timings["f0"] = time.perf_counter() - start
    g2p = G2P("espeak")
    start = time.perf_counter()
    for r in rows:
        g2p(normalize_text(r[2]), r[4])
    timings["g2p"] = time.perf_counter() - start
    timings["audio_seconds"] = sum(w.shape[0] for w in cleaned) / spec.sample_rate
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="config overrides for every run, e.g. preprocess.rows_per_task=128")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # per-core numbers: Ray tasks get one thread per CPU too
    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    try:
        corpus = work / "corpus"
        decoded = build_corpus(corpus, args.copies)
        print(f"config overrides: {args.set or 'none'}")
        print(f"corpus: {args.copies} x sample = {len(list((corpus / 'wavs').iterdir()))} files, "
              f"{decoded:.0f} s decoded audio; machine: {os.cpu_count()} cores")
        stages = run_stages(corpus)
        plain = run_plain(corpus, work / "plain", args.set)
        ray1 = run_ray(corpus, work / "ray1", 1, args.set)
        ray2 = run_ray(corpus, work / "ray2", 2, args.set)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    seconds = stages["audio_seconds"]
    rate = {
        "mel floor": seconds / stages["mel"],
        "plain loop (1 core)": plain["audio_seconds"] / plain["wall"],
    }
    for cpus, runs in ((1, ray1), (2, ray2)):
        for run, result in runs.items():
            assert result["kept"] == plain["kept"], (plain, result)
            rate[f"ray {cpus} CPU{'s' if cpus > 1 else ''}, {run}"] = result["audio_seconds"] / result["wall"]
    print("\nstage costs, x real time on one core (trimmed audio):")
    for stage in ("clean", "mel", "f0", "g2p"):
        print(f"  {stage:<6} {seconds / stages[stage]:8.0f}x")
    print("\naudio-seconds per wall-second (x real time); cold = fresh workers, warm = second run:")
    for name, value in rate.items():
        print(f"  {name:<22} {value:8.1f}x")
    plain_rate = rate["plain loop (1 core)"]
    print("\nratios (warm unless said):")
    for run in ("warm", "cold"):
        one, two = rate[f"ray 1 CPU, {run}"], rate[f"ray 2 CPUs, {run}"]
        print(f"  [{run}] ray 1 CPU / plain loop   {one / plain_rate:.2f}   (Ray overhead "
              f"{100 * (plain_rate / one - 1):+.0f}%; target <= +20%)")
        print(f"  [{run}] ray 2 CPUs / ray 1 CPU   {two / one:.2f}   (target >= 1.7)")
        print(f"  [{run}] x real time per core     1 CPU {one:.1f}, 2 CPUs {two / 2:.1f}   (target >= 40)")
    print(f"  plain loop / mel floor         {plain_rate / rate['mel floor']:.3f}")


if __name__ == "__main__":
    main()
