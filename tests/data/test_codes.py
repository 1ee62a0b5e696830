"""Precomputed audio codes: a Qwen3-TTS-style manifest (16 codebooks x 2048 codes at 12.5 Hz)
salted with each kind of bad codes becomes a store whose codes read back as [T, 16] integers,
every bad row recorded with a reason that names its problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from tests.conftest import SAMPLE, sample_lines
from voxray.config import load_config
from voxray import cleaning
from voxray.data import codes
from voxray.cleaning import Rejected
from voxray.data.pipeline import preprocess
from voxray.data.store import arrow_rows, read_rejects, read_split

QWEN = codes.CodecInfo("qwen3-tts-12hz", 16, 2048, 12.5, 2)


def test_checks_name_the_problem():
    good = np.zeros((25, 16), dtype=int).tolist()
    assert codes.check(good, QWEN, 2.0).shape == (25, 16)
    assert codes.check(good, QWEN, 2.0).dtype == np.int32
    for bad, seconds, message in [
        (np.zeros((25, 8), dtype=int).tolist(), 2.0, "8 codebooks per frame, the codec has 16"),
        ([[0] * 15 + [2048]] + good[1:], 2.0, r"code 2048 at frame 0, codebook 15 is outside \[0, 2048\)"),
        ([[-1] * 16] + good[1:], 2.0, "code -1 at frame 0, codebook 0"),
        (good, 3.0, r"25 code frames for 3.000 s of audio at 12.5 Hz: 37.5 expected, \+-2"),
    ]:
        with pytest.raises(Rejected, match=message) as caught:
            codes.check(bad, QWEN, seconds)
        assert caught.value.reason == codes.BAD_CODES


def test_inferred_from_the_rows_where_the_config_is_silent():
    section = load_config().codec
    seen = [codes.observe([[2047] * 16] * 25, 2.0), codes.observe([[1900] * 16] * 51, 4.1),
            codes.observe([[5000] * 8] * 30, 2.4)]
    info = codes.infer(section, seen)
    # Summarised (as scan tasks send them) the same rows infer the same codec; counts weigh.
    assert codes.infer(section, codes.summarise(seen + seen[:1])) == codes.infer(section, seen + seen[:1])
    assert codes.summarise(seen + seen[:1])[0].count == 2
    assert codes.infer(section, [codes.Observation(16, 9, 12.0, 3), codes.Observation(16, 9, 13.0, 2)]).frame_rate == 12.0
    assert (info.n_codebooks, info.codebook_size, info.frame_rate) == (16, 2048, pytest.approx(12.47, abs=0.01))
    assert info.inferred == ("n_codebooks", "codebook_size", "frame_rate") and info.name == "unknown"
    fixed = codes.infer(load_config(overrides=["codec.n_codebooks=8", "codec.codebook_size=8192",
                                               "codec.frame_rate=25", "codec.name=mine"]).codec, seen)
    assert (fixed.n_codebooks, fixed.codebook_size, fixed.frame_rate, fixed.inferred) == (8, 8192, 25.0, ())
    assert codes.infer(section, []) is None
    usage = codes.usage(np.array([[5, 5, 0, 0], [10, 0, 0, 0]]))
    assert usage[0] == {"codebook": 0, "used": 2, "perplexity": 2.0} and usage[1]["perplexity"] == 1.0


def _qwen_manifest(folder, salt: dict[str, object]) -> dict[str, list]:
    """Sample utterances with plausible 16 x 2048 codes at 12.5 Hz, then one salted row per kind
    of bad codes (``salt``: id -> codes, or a function of the good codes)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, good = [], {}
    for i, line in enumerate(sample_lines(len(salt) + 4, language="en-us")):
        utt_id, text, _, speaker, language = line.split("|")
        wav = SAMPLE / "wavs" / f"{utt_id}.wav"
        frames = round(soundfile.info(wav).duration * 12.5)
        values = rng.integers(0, 2048, (frames, 16))
        values[0, 0] = 2047
        row = {"id": utt_id, "audio": str(wav), "text": text, "speaker_id": speaker, "language": language,
               "audio_codes": values.tolist(), "gender": "female" if i % 2 else "male", "age_range": "30-40",
               "phase": "pretrain"}
        names = list(salt)
        if i < len(names):
            change = salt[names[i]]
            row["id"] = names[i]
            row["audio_codes"] = change(values) if callable(change) else change
        else:
            good[utt_id] = values
        rows.append(row)
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return good


SALT = {
    "eight_codebooks": lambda v: v[:, :8].tolist(),
    "negative_code": lambda v: (v * np.r_[[-1], np.ones(len(v) - 1)][:, None]).astype(int).tolist(),
    "half_length": lambda v: v[: len(v) // 2].tolist(),
    "ragged": lambda v: [v[0].tolist(), v[1, :3].tolist()],
    "floats": [[0.5] * 16],
    "not_a_list": "abc",
}


@pytest.mark.integration
def test_salted_qwen_manifest_becomes_integer_codes_and_a_ledger(ray_cluster, tmp_path):
    good = _qwen_manifest(tmp_path / "corpus", SALT)
    out = tmp_path / "store"
    stats = preprocess(str(tmp_path / "corpus"), str(out), load_config())
    assert stats["input_rows"] == 10 and stats["kept"] + stats["rejected"] + stats["malformed"] == 10
    ledger = {r["id"]: r for r in read_rejects(str(out))}
    assert {i: r["reason"] for i, r in ledger.items() if i in SALT} == {
        "eight_codebooks": codes.BAD_CODES, "negative_code": codes.BAD_CODES, "half_length": codes.BAD_CODES,
        "ragged": cleaning.MALFORMED_ROW, "floats": cleaning.MALFORMED_ROW, "not_a_list": cleaning.MALFORMED_ROW}
    assert "8 codebooks per frame, the codec has 16" in ledger["eight_codebooks"]["detail"]
    assert "outside [0, 2048)" in ledger["negative_code"]["detail"]
    assert "code frames for" in ledger["half_length"]["detail"] and "expected" in ledger["half_length"]["detail"]
    assert "same" in ledger["ragged"]["detail"] and "integers" in ledger["floats"]["detail"]
    codec = stats["codec"]
    assert (codec["n_codebooks"], codec["codebook_size"]) == (16, 2048)
    assert codec["frame_rate"] == pytest.approx(12.5, abs=0.2)
    assert set(codec["inferred"]) == {"n_codebooks", "codebook_size", "frame_rate"}
    assert len(codec["usage"]) == 16 and all(u["used"] > 0 and u["perplexity"] > 1 for u in codec["usage"])
    tables = [read_split(str(out), split) for split in ("train", "val", "test")]
    assert {str(t.schema.field("audio_codes").type) for t in tables if t.num_rows} == {
        "list<element: fixed_size_list<element: int32>[16]>"}
    rows = {row["id"]: row for t in tables if t.num_rows for row in arrow_rows(t)}
    assert set(rows) == set(good)
    for utt_id, values in good.items():
        stored = rows[utt_id]["audio_codes"]
        assert stored.dtype == np.int32 and stored.shape == values.shape and (stored == values).all()
        meta = json.loads(rows[utt_id]["metadata"])
        assert meta["age_range"] == "30-40" and meta["phase"] == "pretrain" and meta["gender"] in ("female", "male")
        # not trimmed: the audio is as long as the file, so the codes stay aligned with it
        seconds = soundfile.info(SAMPLE / "wavs" / f"{utt_id}.wav").duration
        assert rows[utt_id]["audio_seconds"] == pytest.approx(seconds, abs=256 / 22050 + 1e-3)


@pytest.mark.integration
def test_codes_checked_against_the_configured_codec_and_kept_without_their_audio(ray_cluster, tmp_path):
    """With the codec configured, rows are checked against it; a row whose audio file is missing
    but whose codes are valid is kept for talker training (codes only, counted apart), one with bad
    codes is not, and recipes that read mels never see it."""
    from voxray.train.launch import training_datasets

    good = _qwen_manifest(tmp_path / "corpus", {"code_2048": lambda v: np.where(v == 2047, 2048, v).tolist()})
    manifest = tmp_path / "corpus" / "train.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    codes_only = {**rows[1], "id": "codes_only", "audio": str(tmp_path / "gone.wav")}
    bad_codes_only = {**rows[0], "id": "bad_codes_only", "audio": str(tmp_path / "gone.wav")}
    manifest.write_text("\n".join(json.dumps(r) for r in [*rows, codes_only, bad_codes_only]) + "\n")
    out = tmp_path / "store"
    stats = preprocess(str(tmp_path / "corpus"), str(out), load_config(overrides=[
        "codec.name=qwen3-tts-12hz", "codec.n_codebooks=16", "codec.codebook_size=2048", "codec.frame_rate=12.5"]))
    assert stats["codec"]["name"] == "qwen3-tts-12hz" and stats["codec"]["inferred"] == []
    ledger = {r["id"]: r for r in read_rejects(str(out))}
    assert ledger["code_2048"]["reason"] == codes.BAD_CODES and "code 2048 at frame 0" in ledger["code_2048"]["detail"]
    assert ledger["bad_codes_only"]["reason"] == codes.BAD_CODES
    assert stats["kept"] == 5
    kept = {row["id"]: row for split in ("train", "val", "test") for row in arrow_rows(read_split(str(out), split))}
    row = kept["codes_only"]
    assert row["n_frames"] == 0 and row["audio"] is None and len(row["mel"]) == 0
    assert (row["audio_codes"] == good[rows[1]["id"]]).all()
    assert row["audio_seconds"] == pytest.approx(len(good[rows[1]["id"]]) / 12.5)
    assert stats["splits"][row["split"]]["codes_only"] == 1
    assert sum(split.get("codes_only", 0) for split in stats["splits"].values()) == 1
    with_mels = training_datasets(str(out), ["id", "mel"], ())
    seen = {r["id"] for name in ("train", "val") for r in with_mels[name].take_all()}
    assert "codes_only" not in seen and seen
    codes_seen = {r["id"] for name in ("train", "val") for r in training_datasets(str(out), ["id"], ())[name].take_all()}
    assert ("codes_only" in codes_seen) == (row["split"] in ("train", "val"))
