"""The MCD meter on known degradations, before and after calibration, beside an independent MCD.

    .venv/bin/python benchmarks/mcd_calibration.py [--data out/sample-store] [--split test]
                                                   [--system NAME=DIR ...]

For every utterance of the store's split (espeak-ng audio in the committed corpora) and for the
real person's recordings alsa-utils ships (resampled to the store's rate): the recording itself,
its WORLD analysis-synthesis, + white noise at 40/30/20/10 dB SNR, Griffin-Lim (60 iterations)
of the stored mel (of the recording's own mel for the real ones), and each ``--system`` folder of
``<id>.wav`` (e.g. ``out/sample-eval/audio``: ``make demo``'s 300-step tiny acoustic model + tiny
vocoder). Columns: voxray's MCD without the calibration (``floor_db=None``: the meter before),
with it, and the ``mel-cepstral-distance`` package's pipeline with the same calibration in the
time domain (``calibration.independent_mcd``). Means over utterances; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

from voxray.audio import AudioSpec  # noqa: E402
from voxray.data import store  # noqa: E402
from voxray.dsp import griffin_lim  # noqa: E402
from voxray.evaluate import calibration, metrics  # noqa: E402

GRIFFIN_LIM = "Griffin-Lim (60 it.) of the mel"


def measure(recording: np.ndarray, cases: dict[str, np.ndarray], rate: int, table: dict) -> None:
    reference = metrics.analyse(recording, rate)
    for name, audio in cases.items():
        other = metrics.analyse(audio, rate)
        row = table.setdefault(name, {"before": [], "after": [], "independent": []})
        row["before"].append(metrics.compare(reference, other, floor_db=None)["mcd_db"])
        row["after"].append(metrics.compare(reference, other)["mcd_db"])
        row["independent"].append(calibration.independent_mcd(recording, audio, rate))


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}\n")
    print("| audio scored against the recording | before (dB) | calibrated (dB) | independent, calibrated (dB) |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(row[k]):.2f}" for k in ("before", "after", "independent")) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / "out" / "sample-store"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--system", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    started = time.perf_counter()
    spec = AudioSpec(**json.loads((Path(args.data) / "stats.json").read_text())["audio_spec"])
    systems = dict(item.split("=", 1) for item in args.system)

    synthetic: dict = {}
    rows = list(store.arrow_rows(store.read_split(args.data, args.split, ["id", "audio", "mel"])))
    for row in rows:
        recording = np.asarray(row["audio"], dtype=np.float64)
        cases = calibration.degradations(recording, spec.sample_rate)
        cases[GRIFFIN_LIM] = griffin_lim(torch.from_numpy(np.asarray(row["mel"], dtype=np.float32)), spec,
                                         iterations=60).numpy().astype(np.float64)
        for name, folder in systems.items():
            audio, rate = soundfile.read(os.path.join(folder, f"{row['id']}.wav"), dtype="float32")
            cases[name] = metrics.resample(audio, rate, spec.sample_rate).astype(np.float64)
        measure(recording, cases, spec.sample_rate, synthetic)
    print_table(f"espeak-ng audio: {args.data}, {args.split} split, {len(rows)} utterances", synthetic)

    real: dict = {}
    paths = sorted(p for p in glob.glob("/usr/share/sounds/alsa/*.wav") if not p.endswith("Noise.wav"))
    for path in paths:
        audio, rate = soundfile.read(path, dtype="float32")
        recording = metrics.resample(audio, rate, spec.sample_rate).astype(np.float64)
        cases = calibration.degradations(recording, spec.sample_rate)
        cases[GRIFFIN_LIM] = calibration.griffin_lim_copy(recording, spec)
        measure(recording, cases, spec.sample_rate, real)
    print_table(f"real recordings: alsa-utils' {len(paths)} channel announcements (one man), at "
                f"{spec.sample_rate} Hz", real)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
