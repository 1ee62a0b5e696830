"""Generate the committed code-switched Malay/English corpus with espeak-ng, reproducibly.

    python scripts/make_codeswitch_corpus.py corpus/codeswitch

A JSONL manifest (``manifest.jsonl``) and ``wavs/<id>.wav`` (16 kHz mono 16-bit). Two speakers
(espeak-ng variants m3 and f3) each read 12 Malay/English code-switched sentences with Malaysian
discourse particles, 6 Malay ones and 4 English ones: 44 utterances. Every word is spoken in its
own language's voice (runs of one language are spoken together, then joined with a short
pause); a particle is spoken alone, slower and higher or lower as the users' plan describes it
(lah longer and raised, lor level, ...). The speaker f3's rows carry ``word_langs`` and
``particle_tags`` (the truth the audio was made from); m3's rows carry only the text, so tests
compare per-word detection against their twins. Same espeak-ng version, same bytes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

# (row language, [(word with its punctuation, word language), ...]); "p" marks a particle.
SENTENCES = [
    ("ms", [("Saya", "ms"), ("nak", "ms"), ("pergi", "ms"), ("shopping", "en"), ("lah.", "p")]),
    ("ms", [("Jom", "ms"), ("kita", "ms"), ("makan", "ms"), ("lunch", "en"), ("dulu.", "ms")]),
    ("ms", [("Dia", "ms"), ("cakap", "ms"), ("the", "en"), ("meeting", "en"), ("sudah", "ms"), ("cancel", "en"),
            ("lor.", "p")]),
    ("en", [("I", "en"), ("rasa", "ms"), ("this", "en"), ("one", "en"), ("lagi", "ms"), ("bagus.", "ms")]),
    ("ms", [("Tak", "ms"), ("payah", "ms"), ("worry", "en"), ("lah,", "p"), ("semua", "ms"), ("okay.", "en")]),
    ("ms", [("Traffic", "en"), ("jam", "en"), ("teruk", "ms"), ("sangat", "ms"), ("hari", "ms"), ("ini.", "ms")]),
    ("en", [("Can", "en"), ("you", "en"), ("tolong", "ms"), ("close", "en"), ("the", "en"), ("door?", "en")]),
    ("ms", [("Minggu", "ms"), ("depan", "ms"), ("kita", "ms"), ("pergi", "ms"), ("beach,", "en"), ("okay?", "en")]),
    ("en", [("I", "en"), ("forgot", "en"), ("to", "en"), ("bawa", "ms"), ("wallet", "en"), ("leh.", "p")]),
    ("ms", [("Dia", "ms"), ("sangat", "ms"), ("busy", "en"), ("this", "en"), ("week", "en"), ("mah.", "p")]),
    ("ms", [("Betul", "ms"), ("ke", "ms"), ("you", "en"), ("already", "en"), ("finish", "en"), ("meh?", "p")]),
    ("en", [("The", "en"), ("food", "en"), ("sedap", "ms"), ("gila", "ms"), ("lah!", "p")]),
    ("ms", [("Saya", "ms"), ("suka", "ms"), ("nasi", "ms"), ("lemak.", "ms")]),
    ("ms", [("Kami", "ms"), ("pergi", "ms"), ("ke", "ms"), ("pasar", "ms"), ("pagi", "ms"), ("tadi.", "ms")]),
    ("ms", [("Adik", "ms"), ("sedang", "ms"), ("membaca", "ms"), ("buku.", "ms")]),
    ("ms", [("Hujan", "ms"), ("turun", "ms"), ("dengan", "ms"), ("lebat.", "ms")]),
    ("ms", [("Terima", "ms"), ("kasih", "ms"), ("banyak,", "ms"), ("kawan.", "ms")]),
    ("ms", [("Mereka", "ms"), ("bermain", "ms"), ("bola", "ms"), ("di", "ms"), ("padang.", "ms")]),
    ("en", [("The", "en"), ("weather", "en"), ("is", "en"), ("very", "en"), ("hot", "en"), ("today.", "en")]),
    ("en", [("Please", "en"), ("send", "en"), ("me", "en"), ("the", "en"), ("file.", "en")]),
    ("en", [("We", "en"), ("will", "en"), ("meet", "en"), ("at", "en"), ("the", "en"), ("station.", "en")]),
    ("en", [("Where", "en"), ("did", "en"), ("you", "en"), ("park", "en"), ("the", "en"), ("car?", "en")]),
]
# How each particle is spoken: (speed factor: < 1 is slower, pitch offset on espeak's 0-99 scale).
PARTICLE_PROSODY = {"lah": (0.7, 18), "lor": (1.0, -12), "leh": (0.85, 10), "mah": (0.9, -6), "meh": (0.8, 22)}
SPEAKERS = {"spk_m": {"variant": "m3", "speed": 175, "pitch": 45, "gain": 0.5, "accent": "kl"},
            "spk_f": {"variant": "f3", "speed": 185, "pitch": 55, "gain": 0.3, "accent": "penang"}}
RATE, EDGE_SILENCE, GAP = 16000, (0.2, 0.25), 0.06
PUNCTUATION = ".,?!"


def speak(text: str, language: str, variant: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "-v", f"{language}+{variant}", "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    voiced = np.flatnonzero(np.abs(samples) > 1e-3)
    return (samples[voiced[0]: voiced[-1] + 1] if voiced.size else samples), rate


def runs(words: list[tuple[str, str]], row_language: str) -> list[tuple[str, str, bool]]:
    """Consecutive words of one language spoken together; each particle alone: (text, language,
    is_particle). A particle is spoken in the row's language."""
    out: list[tuple[str, str, bool]] = []
    for word, language in words:
        if language == "p":
            out.append((word, row_language, True))
        elif out and out[-1][1] == language and not out[-1][2]:
            out[-1] = (f"{out[-1][0]} {word}", language, False)
        else:
            out.append((word, language, False))
    return out


def render(words: list[tuple[str, str]], row_language: str, voice: dict) -> np.ndarray:
    pieces = []
    for text, language, is_particle in runs(words, row_language):
        speed, pitch = voice["speed"], voice["pitch"]
        if is_particle:
            factor, offset = PARTICLE_PROSODY[text.strip(PUNCTUATION).lower()]
            speed, pitch = int(speed * factor), min(99, max(0, pitch + offset))
        samples, rate = speak(text, language, voice["variant"], speed, pitch)
        pieces.append(torchaudio.functional.resample(torch.from_numpy(samples)[None], rate, RATE)[0].numpy())
        pieces.append(np.zeros(int(GAP * RATE), dtype=np.float32))
    lead, tail = (np.zeros(int(s * RATE), dtype=np.float32) for s in EDGE_SILENCE)
    return np.concatenate([lead, *pieces[:-1], tail]) * voice["gain"]


def main(out_dir: str) -> None:
    out = Path(out_dir)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for speaker, voice in SPEAKERS.items():
        for number, (row_language, words) in enumerate(SENTENCES, start=1):
            utt_id = f"cs_{speaker}_{number:03d}"
            soundfile.write(out / "wavs" / f"{utt_id}.wav", render(words, row_language, voice), RATE, subtype="PCM_16")
            row = {"id": utt_id, "audio": f"wavs/{utt_id}.wav", "text": " ".join(w for w, _ in words),
                   "speaker_id": speaker, "language": row_language, "accent": voice["accent"]}
            if speaker == "spk_f":
                row["word_langs"] = [row_language if lang == "p" else lang for _, lang in words]
                row["particle_tags"] = [w.strip(PUNCTUATION).lower() if lang == "p" else None for w, lang in words]
            rows.append(row)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                        encoding="utf-8")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    (out / "README.md").write_text(
        "# voxray code-switched sample corpus\n\nGenerated by `scripts/make_codeswitch_corpus.py` "
        f"(`make corpus`) with {version}.\n{len(rows)} utterances, speakers {', '.join(SPEAKERS)}; Malay/English "
        "code-switching with Malaysian discourse particles, every word spoken in its own language's voice. "
        "Layout: JSONL manifest `manifest.jsonl` (spk_f's rows carry `word_langs` and `particle_tags`, "
        "spk_m's only their text), audio `wavs/<id>.wav`.\n", encoding="utf-8")
    print(f"wrote {len(rows)} utterances to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "corpus/codeswitch")
