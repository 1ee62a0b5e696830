"""What the code-switched front end costs per row, measured side by side in one run.

    .venv/bin/python benchmarks/codeswitch_frontend.py [--rounds 5] [--repeat 20]

On the committed code-switched corpus's 44 texts (corpus/codeswitch), microseconds per row for:

  whole row     G2P of the row in its language (what a store without preprocess.code_switch does)
  tagged        the manifest's per-word languages (spk_f's tags, reused for spk_m's twin), then
                each word phonemised in its language
  detected      per-word language detection with lingua (ms, en), then each word phonemised

Rounds interleave the three (this machine's speed drifts); medians over rounds. The preprocessing
pipeline runs this once in its scan pass and once in its feature pass per row; the feature pass's
audio work costs ~2-5 ms per second of audio (benchmarks/preprocess.py), for scale.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from voxray.codeswitch import CodeSwitch, phonemize
from voxray.text import G2P, normalize_text

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "codeswitch" / "manifest.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20, help="passes over the 44 rows per measurement")
    args = parser.parse_args()
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    tags = {r["text"]: r["word_langs"] for r in rows if "word_langs" in r}
    items = [(normalize_text(r["text"]), r["language"], tags[r["text"]]) for r in rows]
    g2p, switch = G2P(), CodeSwitch(("ms", "en"))
    ways = {
        "whole row": lambda text, language, _: g2p(text, language),
        "tagged": lambda text, language, given: phonemize(text, switch.tag(text, language, given), language, g2p),
        "detected": lambda text, language, _: phonemize(text, switch.tag(text, language), language, g2p),
    }
    for way in ways.values():                      # warm: espeak voices, lingua's models
        for item in items:
            way(*item)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            for _ in range(args.repeat):
                for item in items:
                    way(*item)
            times[name].append((time.perf_counter() - start) / (args.repeat * len(items)) * 1e6)
    base = statistics.median(times["whole row"])
    print(f"{len(items)} rows x {args.repeat} passes x {args.rounds} rounds (medians)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<10} {median:8.1f} us/row   {median / base:5.2f}x whole row")


if __name__ == "__main__":
    main()
