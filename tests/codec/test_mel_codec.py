"""voxray's mel codec: a residual VQ fitted on the sample store with Ray Data, a store encoded
with it, stored codes decoded through Griffin-Lim and through a vocoder, all from the CLI; the
codec interface (mel codec, precomputed codes, a plugin from a local file)."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import soundfile
import torch

from tests.conftest import CODEC_FIT
from voxray import cli
from voxray.audio import AudioSpec
from voxray.codec import PrecomputedCodec, load_codec, precomputed
from voxray.codec.mel import MelCodec
from voxray.data.store import arrow_rows, count_rows, read_split



def test_residual_levels_add_up_and_round_trip():
    """Codebooks holding the exact residuals of a vector: its codes decode to it, level by level."""
    spec = AudioSpec()
    mean, std = torch.zeros(80), torch.ones(80)
    mel = torch.randn(8, 80)                                   # two stacked vectors of 4 frames
    vectors = mel.reshape(2, 320)
    coarse = torch.stack([vectors[0] * 0.9, vectors[1] * 0.9, torch.full((320,), 50.0)])
    fine = torch.stack([vectors[0] * 0.1, vectors[1] * 0.1, torch.full((320,), -50.0)])
    codec = MelCodec(torch.stack([coarse, fine]), mean, std, 4, spec)
    codes = codec.encode({"mel": mel.numpy()})
    assert codes.tolist() == [[0, 0], [1, 1]] and codes.dtype == np.int32
    assert np.allclose(codec.decode(codes).mel, mel.numpy(), atol=1e-5)
    assert codec.description == {"name": "voxray-mel-rvq", "n_codebooks": 2, "codebook_size": 3,
                                 "frame_rate": round(22050 / 1024, 4)}
    padded = codec.encode({"mel": mel[:6].numpy()})            # 6 frames -> 2 code frames, padded with silence
    assert padded.shape == (2, 2)
    with pytest.raises(ValueError, match=r"this codec makes \[T, 2\]"):
        codec.decode(np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        codec.decode(np.full((3, 2), 3))


def test_a_codec_plugin_from_a_local_file(tmp_path):
    (tmp_path / "mycodec.py").write_text(textwrap.dedent('''
        import numpy as np
        from voxray.codec.base import Decoded

        class Loudness:
            """Codes: each frame's mean mel level, rounded; decodes to flat mel frames."""
            def __init__(self, folder, levels):
                self.levels = levels
                self.description = {"name": "loudness", "n_codebooks": 1, "codebook_size": levels,
                                    "frame_rate": 86.13}
            def encode(self, row):
                level = np.clip(np.round(row["mel"].mean(axis=1) + self.levels / 2), 0, self.levels - 1)
                return level.astype(np.int32)[:, None]
            def decode(self, codes):
                return Decoded(mel=np.repeat(codes.astype(np.float32) - self.levels / 2, 80, axis=1))
    '''))
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "codec.json").write_text(json.dumps({"kind": "plugin", "file": str(tmp_path / "mycodec.py"),
                                                   "class": "Loudness", "options": {"levels": 32}}))
    codec = load_codec(str(folder))
    codes = codec.encode({"mel": np.full((5, 80), -3.0)})
    assert codes.tolist() == [[13]] * 5 and codec.decode(codes).mel.shape == (5, 80)
    (folder / "codec.json").write_text(json.dumps({"kind": "plugin", "file": "s3://bucket/mycodec.py",
                                                   "class": "Loudness"}))
    with pytest.raises(ValueError, match="absolute local path"):
        load_codec(str(folder))
    (folder / "codec.json").write_text(json.dumps({"kind": "encodec"}))
    with pytest.raises(ValueError, match="unknown codec kind 'encodec'"):
        load_codec(str(folder))
    manifest_codes = PrecomputedCodec({"name": "qwen3-tts-12hz", "n_codebooks": 16, "codebook_size": 2048,
                                       "frame_rate": 12.5})
    with pytest.raises(ValueError, match="needs their codec's decoder"):
        manifest_codes.decode(np.zeros((3, 16), dtype=int))
    assert PrecomputedCodec(manifest_codes.description, codec).decode(codes).mel.shape == (5, 80)


@pytest.mark.integration
def test_fit_records_quality_that_improves_with_every_codebook(codec_folder, capsys):
    saved = json.loads(open(f"{codec_folder}/codec.json").read())
    assert saved["kind"] == "mel" and saved["description"]["n_codebooks"] == 4
    report = saved["report"]
    l1 = [report["val_mel_l1_by_codebooks"][str(k)] for k in range(1, 5)]
    assert all(a > b for a, b in zip(l1, l1[1:])), l1
    assert l1[-1] < 0.85 * l1[0] and report["val_frames"] > 500
    assert all(u["used"] > 8 for u in report["val_usage"])
    assert 700 < report["vectors"] < 1300            # a sample of the train split's ~1360 stacked frames
    with pytest.raises(FileExistsError):
        from voxray.codec.fit import fit
        from voxray.config import load_config

        fit(codec_folder.replace("codec/codec", "codec/x"), codec_folder, load_config(overrides=CODEC_FIT))


@pytest.mark.integration
def test_encode_a_store_and_decode_its_codes(sample_store, codec_folder, codes_store, vocoder_run, tmp_path, capsys):
    encoded = codes_store
    assert count_rows(encoded) == count_rows(sample_store)
    stats = json.loads(open(f"{encoded}/stats.json").read())
    assert stats["codec"]["name"] == "voxray-mel-rvq" and stats["codec"]["frame_rate"] == pytest.approx(21.533, abs=1e-3)
    assert len(stats["codec"]["usage"]) == 4 and stats["codec"]["code_frames"] > 0
    rows = arrow_rows(read_split(encoded, "test"))
    original = {r["id"]: r for r in arrow_rows(read_split(sample_store, "test"))}
    for row in rows:
        assert row["audio_codes"].shape == (math.ceil(row["n_frames"] / 4), 4)
        assert row["audio_codes"].dtype == np.int32 and np.array_equal(row["mel"], original[row["id"]]["mel"])
    assert arrow_rows(read_split(sample_store, "test"))[0]["audio_codes"] is None       # the original untouched
    utterance = rows[0]["id"]
    for extra, through in [([], "Griffin-Lim"), (["--vocoder", f"{vocoder_run}/final"], "vocoder")]:
        out = tmp_path / f"{through}.wav"
        assert cli.main(["codec", "decode", "--codec", codec_folder, "--data", encoded, "--id", utterance,
                         "--out", str(out), *extra]) == 0
        assert through in capsys.readouterr().out
        audio, rate = soundfile.read(out)
        assert rate == 22050 and len(audio) == rows[0]["n_frames"] * 256 and np.isfinite(audio).all()
        assert np.abs(audio).max() > 1e-3
    assert cli.main(["codec", "decode", "--codec", "precomputed", "--data", encoded, "--id", utterance,
                     "--out", str(tmp_path / "x.wav")]) == 2
    assert "needs their codec's decoder" in capsys.readouterr().err
    assert precomputed(encoded).description["n_codebooks"] == 4

    rebuilt = str(tmp_path / "rebuilt")                 # mels a vocoder fine-tunes on: the codec's own
    assert cli.main(["codec", "encode", "--codec", codec_folder, "--data", sample_store, "--output", rebuilt,
                     "--reconstruct-mels"]) == 0
    row = arrow_rows(read_split(rebuilt, "test"))[0]
    target = original[row["id"]]["mel"]
    assert row["mel"].shape == target.shape and 0 < np.abs(row["mel"] - target).mean() < 1.0
