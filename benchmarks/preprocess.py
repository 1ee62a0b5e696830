"""Preprocessing throughput, measured side by side in one run on the same audio.

    .venv/bin/python benchmarks/preprocess.py [--copies 16 [64 160 ...]] [--set key=value ...]

Builds an LJSpeech corpus from ``copies`` copies (the first value) of the committed sample
corpus, then reports audio-seconds processed per wall-second (x real time) for:

  mel floor     decoded 22.05 kHz audio -> log-mel only (the compute floor)
  plain loop    one process, the pipeline's own functions (scan pass, feature pass, parquet write)
  ray 1 CPU     the Ray Data pipeline on a fresh local Ray with num_cpus=1
  ray 2 CPUs    the same with num_cpus=2

With more than one ``--copies``: on one fresh Ray of 2 CPUs (after a warm-up run), each corpus
size in turn, with its wall time and the peak RSS of the driver and of each Ray worker process
(sampled every 0.2 s): time should grow linearly with the corpus, memory stay flat.

Ray start-up (ray.init) is excluded; everything from planning to the final stats.json is
included. Each CPU count gets a fresh Ray in a subprocess and runs the pipeline twice: "cold"
includes starting the worker processes and their imports (~2 s each here), "warm" is the second
run on the same cluster, as on a long-running one. Targets: pipeline >= 100x real
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
    from voxray.data.process import Context, process_and_write, scan_units

    config = load_config(overrides=overrides)
    start = time.perf_counter()
    units = readers.plan(str(corpus), "ljspeech")
    per_batch = max(1, config.preprocess.rows_per_task // readers.unit_rows(units[0]))
    batches = [pa.table({"unit": [json.dumps(u) for u in units[i:i + per_batch]],
                         "index": list(range(i, min(i + per_batch, len(units))))})
               for i in range(0, len(units), per_batch)]
    context = Context(config)
    context.absorb([scan_units(b, context).to_pylist()[0] for b in batches])
    kept, seconds = 0, 0.0
    for batch in batches:
        summary = process_and_write(batch, context, str(output)).to_pylist()[0]
        kept += summary["kept"]
        seconds += summary["seconds"]
    return {"wall": time.perf_counter() - start, "kept": kept, "audio_seconds": seconds}


class PeakMemory:
    """Peak RSS of this process (the driver) and of each Ray worker process under it, sampled
    every ``period`` s while a run lasts."""

    def __init__(self, period: float = 0.2) -> None:
        import threading

        self.period, self.driver, self.workers = period, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            for child in me.children(recursive=True):
                try:
                    if child.cmdline()[:1] and child.cmdline()[0].startswith("ray::"):
                        self.workers[child.pid] = max(self.workers.get(child.pid, 0), child.memory_info().rss)
                except Exception:            # a process that just ended
                    continue
            self._stop.wait(self.period)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def scaling_child(work: Path, copies: list[int], cpus: int, overrides: list[str]) -> None:
    """In a fresh Ray of ``cpus`` CPUs: one warm-up run, then each corpus size; prints RESULT
    lines (wall, audio seconds, driver and worker peak RSS)."""
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    from voxray.config import load_config
    from voxray.data.pipeline import preprocess

    config = load_config(overrides=overrides)
    preprocess(str(work / f"corpus{copies[0]}"), str(work / "warmup"), config)
    for n in copies:
        with PeakMemory() as memory:
            start = time.perf_counter()
            stats = preprocess(str(work / f"corpus{n}"), str(work / f"scaled{n}"), config)
            wall = time.perf_counter() - start
        shutil.rmtree(work / f"scaled{n}", ignore_errors=True)
        print("RESULT", json.dumps({"copies": n, "wall": wall, "audio_seconds": stats["audio_seconds"],
                                    "rows": stats["input_rows"], "driver_mb": memory.driver / 2**20,
                                    "worker_mb": sorted(v / 2**20 for v in memory.workers.values())}),
              flush=True)


def run_scaling(work: Path, copies: list[int], cpus: int, overrides: list[str]) -> list[dict]:
    for n in copies:
        if not (work / f"corpus{n}").exists():
            build_corpus(work / f"corpus{n}", n)
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, __file__, "--scaling-child", str(work), "--cpus", str(cpus),
                           "--copies", *map(str, copies), "--set", *overrides],
                          capture_output=True, text=True, env=env, check=False)
    results = [json.loads(line[len("RESULT "):]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if len(results) != len(copies):
        raise RuntimeError(f"scaling run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return results


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
        dsp.f0_contour(wave[: n * spec.hop_length], spec, n, pre.f0_floor, pre.f0_ceil, pre.f0_rate, pre.f0_speed)
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
    parser.add_argument("--copies", type=int, nargs="+", default=[16],
                        help="corpus sizes in copies of the sample; the first is the throughput corpus, "
                             "and with more than one, Ray 2 CPUs runs each (time and peak memory)")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="config overrides for every run, e.g. preprocess.rows_per_task=128")
    parser.add_argument("--scaling-child", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # per-core numbers: Ray tasks get one thread per CPU too
    if args.scaling_child:
        scaling_child(Path(args.scaling_child), args.copies, args.cpus, args.set)
        return
    work = Path(tempfile.mkdtemp(prefix="voxray-bench-"))
    scaled: list[dict] = []
    try:
        corpus = work / f"corpus{args.copies[0]}"
        decoded = build_corpus(corpus, args.copies[0])
        print(f"config overrides: {args.set or 'none'}")
        print(f"corpus: {args.copies[0]} x sample = {len(list((corpus / 'wavs').iterdir()))} files, "
              f"{decoded:.0f} s decoded audio; machine: {os.cpu_count()} cores")
        stages = run_stages(corpus)
        plain = run_plain(corpus, work / "plain", args.set)
        ray1 = run_ray(corpus, work / "ray1", 1, args.set)
        ray2 = run_ray(corpus, work / "ray2", 2, args.set)
        if len(args.copies) > 1:
            scaled = run_scaling(work, args.copies, 2, args.set)
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
        print(f"  [{run}] x real time per core     1 CPU {one:.1f}, 2 CPUs {two / 2:.1f}   (target >= 100)")
    print(f"  plain loop / mel floor         {plain_rate / rate['mel floor']:.3f}")
    if scaled:
        print("\nscaling, Ray 2 CPUs warm: wall time and peak RSS (driver; each Ray worker process)")
        base = scaled[0]
        for r in scaled:
            workers = r["worker_mb"]
            print(f"  {r['copies']:>4} copies {r['rows']:>6} rows {r['audio_seconds']:>8.0f} s audio  "
                  f"wall {r['wall']:7.1f} s ({r['wall'] / base['wall']:5.2f}x for {r['rows'] / base['rows']:5.2f}x rows, "
                  f"{r['audio_seconds'] / r['wall'] / 2:5.1f}x real time per core)  driver {r['driver_mb']:6.0f} MB  "
                  f"workers {len(workers)}: max {max(workers, default=0):5.0f} MB, min {min(workers, default=0):5.0f} MB")


if __name__ == "__main__":
    main()
