"""Generate the voice-quality benchmark's corpus with espeak-ng, reproducibly.

    python scripts/make_quality_corpus.py OUT_DIR [--sentences 300] [--seed 0]

One speaker (espeak-ng's en-us voice, variant m3) reads ``--sentences`` English sentences made
from a fixed grammar and word lists by a seeded generator: short declaratives, questions and
imperatives of 5-12 words, so a few hundred of them cover English phonemes many times over.
LJSpeech layout (``metadata.csv`` rows ``id|text|normalized_text|speaker|language``), 22.05 kHz
mono 16-bit, 0.15 s of silence at both ends. Same espeak-ng version and seed, same bytes.
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

ADJECTIVES = ["small", "bright", "quiet", "heavy", "golden", "narrow", "frozen", "gentle", "hollow", "crooked",
              "patient", "distant", "silver", "rusty", "clever", "muddy", "sudden", "crowded", "simple", "ancient"]
NOUNS = ["river", "teacher", "garden", "bottle", "window", "farmer", "kitten", "ladder", "market", "pencil",
         "doctor", "valley", "blanket", "engine", "orange", "harbour", "village", "mirror", "lantern", "basket",
         "sailor", "pocket", "meadow", "kettle", "bridge", "student", "candle", "island", "monkey", "shadow"]
VERBS_PAST = ["carried", "painted", "followed", "watched", "opened", "cleaned", "dropped", "noticed", "borrowed",
              "repaired", "pushed", "counted", "visited", "measured", "covered", "answered", "gathered", "lifted"]
VERBS = ["carry", "paint", "follow", "watch", "open", "clean", "drop", "notice", "borrow", "repair", "push",
         "count", "visit", "measure", "cover", "gather", "lift", "check"]
PLACES = ["near the station", "across the field", "behind the old mill", "under the wooden table",
          "beside the quiet road", "at the end of the street", "inside the little shop", "over the stone wall",
          "along the northern coast", "in the middle of winter"]
TIMES = ["this morning", "every evening", "last summer", "before dawn", "after the storm", "on Sunday",
         "during the long journey", "at noon"]
TEMPLATES = [
    "The {adj} {noun} {past} the {noun2} {place}.",
    "A {adj} {noun} {past} a {adj2} {noun2} {time}.",
    "Did the {noun} {verb} the {adj} {noun2} {time}?",
    "Please {verb} the {noun} {place}.",
    "My {noun} {past} the {adj} {noun2} and the {noun3}.",
    "{Time}, the {noun} {past} every {noun2} {place}.",
    "Why would the {adj} {noun} {verb} a {noun2}?",
    "We {past} the {noun} {place} {time}.",
]
VOICE, SPEED, RATE, EDGE = "en-us+m3", 175, 22050, 0.15


def sentence(rng: random.Random) -> str:
    nouns = rng.sample(NOUNS, 3)
    adjectives = rng.sample(ADJECTIVES, 2)
    time = rng.choice(TIMES)
    text = rng.choice(TEMPLATES).format(adj=adjectives[0], adj2=adjectives[1], noun=nouns[0], noun2=nouns[1],
                                        noun3=nouns[2], past=rng.choice(VERBS_PAST), verb=rng.choice(VERBS),
                                        place=rng.choice(PLACES), time=time, Time=time[0].upper() + time[1:])
    return text[0].upper() + text[1:]


def speak(text: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(SPEED), "--stdout", text], check=True,
                         capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    audio = torchaudio.functional.resample(torch.from_numpy(samples)[None], rate, RATE)[0].numpy()
    edge = np.zeros(int(EDGE * RATE), dtype=np.float32)
    return np.concatenate([edge, 0.5 * audio, edge])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out, rng = Path(args.out), random.Random(args.seed)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    while len(texts) < args.sentences:
        text = sentence(rng)
        if text not in texts:
            texts.append(text)
    rows = []
    for number, text in enumerate(texts, start=1):
        utterance = f"q_{number:04d}"
        soundfile.write(out / "wavs" / f"{utterance}.wav", speak(text), RATE, subtype="PCM_16")
        rows.append(f"{utterance}|{text}|{text}|narrator|en-us")
    (out / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} utterances to {out}")


if __name__ == "__main__":
    main()
