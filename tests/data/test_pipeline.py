"""End-to-end runs of the Ray Data pipeline on a real local Ray cluster."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from voxray.config import load_config
from voxray import cleaning
from voxray.data import progress, readers, store
from voxray.data.pipeline import OutputError, preprocess
from voxray.data.splits import SPLITS, split_of
from voxray.text import Vocabulary
from tests.conftest import SAMPLE, make_ljspeech, sample_lines, tone, wav_bytes

pytestmark = pytest.mark.integration


def run(input_uri, output, *overrides, fmt=None):
    return preprocess(str(input_uri), str(output), load_config(overrides=list(overrides)), fmt=fmt)


def all_rows(output) -> pa.Table:
    return pa.concat_tables([store.read_split(str(output), s) for s in SPLITS if store.split_files(str(output), s)])


def reasons_by_id(output) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in store.read_rejects(str(output))}


def test_sample_corpus_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "store"
    stats = run(SAMPLE, out)
    assert (stats["input_rows"], stats["kept"], stats["rejected"], stats["malformed"]) == (64, 64, 0, 0)
    assert stats["reconciles"] and stats["input"]["format"] == "ljspeech"
    assert set(stats["speakers"]) == {"spk_f", "spk_m"} and set(stats["languages"]) == {"en-us", "ms"}
    assert all(stats["splits"][s]["utterances"] > 0 for s in SPLITS)
    assert sum(s["utterances"] for s in stats["splits"].values()) == 64
    assert stats["audio_seconds"] == pytest.approx(sum(s["audio_seconds"] for s in stats["splits"].values()), abs=0.01)
    assert json.loads((out / "stats.json").read_text())["kept"] == 64
    assert (out / "rejected.jsonl").read_text() == ""

    vocab = Vocabulary.from_json((out / "vocab.json").read_text())
    assert vocab.tokens == stats["vocabulary"]
    assert load_config(str(out / "config.yaml")) == load_config()
    table = all_rows(out)
    assert table.num_rows == 64 and len(set(table["id"].to_pylist())) == 64
    hop = stats["audio_spec"]["hop_length"]
    for row in table.slice(0, 8).to_pylist():
        n = row["n_frames"]
        assert np.array(row["mel"]).shape == (n, 80)
        assert len(row["f0"]) == len(row["energy"]) == n and len(row["audio"]) == n * hop
        assert row["audio_seconds"] == pytest.approx(n * hop / 22050, abs=1e-4)
        assert [vocab.tokens[i] for i in row["token_ids"]] == row["phonemes"]
        assert row["split"] == split_of(row["id"], load_config().preprocess.split)
        assert stats["speakers"][row["speaker_id"]]["index"] == row["speaker_index"]
        assert row["durations"] is None and row["audio_codes"] is None
        voiced = [f for f in row["f0"] if f > 0]
        assert len(voiced) > n / 4 and 60 < np.median(voiced) < 400  # espeak voices: real pitch
    mel = stats["features"]["mel"]
    assert len(mel["mean_per_channel"]) == 80 and mel["count"] == sum(table["n_frames"].to_pylist())
    assert 60 < stats["features"]["f0_voiced"]["mean"] < 400


def salted_corpus(folder):
    """Six good utterances and one of every kind of bad input."""
    good = sample_lines(6)
    rate = 16000
    nan_audio = tone(1.5, rate)
    nan_audio[100] = np.nan
    loud_stereo_44k = np.stack([tone(1.5, 44100, level=0.9), tone(1.5, 44100, level=0.2)], axis=1)
    extra = {
        "bad_empty.wav": b"",
        "bad_garbage.wav": b"RIFF....WAVEfmt this is not audio" * 20,
        "bad_nan.wav": wav_bytes(nan_audio, rate, subtype="FLOAT"),
        "bad_silent.wav": wav_bytes(np.zeros(rate * 2, np.float32), rate),
        "bad_near_silent.wav": wav_bytes(np.random.default_rng(0).normal(0, 1e-4, rate * 2).astype(np.float32), rate, subtype="FLOAT"),
        "bad_short.wav": wav_bytes(tone(0.25, rate), rate),
        "bad_long.wav": wav_bytes(tone(21.0, rate), rate),
        "bad_text.wav": wav_bytes(tone(1.5, rate), rate),
        "ok_stereo44k.wav": wav_bytes(loud_stereo_44k, 44100),
        "ok_flac_named_wav.wav": wav_bytes(tone(1.2, 24000), 24000, fmt="FLAC"),
    }
    lines = good + [
        "bad_missing|This file does not exist.|This file does not exist.",
        "bad_empty|An empty file.|An empty file.",
        "bad_garbage|Not audio at all.|Not audio at all.",
        "bad_nan|Has a NaN sample.|Has a NaN sample.",
        "bad_silent|Pure digital silence.|Pure digital silence.",
        "bad_near_silent|Only faint noise.|Only faint noise.",
        "bad_short|Too short.|Too short.",
        "bad_long|Far too long.|Far too long.",
        "bad_text| |  ",
        "no pipe characters on this line",
        "ok_stereo44k|A stereo file at forty four kilohertz.|A stereo file at forty four kilohertz.|spk_x|en-us",
        "ok_flac_named_wav|Flac inside.|Flac inside.",
    ]
    return make_ljspeech(folder, lines, extra)


def test_every_bad_input_is_recorded_and_nothing_is_lost(ray_cluster, tmp_path):
    out = tmp_path / "store"
    stats = run(salted_corpus(tmp_path / "corpus"), out)
    reasons = reasons_by_id(out)
    assert reasons == {
        "bad_missing": cleaning.MISSING_FILE, "bad_empty": cleaning.EMPTY_FILE,
        "bad_garbage": cleaning.UNDECODABLE, "bad_nan": cleaning.NON_FINITE,
        "bad_silent": cleaning.SILENT, "bad_near_silent": cleaning.SILENT,
        "bad_short": cleaning.TOO_SHORT, "bad_long": cleaning.TOO_LONG,
        "bad_text": cleaning.EMPTY_TEXT, "no pipe characters on this line": cleaning.MALFORMED_ROW,
    }
    assert stats["input_rows"] == 18
    assert (stats["kept"], stats["rejected"], stats["malformed"]) == (8, 9, 1)
    assert stats["kept"] + stats["rejected"] + stats["malformed"] == stats["input_rows"]
    assert stats["rejected_by_reason"][cleaning.SILENT] == 2
    assert sum(stats["rejected_by_reason"].values()) == 10
    for reject in store.read_rejects(out):
        assert reject["source"].startswith(str(tmp_path / "corpus" / "metadata.csv") + ":")
        assert reject["status"] in ("rejected", "malformed") and reject["detail"]
    kept = {r["id"]: r for r in all_rows(out).to_pylist()}
    assert {"ok_stereo44k", "ok_flac_named_wav"} <= set(kept)
    assert kept["ok_stereo44k"]["speaker_id"] == "spk_x" and kept["ok_stereo44k"]["sample_rate"] == 22050
    assert kept["ok_flac_named_wav"]["speaker_id"] == "speaker0"  # the configured default


def test_output_must_be_empty_unless_overwrite(ray_cluster, tmp_path):
    corpus = make_ljspeech(tmp_path / "corpus", sample_lines(4))
    out = tmp_path / "store"
    first = run(corpus, out)
    with pytest.raises(OutputError, match="holds a finished feature store"):
        run(corpus, out)
    with pytest.raises(OutputError, match="not empty"):
        run(corpus, tmp_path / "corpus")
    (out / "train" / "stale.parquet").write_bytes(b"old run")
    second = run(corpus, out, "preprocess.overwrite=true")
    assert not (out / "train" / "stale.parquet").exists()
    assert second["splits"] == first["splits"] and second["vocabulary"] == first["vocabulary"]


def test_tiny_corpus_fills_every_split(ray_cluster, tmp_path):
    fractions = load_config().preprocess.split
    train_only = [line for line in sample_lines() if split_of(line.split("|")[0], fractions) == "train"][:3]
    out = tmp_path / "store"
    stats = run(make_ljspeech(tmp_path / "corpus", train_only), out)
    assert {s: v["utterances"] for s, v in stats["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    assert stats["rows_on_disk"] == {"train": 1, "val": 1, "test": 1}
    for split in SPLITS:
        assert store.read_split(str(out), split)["split"].to_pylist() == [split]


def test_jsonl_manifest_carries_codes_and_reference(ray_cluster, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    rows = []
    for i, line in enumerate(sample_lines(3, language="ms")):
        utt_id, text, _, speaker, language = line.split("|")
        (corpus / "audio" / f"{utt_id}.wav").write_bytes((SAMPLE / "wavs" / f"{utt_id}.wav").read_bytes())
        rows.append({"audio": f"audio/{utt_id}.wav", "text": text, "speaker_id": speaker,
                     "language": language, "ref_audio": "audio/ref.wav", "ref_text": "rujukan",
                     "audio_codes": [[i, 1, 2], [3, 4, 5]]})
    rows.append({"audio": "audio/x.wav", "text": "Sannu da zuwa.", "language": "ha"})
    (corpus / "audio" / "x.wav").write_bytes(wav_bytes(tone(1.0), 16000))
    lines = [json.dumps(r) for r in rows] + ['{"audio": "audio/y.wav", "text": 3}']
    (corpus / "train.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    stats = run(corpus, out)
    assert (stats["kept"], stats["malformed"], stats["input"]["format"]) == (4, 1, "jsonl")
    assert stats["languages"]["ha"]["g2p"] == "char"
    kept = {r["id"]: r for r in all_rows(out).to_pylist()}
    first = kept["audio/ms_spk_m_001"]
    assert first["audio_codes"] == [[0, 1, 2], [3, 4, 5]]
    assert first["ref_audio"] == str(corpus / "audio" / "ref.wav") and first["ref_text"] == "rujukan"
    assert kept["audio/x"]["phonemes"] == list("sannu") + [" ", "d", "a", " "] + list("zuwa") + ["."]
    assert reasons_by_id(out) == {"train.jsonl:5": cleaning.MALFORMED_ROW}


def test_hf_parquet_shards(ray_cluster, tmp_path):
    lines = sample_lines(5)
    records = [{"id": line.split("|")[0], "text": line.split("|")[1], "speaker_id": line.split("|")[3],
                "language": line.split("|")[4],
                "audio": {"bytes": (SAMPLE / "wavs" / f"{line.split('|')[0]}.wav").read_bytes(), "path": None}}
               for line in lines]
    records[4]["audio"] = {"bytes": b"\x00\x01junk", "path": None}
    shards = tmp_path / "hf"
    shards.mkdir()
    pq.write_table(pa.Table.from_pylist(records[:3]), shards / "train-00000-of-00002.parquet", row_group_size=2)
    pq.write_table(pa.Table.from_pylist(records[3:]), shards / "train-00001-of-00002.parquet")
    out = tmp_path / "store"
    stats = run(shards, out)
    assert (stats["input_rows"], stats["kept"], stats["rejected"]) == (5, 4, 1)
    assert stats["input"]["format"] == "hf-parquet"
    assert reasons_by_id(out) == {records[4]["id"]: cleaning.UNDECODABLE}
    assert sorted(all_rows(out)["id"].to_pylist()) == sorted(r["id"] for r in records[:4])


def _textgrid(phones: list[tuple[float, float, str]], end: float) -> str:
    items = "\n".join(f"{a}\n{b}\n\"{label}\"" for a, b, label in phones)
    return (f'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n{end}\n<exists>\n1\n'
            f'"IntervalTier"\n"phones"\n0\n{end}\n{len(phones)}\n{items}\n')


def test_mfa_alignments_give_durations_that_sum_to_the_mel(ray_cluster, tmp_path):
    import soundfile

    lines = sample_lines(4)
    corpus = make_ljspeech(tmp_path / "corpus", lines)
    aligned = tmp_path / "aligned"
    for line in lines[:2]:
        utt_id, speaker = line.split("|")[0], line.split("|")[3]
        seconds = soundfile.info(corpus / "wavs" / f"{utt_id}.wav").duration
        bounds = np.linspace(0.2, seconds - 0.25, 7)
        labels = ["DH", "AH0", "sp", "B", "ER1", "CH"]
        phones = [(0, 0.2, "")] + [(bounds[i], bounds[i + 1], labels[i]) for i in range(6)] + [(bounds[-1], seconds, "sil")]
        (aligned / speaker).mkdir(parents=True, exist_ok=True)
        (aligned / speaker / f"{utt_id}.TextGrid").write_text(_textgrid(phones, seconds))
    (aligned / f"{lines[2].split('|')[0]}.TextGrid").write_text("File type = \"ooTextFile\"\nbroken")
    out = tmp_path / "store"
    stats = run(corpus, out, f"preprocess.alignments={aligned}")
    assert stats["has_durations"] and stats["kept"] == 2
    assert reasons_by_id(out) == {lines[2].split("|")[0]: cleaning.BAD_ALIGNMENT,
                                  lines[3].split("|")[0]: cleaning.MISSING_ALIGNMENT}
    for row in all_rows(out).to_pylist():
        assert row["phonemes"] == ["DH", "AH0", "sp", "B", "ER1", "CH"]
        assert sum(row["durations"]) == row["n_frames"] and min(row["durations"]) >= 0
    assert {"DH", "ER1", "sp"} <= set(stats["vocabulary"])


def test_an_interrupted_run_of_other_input_or_settings_is_refused_with_what_changed(tmp_path):
    """The ledger of an interrupted run (as a killed run leaves it) is compared with the re-run:
    a changed setting or manifest is named, and nothing of the output is touched."""
    corpus = make_ljspeech(tmp_path / "corpus", sample_lines(4))
    out = str(tmp_path / "store")
    units = readers.plan(str(corpus), "ljspeech")
    ledger = progress.Ledger(out)
    assert ledger.open(progress.fingerprint(str(corpus), "ljspeech", units, load_config()), False) is False
    # The same command again resumes; scheduling settings may change between attempts.
    again = load_config(overrides=["preprocess.rows_per_task=7", "preprocess.num_cpus=0.5"])
    assert ledger.open(progress.fingerprint(str(corpus), "ljspeech", units, again), False) is True
    changed = load_config(overrides=["preprocess.f0_floor=70"])
    with pytest.raises(OutputError, match=r"preprocess.f0_floor: 65.0 -> 70.0"):
        run(corpus, out, "preprocess.f0_floor=70")
    metadata = corpus / "metadata.csv"
    metadata.write_text(metadata.read_text().replace("|", "| ", 1))
    with pytest.raises(OutputError, match=r"metadata.csv: contents changed \(4 -> 4 rows\)"):
        run(corpus, out)
    assert progress.differences(progress.fingerprint(str(corpus), "ljspeech", units, load_config()),
                                progress.fingerprint(str(corpus), "ljspeech", units, changed)) \
        == ["preprocess.f0_floor: 65.0 -> 70.0"]
    assert sorted(os.listdir(out)) == ["_progress"]


def test_unfinished_files_are_found_whatever_form_the_output_path_has(tmp_path, monkeypatch):
    """A resumed run deletes exactly the files no marker names, with the output given relative
    to the working directory (fsspec lists absolute paths) as well as absolute."""
    monkeypatch.chdir(tmp_path)
    for output in ("store", str(tmp_path / "store2")):
        for name in ("train/part-u0000000.parquet", "train/part-u0000008.parquet", "val/part-u0000008.parquet",
                     "train/part-rebalanced-00.parquet", "_progress/rejects/u0000000.jsonl",
                     "_progress/rejects/u0000008.jsonl"):
            os.makedirs(os.path.dirname(os.path.join(output, name)), exist_ok=True)
            open(os.path.join(output, name), "w").close()
        ledger = progress.Ledger(output)
        ledger.write_json("done/u0000000.json", {"units": [0], "parts": ["train/part-u0000000.parquet"],
                                                 "rejects": "rejects/u0000000.jsonl", "stats": {}})
        assert ledger.remove_unfinished() == 3
        left = sorted(os.path.relpath(os.path.join(d, f), output) for d, _, fs in os.walk(output) for f in fs)
        assert left == ["_progress/done/u0000000.json", "_progress/rejects/u0000000.jsonl",
                        "train/part-rebalanced-00.parquet", "train/part-u0000000.parquet"]


def test_code_switched_store_has_per_token_languages_and_particles(codeswitch_store):
    from tests.conftest import BAD_CODESWITCH_ROWS

    stats = json.loads(open(os.path.join(codeswitch_store, "stats.json")).read())
    assert stats["kept"] == 44 and stats["reconciles"]
    reasons = {r["id"]: (r["reason"], r["detail"]) for r in store.read_rejects(codeswitch_store)}
    assert set(reasons) == {row["id"] for row in BAD_CODESWITCH_ROWS}
    assert reasons["bad_tag_count"][0] == "bad_tags" and "3 tags for 5 words" in reasons["bad_tag_count"][1]
    assert reasons["bad_particle"][0] == "bad_tags" and "'lahh'" in reasons["bad_particle"][1]
    assert reasons["bad_language"][0] == "bad_tags" and "['fr']" in reasons["bad_language"][1]
    assert reasons["bad_tag_type"][0] == cleaning.MALFORMED_ROW and "word_langs" in reasons["bad_tag_type"][1]
    assert reasons["two_tag_lists"][0] == cleaning.MALFORMED_ROW
    # 12 code-switched sentences read by 2 speakers; the particles of the generator's sentences
    assert stats["code_switch"]["code_switched_utterances"] == 24
    assert {k: v for k, v in stats["code_switch"]["particle_words"].items() if v} == \
        {"lah": 6, "lor": 2, "leh": 2, "mah": 2, "meh": 2}
    languages = {name: entry["index"] for name, entry in stats["languages"].items()}
    assert set(languages) == {"en", "ms"}
    rows = {r["id"]: r for r in all_rows(codeswitch_store).to_pylist()}
    for row in rows.values():
        n = len(row["token_ids"])
        assert len(row["token_languages"]) == len(row["token_particles"]) == n
        assert row["n_languages"] == len(set(row["token_languages"]))
        assert row["code_switched"] == (row["n_languages"] > 1)
    # "Saya nak pergi shopping lah.": shopping in English, lah a Malay particle (type 1)
    row = next(r for r in rows.values() if r["normalized_text"] == "Saya nak pergi shopping lah."
               and r["speaker_id"] == "spk_m")                  # untagged: detected
    vocabulary = Vocabulary(stats["vocabulary"])
    from voxray.text import G2P

    english = G2P()("shopping", "en")
    ids = vocabulary.encode(english)
    start = next(i for i in range(len(row["token_ids"])) if row["token_ids"][i: i + len(ids)] == ids)
    assert set(row["token_languages"][start: start + len(ids)]) == {languages["en"]}
    assert set(row["token_languages"][:start - 1]) == {languages["ms"]}
    assert row["token_particles"][-4:] == [1, 1, 1, 0] and row["accent"] == "kl"    # l ˈ ɑː . (lah, then ".")
    monolingual = next(r for r in rows.values() if r["normalized_text"] == "Saya suka nasi lemak."
                       and not r["augmented"])
    assert not monolingual["code_switched"] and set(monolingual["token_particles"]) == {0}


def test_augmented_rows_are_train_rows_counted_apart(codeswitch_store):
    """preprocess.augment.copies=1: about half the train rows get a draw where a transform fired."""
    stats = json.loads(open(os.path.join(codeswitch_store, "stats.json")).read())
    rows = all_rows(codeswitch_store).to_pylist()
    made = [r for r in rows if r["augmented"]]
    originals = {r["id"]: r for r in rows if not r["augmented"]}
    assert len(originals) == stats["kept"] == 44 and stats["input_rows"] == 44 + 5 and stats["reconciles"]
    assert 5 <= len(made) == stats["augmented"]["utterances"] and sum(stats["rows_on_disk"].values()) == 44 + len(made)
    assert stats["splits"]["train"]["utterances"] == sum(r["split"] == "train" for r in originals.values())
    assert sum(stats["augmented"]["by_transform"].values()) >= len(made)
    for row in made:
        source_id, suffix = row["id"].split("@")
        source = originals[source_id]
        assert row["split"] == source["split"] == "train" and row["augmented"] == suffix
        assert row["token_ids"] == source["token_ids"] and row["token_languages"] == source["token_languages"]
        if suffix.startswith("speed"):
            factor = float(suffix.split("+")[0][5:])
            assert row["n_frames"] == pytest.approx(source["n_frames"] / factor, abs=2)
        else:
            assert row["n_frames"] == source["n_frames"] and row["audio"] != source["audio"]


def test_max_rows_keeps_the_inputs_first_rows_in_manifest_order():
    """preprocess.max_rows (voxray preprocess --max-rows): the units holding the first N rows, the
    last one cut; the rows read are exactly the manifest's first N."""
    units = readers.plan(str(SAMPLE), "ljspeech")
    first = readers.first_rows(units, 10)
    assert [readers.unit_rows(u) for u in first] == [8, 2] and readers.first_rows(units, 0) == units
    read = [item["id"] for unit in first for item in readers.read_unit(unit, with_audio=False)]
    assert read == [line.split("|")[0] for line in (SAMPLE / "metadata.csv").read_text().splitlines()[:10]]
    assert progress.fingerprint(str(SAMPLE), "ljspeech", first, load_config()) != \
        progress.fingerprint(str(SAMPLE), "ljspeech", units, load_config())     # a cut run is not resumed as a whole one


@pytest.mark.integration
def test_a_val_input_is_the_val_split(ray_cluster, tmp_path):
    """preprocess.val_input (voxray preprocess --val-input): its rows are val whatever their ids
    hash to; the input's rows go to train and test only."""
    from voxray import cli

    lines = (SAMPLE / "metadata.csv").read_text().splitlines()
    val = tmp_path / "val.jsonl"
    val.write_text("\n".join(json.dumps({"id": f"v_{fields[0]}", "audio": str(SAMPLE / "wavs" / f"{fields[0]}.wav"),
                                         "text": fields[1], "speaker_id": fields[3], "language": fields[4]})
                             for fields in (line.split("|") for line in lines[40:43])) + "\n")
    out = tmp_path / "store"
    assert cli.main(["preprocess", "--input", str(SAMPLE), "--output", str(out), "--max-rows", "12",
                     "--val-input", str(val)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_rows"] == 15 and stats["splits"]["val"]["utterances"] == 3
    assert sorted(store.read_split(str(out), "val", ["id"])["id"].to_pylist()) == sorted(
        f"v_{line.split('|')[0]}" for line in lines[40:43])
    assert not any(i.startswith("v_") for split in ("train", "test")
                   for i in store.read_split(str(out), split, ["id"])["id"].to_pylist())


def test_denoise_is_applied_and_counted(ray_cluster, tmp_path):
    """preprocess.denoise on three noisy recordings: every kept row is denoised, the store says by
    how much each noise floor dropped and stats.json counts them."""
    import soundfile

    from tests.data.test_cleaning import _noisy_recording

    lines = sample_lines(3)
    corpus = make_ljspeech(tmp_path / "corpus", lines)
    for line in lines:
        path = corpus / "wavs" / f"{line.split('|')[0]}.wav"
        speech, rate = soundfile.read(path, dtype="float32")
        noise = np.random.default_rng(1).normal(size=speech.shape).astype(np.float32) * 0.01
        soundfile.write(path, speech + noise, rate)
    stats = run(corpus, tmp_path / "store", "preprocess.denoise=0.9")
    assert stats["denoise"]["utterances"] == stats["kept"] == 3
    assert stats["denoise"]["noise_floor_lowered_db"] > 3
    lowered = all_rows(tmp_path / "store")["denoise_db"].to_pylist()
    assert len(lowered) == 3 and all(value > 3 for value in lowered)


def test_mfa_alignments_with_code_switching(ray_cluster, tmp_path):
    """The Malaysian plan's preprocessing: MFA TextGrids give the phones and their durations, the
    manifest's word tags (or detection) each phone's language and particle, by the word it lies
    in; a pause takes the language of the word before it; a TextGrid whose words do not match the
    text's is a bad alignment that says so."""
    import soundfile

    from tests.conftest import CODESWITCH

    rows = [json.loads(line) for line in (CODESWITCH / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [r for r in rows if r["id"] in ("cs_spk_f_001", "cs_spk_f_002")]
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    for row in chosen:
        row["audio"] = str(CODESWITCH / row["audio"])
        seconds = soundfile.info(row["audio"]).duration
        words = row["text"].rstrip(".").split()
        if row["id"] == "cs_spk_f_002":
            words = words[:-1]                                 # the TextGrid lost a word
        edges = np.linspace(0.1, seconds - 0.1, len(words) + 1)
        word_tier, phone_tier = [(0, 0.1, "")], [(0, 0.1, "")]
        for i, word in enumerate(words):
            a, b = edges[i], edges[i + 1]
            gap = (b - a) * 0.2 if i == 2 else 0.0               # a pause after the third word
            word_tier.append((a, b - gap, word.lower()))
            middle = (a + b - gap) / 2
            phone_tier += [(a, middle, f"{word[0].upper()}1"), (middle, b - gap, f"{word[-1].upper()}2")]
            if gap:
                word_tier.append((b - gap, b, ""))
                phone_tier.append((b - gap, b, "sp"))
        word_tier.append((edges[-1], seconds, ""))
        phone_tier.append((edges[-1], seconds, "sil"))
        tiers = [("words", word_tier), ("phones", phone_tier)]
        body = "".join(f'"IntervalTier"\n"{name}"\n0\n{seconds}\n{len(tier)}\n'
                       + "".join(f'{a}\n{b}\n"{label}"\n' for a, b, label in tier) for name, tier in tiers)
        (aligned / f"{row['id']}.TextGrid").write_text(
            f'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n{seconds}\n<exists>\n2\n{body}')
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    out = tmp_path / "store"
    stats = run(manifest, out, f"preprocess.alignments={aligned}", "preprocess.code_switch=ms,en")
    assert stats["kept"] == 1 and reasons_by_id(out) == {"cs_spk_f_002": cleaning.BAD_ALIGNMENT}
    row = all_rows(out).to_pylist()[0]
    languages = {info["index"]: name for name, info in stats["languages"].items()}
    assert row["phonemes"] == ["S1", "A2", "N1", "K2", "P1", "I2", "sp", "S1", "G2", "L1", "H2"]
    assert [languages[i] for i in row["token_languages"]] == ["ms"] * 7 + ["en", "en", "ms", "ms"]
    lah = stats["code_switch"]["particles"].index("lah") + 1
    assert row["token_particles"] == [0] * 9 + [lah, lah] and row["n_particles"] == 1
    assert sum(row["durations"]) == row["n_frames"] and row["code_switched"]
    rejected = json.loads((out / "rejected.jsonl").read_text().splitlines()[0])
    assert "the TextGrid has 4 spoken words, the text 5" in rejected["detail"]
