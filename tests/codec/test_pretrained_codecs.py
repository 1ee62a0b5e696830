"""Pretrained codecs through their own packages' classes (transformers' Mimi, DAC, EnCodec;
qwen_tts's 12 Hz tokenizer), loaded from local folders in the published layout: tiny random
models of the real classes, built from their own config classes and written with
``save_pretrained`` (no download). Encoding resamples the store's
audio to the codec's rate; decoding gives the codec's rate back and synthesis resamples it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile

from tests.conftest import SAMPLE
from voxray import cli
from voxray.audio import AudioSpec
from voxray.codec import load_codec, pretrained
from voxray.data.store import arrow_rows, read_split
from voxray.synthesize import codes_to_audio

BOOKS = {"mimi": 4, "dac": 3, "encodec": 6, "qwen3-tts-12hz": 4}


@pytest.fixture(scope="session")
def codec_folders(tmp_path_factory) -> dict[str, str]:
    """Tiny Mimi (24 kHz, 12.5 Hz), DAC (16 kHz), EnCodec (24 kHz, 75 Hz) and Qwen3-TTS 12 Hz
    tokenizer (24 kHz, 12.5 Hz; with its feature extractor) folders."""
    import torch
    from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel, MimiConfig, MimiModel

    from voxray.models.pretrained.tiny import MIMI_TINY, qwen_tokenizer_folder

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pretrained-codecs")
    models = {
        "mimi": MimiModel(MimiConfig(num_quantizers=BOOKS["mimi"], **MIMI_TINY)),
        "dac": DacModel(DacConfig(encoder_hidden_size=8, decoder_hidden_size=16, n_codebooks=BOOKS["dac"],
                                  codebook_size=64, codebook_dim=4, hidden_size=32)),
        "encodec": EncodecModel(EncodecConfig(hidden_size=16, num_filters=4, codebook_size=64, num_lstm_layers=1,
                                              target_bandwidths=[1.5, 3.0])),
    }
    folders = {}
    for kind, model in models.items():
        model.save_pretrained(root / kind)
        folders[kind] = str(root / kind)
    folders["qwen3-tts-12hz"] = qwen_tokenizer_folder(str(root / "qwen3-tts-12hz"), BOOKS["qwen3-tts-12hz"])
    return folders


@pytest.mark.parametrize("kind", list(BOOKS))
def test_encode_and_decode_at_the_codecs_own_rate(codec_folders, kind):
    audio, rate = soundfile.read(SAMPLE / "wavs" / "en-us_spk_f_001.wav", dtype="float32")
    codec = load_codec(f"pretrained:{kind}={codec_folders[kind]}")
    described = codec.description
    assert described["n_codebooks"] == BOOKS[kind] and described["codebook_size"] == 64
    assert described["sample_rate"] == (16000 if kind == "dac" else 24000) and described["kind"] == "pretrained"
    codes = codec.encode({"audio": audio, "sample_rate": rate})
    seconds = len(audio) / rate
    assert codes.dtype == np.int32 and codes.shape[1] == BOOKS[kind]
    assert abs(len(codes) - seconds * described["frame_rate"]) <= 2, (len(codes), seconds)
    assert codes.min() >= 0 and codes.max() < 64
    decoded = codec.decode(codes)
    assert decoded.sample_rate == described["sample_rate"] and decoded.mel is None
    assert abs(len(decoded.audio) / decoded.sample_rate - seconds) < 0.2
    assert np.abs(decoded.audio).max() > 1e-3            # audible after 16-bit writing, as synthesis writes it
    spec = AudioSpec()                            # the store's 22.05 kHz: synthesis resamples the codec's audio
    heard = codes_to_audio(codec, codes, spec=spec)
    assert abs(len(heard) / spec.sample_rate - len(decoded.audio) / decoded.sample_rate) < 0.01
    with pytest.raises(ValueError, match=f"decodes \\[T, {BOOKS[kind]}\\] codes"):
        codec.decode(codes[:, :-1])


def test_folders_that_are_not_the_named_codec_are_refused(codec_folders, tmp_path):
    with pytest.raises(ValueError, match="write pretrained:KIND=FOLDER"):
        load_codec("pretrained:soundstream=/models/x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_codec(f"pretrained:mimi={tmp_path / 'absent'}")
    with pytest.raises(ValueError, match="holds a 'dac' model, not mimi"):
        load_codec(f"pretrained:mimi={codec_folders['dac']}")
    partial = tmp_path / "no-weights"
    partial.mkdir()
    shutil.copy(os.path.join(codec_folders["mimi"], "config.json"), partial)
    with pytest.raises(FileNotFoundError, match=r"\*\.safetensors missing"):
        load_codec(f"pretrained:mimi={partial}")
    no_extractor = tmp_path / "qwen-tokenizer"
    shutil.copytree(codec_folders["qwen3-tts-12hz"], no_extractor)
    (no_extractor / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json missing"):
        load_codec(f"pretrained:qwen3-tts-12hz={no_extractor}")
    chunked = tmp_path / "encodec-48k"
    shutil.copytree(codec_folders["encodec"], chunked)
    config = json.loads((chunked / "config.json").read_text())
    (chunked / "config.json").write_text(json.dumps({**config, "chunk_length_s": 1.0, "overlap": 0.01}))
    with pytest.raises(ValueError, match="per-chunk scales"):
        load_codec(f"pretrained:encodec={chunked}")


def test_encode_a_store_with_mimi_from_the_cli(codec_folders, sample_store, tmp_path, capsys):
    """Ray Data actors encode every row; the store records the codec; stored codes decode through it."""
    spec = f"pretrained:mimi={codec_folders['mimi']}"
    output = str(tmp_path / "codes")
    assert cli.main(["codec", "encode", "--codec", spec, "--data", sample_store, "--output", output]) == 0
    assert "4 x 64 at 12.5 Hz" in capsys.readouterr().out
    described = json.loads(open(os.path.join(output, "stats.json")).read())["codec"]
    assert described["codec"] == spec and described["sample_rate"] == 24000 and described["folder"] == codec_folders["mimi"]
    rows = list(arrow_rows(read_split(output, "val", ["id", "audio_codes", "audio"])))
    assert rows and all(np.asarray(r["audio_codes"]).shape[1] == 4 for r in rows)
    seconds = len(rows[0]["audio"]) / AudioSpec().sample_rate
    assert abs(len(rows[0]["audio_codes"]) - seconds * 12.5) <= 2
    wav = str(tmp_path / "decoded.wav")
    assert cli.main(["codec", "decode", "--codec", spec, "--data", output, "--id", rows[0]["id"], "--out", wav]) == 0
    decoded, rate = soundfile.read(wav)
    assert rate == AudioSpec().sample_rate and abs(len(decoded) / rate - seconds) < 0.2
    assert cli.main(["codec", "encode", "--codec", spec, "--data", sample_store, "--output", str(tmp_path / "m"),
                     "--reconstruct-mels"]) == 2
    assert "decodes to a waveform" in capsys.readouterr().err
    assert pretrained.parse("out/codec") is None
