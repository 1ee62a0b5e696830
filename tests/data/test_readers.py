import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from voxray.data.readers import InputError, detect_format, plan, read_unit
from tests.conftest import tone, wav_bytes


def items(input_uri, fmt, size=3, with_audio=True):
    return [i for unit in plan(str(input_uri), fmt, size) for i in read_unit(unit, with_audio)]


def test_ljspeech_three_and_five_columns(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "a1|Dr. Smith|Doctor Smith\n\na2|Plain text|\na3|Hi|Hi|spk9|ms\nbroken line\n|no id|x\n")
    got = items(tmp_path, "ljspeech", size=2)
    assert [i["id"] for i in got] == ["a1", "a2", "a3", "broken line", "metadata.csv:6"]
    assert got[0]["text"] == "Doctor Smith" and got[1]["text"] == "Plain text"
    assert got[0]["audio"] == str(tmp_path / "wavs" / "a1.wav")
    assert (got[2]["speaker_id"], got[2]["language"]) == ("spk9", "ms")
    assert got[0]["speaker_id"] is None and not got[0].get("malformed")
    assert got[3]["malformed"] and got[4]["malformed"]
    assert got[3]["source"].endswith("metadata.csv:5")  # blank lines keep line numbers honest


def test_jsonl_manifest(tmp_path):
    rows = [
        {"audio": "wavs/x.wav", "text": "hello", "speaker_id": "s1", "language": "en-us",
         "ref_audio": "ref/r.wav", "ref_text": "ref", "audio_codes": [[1, 2], [3, 4]]},
        {"audio": "/abs/y.wav", "text": "", "id": "custom"},
        {"audio": "z.wav"},                                  # no text
        {"audio": "c.wav", "text": "t", "audio_codes": [[1, 2], [3]]},
        {"audio": "c.wav", "text": "t", "audio_codes": [[1.5]]},
        [1, 2],
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    got = items(manifest, "jsonl")
    first = got[0]
    assert first["id"] == "wavs/x" and first["audio"] == str(tmp_path / "wavs" / "x.wav")
    assert first["ref_audio"] == str(tmp_path / "ref" / "r.wav")
    assert first["audio_codes"] == [[1, 2], [3, 4]] and first["speaker_id"] == "s1"
    assert got[1]["id"] == "custom" and got[1]["audio"] == "/abs/y.wav" and got[1]["text"] == ""
    reasons = [g.get("malformed") for g in got[2:]]
    assert all(reasons), reasons
    assert "text" in reasons[0] and "same" in reasons[1] and "integers" in reasons[2]
    assert "JSON object" in reasons[3] and reasons[4]
    assert got[6]["source"].endswith("m.jsonl:7")


def _shard(path, rows, schema=None):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=2)


def test_hf_parquet(tmp_path):
    audio = wav_bytes(tone(1.0), 16000)
    (tmp_path / "side.wav").write_bytes(audio)
    rows = [
        {"audio": {"bytes": audio, "path": "a.wav"}, "text": "one", "speaker_id": "s", "language": "ms"},
        {"audio": {"bytes": None, "path": "side.wav"}, "text": "two", "speaker_id": None, "language": None},
        {"audio": {"bytes": None, "path": None}, "text": "three", "speaker_id": None, "language": None},
    ]
    _shard(tmp_path / "train-00000.parquet", rows)
    got = items(tmp_path, "hf-parquet")
    assert [g["id"] for g in got] == ["train-00000-000000", "train-00000-000001", "train-00000-000002"]
    assert got[0]["audio_bytes"] == audio and got[0]["language"] == "ms"
    assert got[1]["audio"] == str(tmp_path / "side.wav")
    assert got[2]["audio_bytes"] == b""
    assert "audio_bytes" not in items(tmp_path, "hf-parquet", with_audio=False)[0]


def test_hf_parquet_bad_shards(tmp_path):
    _shard(tmp_path / "a.parquet", [{"audio": {"bytes": b"x", "path": None}}])  # no text column
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really parquet")
    got = items(tmp_path, "hf-parquet")
    assert len(got) == 2 and all(g["malformed"] for g in got)
    assert "text" in got[0]["malformed"] and "unreadable" in got[1]["malformed"]


def test_detect_format(tmp_path):
    (tmp_path / "lj").mkdir()
    (tmp_path / "lj" / "metadata.csv").write_text("a|b\n")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "m.jsonl").write_text("{}\n")
    (tmp_path / "pq").mkdir()
    _shard(tmp_path / "pq" / "x.parquet", [{"text": "a"}])
    assert detect_format(str(tmp_path / "lj")) == "ljspeech"
    assert detect_format(str(tmp_path / "js")) == "jsonl"
    assert detect_format(str(tmp_path / "pq")) == "hf-parquet"
    assert detect_format(str(tmp_path / "js" / "m.jsonl")) == "jsonl"
    with pytest.raises(InputError, match="does not exist"):
        detect_format(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot tell the format"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="needs"):
        plan(str(tmp_path / "js"), "ljspeech", 4)
