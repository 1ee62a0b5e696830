"""``voxray codec fit`` and ``voxray codec encode``, on Ray Data.

fit: Ray Data tasks read the train split, stack and normalise its mel frames and keep a random
share of them (about ``codec.fit_vectors`` in all: no process reads the whole store); a residual
vector quantizer (vector-quantize-pytorch: k-means initialised, EMA codebook updates, dead codes
restarted) learns from that sample on the driver; Ray Data tasks then encode and decode the val
split for the report: reconstruction mel L1 with the first 1..K codebooks, each level's usage.

encode: a copy of a store with ``audio_codes`` filled by any codec (one load per Ray Data actor)
and, with ``reconstruct_mels``, the ``mel`` column replaced by the codec's reconstruction (to
fine-tune a vocoder on what it will hear); the original store is untouched.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.codec.mel import MelCodec
from voxray.config import Config
from voxray.data import codes as code_stats
from voxray.data import derive, store

DEFAULT_CODEBOOKS, DEFAULT_CODEBOOK_SIZE = 8, 1024


def _template(stats: dict[str, Any], config: Config) -> MelCodec:
    """A codec with the store's normalisation and no codebooks yet: it stacks and normalises."""
    spec = AudioSpec(**stats["audio_spec"])
    mel = stats["features"]["mel"]
    return MelCodec(torch.zeros(1, 1, spec.n_mels * config.codec.stack_frames),
                    torch.tensor(mel["mean_per_channel"]), torch.tensor([max(s, 1e-3) for s in mel["std_per_channel"]]),
                    config.codec.stack_frames, spec)


def fit(data: str, output: str, config: Config) -> dict[str, Any]:
    """Fit the mel codec on DATA's train split, measure it on its val split, save it to OUTPUT."""
    from vector_quantize_pytorch import ResidualVQ

    from voxray.cluster import ensure_ray, say

    data, output = uri.absolute(data), uri.absolute(output)
    if uri.exists(uri.join(output, "codec.json")):
        raise FileExistsError(f"{output} already holds a codec; choose another --output")
    stats, section = derive.read_stats(data), config.codec
    template = _template(stats, config)
    n_codebooks = section.n_codebooks or DEFAULT_CODEBOOKS
    codebook_size = section.codebook_size or DEFAULT_CODEBOOK_SIZE
    ensure_ray()
    train = derive.split_dataset(data, "train", ["id", "mel"])
    if train is None:
        raise ValueError(f"the feature store {data} has no train split to fit on")
    available = stats["splits"]["train"]["audio_seconds"] * template.description["frame_rate"]
    vectors = _sample(train, template, min(1.0, section.fit_vectors / max(available, 1.0)), section.seed)
    if len(vectors) < codebook_size:
        raise ValueError(f"{len(vectors)} stacked frames sampled from {data}, fewer than codec.codebook_size="
                         f"{codebook_size}: raise codec.fit_vectors or use a smaller codebook")
    say(f"fitting {n_codebooks} x {codebook_size} codes on {len(vectors):,} stacked frames "
        f"({section.stack_frames} x {template.spec.n_mels} values) of {data}")
    torch.manual_seed(section.seed)
    rvq = ResidualVQ(dim=vectors.shape[1], num_quantizers=n_codebooks, codebook_size=codebook_size,
                     kmeans_init=True, kmeans_iters=10, decay=0.99,
                     threshold_ema_dead_code=section.dead_code_threshold)
    rvq.train()
    generator = torch.Generator().manual_seed(section.seed)
    for _ in range(section.fit_steps):
        picked = torch.randint(0, len(vectors), (min(section.batch_vectors, len(vectors)),), generator=generator)
        rvq(vectors[picked][None])
    codec = MelCodec(rvq.codebooks.detach().reshape(n_codebooks, codebook_size, -1), template.mean, template.std,
                     section.stack_frames, template.spec)
    codec.report = {**quality(data, codec), "fitted_on": data, "vectors": len(vectors), "steps": section.fit_steps}
    codec.save(output)
    return codec.report


def _sample(dataset, template: MelCodec, keep: float, seed: int) -> torch.Tensor:
    """A random share ``keep`` of the split's stacked, normalised frames, drawn in the tasks (each
    batch seeded by its first row's id, so the sample does not depend on the task layout)."""
    width = template.stack_frames * template.spec.n_mels

    def draw(batch: pa.Table) -> dict[str, list]:
        rows = store.arrow_rows(batch)
        vectors = torch.cat([template.vectors(row["mel"]) for row in rows]) if rows else torch.zeros(0, width)
        rng = np.random.default_rng([seed, *(ord(c) for c in rows[0]["id"][:16])] if rows else seed)
        return {"vector": list(vectors[torch.from_numpy(rng.random(len(vectors)) < keep)].numpy())}

    chosen = dataset.map_batches(draw, batch_format="pyarrow", batch_size=64).take_all()
    if not chosen:
        return torch.zeros(0, width)
    return torch.from_numpy(np.stack([row["vector"] for row in chosen]).astype(np.float32))


def quality(data: str, codec: MelCodec) -> dict[str, Any]:
    """Over the val split: mel L1 of the reconstruction from the first 1..K codebooks (natural-log
    mel, over the utterances' own frames) and each codebook's usage."""
    dataset = derive.split_dataset(data, "val", ["id", "mel", "n_frames"])
    n_codebooks, codebook_size, _ = codec.codebooks.shape
    if dataset is None:
        return {"val_frames": 0}

    def measure(batch: pa.Table) -> dict[str, list]:
        sums, frames = np.zeros(n_codebooks), 0
        counts = np.zeros((n_codebooks, codebook_size), dtype=np.int64)
        for row in store.arrow_rows(batch):
            mel = torch.from_numpy(np.asarray(row["mel"], dtype=np.float32))
            indices = codec.quantize(codec.vectors(mel))
            for levels in range(1, n_codebooks + 1):
                rebuilt = codec.to_mel(codec.reconstruct(indices, levels))[: len(mel)]
                sums[levels - 1] += float((rebuilt - mel).abs().mean(dim=1).sum())
            frames += len(mel)
            for k in range(n_codebooks):
                counts[k] += np.bincount(indices[:, k].numpy(), minlength=codebook_size)
        return {"sums": [sums], "frames": [frames], "counts": [counts.reshape(-1)]}

    parts = dataset.map_batches(measure, batch_format="pyarrow", batch_size=32).take_all()
    frames = sum(p["frames"] for p in parts)
    sums = sum(np.asarray(p["sums"]) for p in parts)
    counts = sum(np.asarray(p["counts"]) for p in parts).reshape(n_codebooks, codebook_size)
    return {"val_frames": int(frames),
            "val_mel_l1_by_codebooks": {str(k + 1): round(float(sums[k] / max(frames, 1)), 4) for k in range(n_codebooks)},
            "val_usage": code_stats.usage(counts)}


class Encoder:
    """A Ray Data transform: the codec's codes of each row in ``audio_codes`` (and its
    reconstructed mel in ``mel`` when asked)."""

    def __init__(self, codec_folder: str, reconstruct_mels: bool, sample_rate: int, use_gpu: bool = False) -> None:
        from voxray.codec import load_codec

        self.codec = load_codec(codec_folder, "cuda" if use_gpu else "cpu")
        self.reconstruct_mels = reconstruct_mels
        self.sample_rate = sample_rate

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = [{**row, "sample_rate": self.sample_rate}
                for row in store.arrow_rows(table.select(["id", "mel", "n_frames", "audio"]))]
        encoded = [self.codec.encode(row) for row in rows]
        width = self.codec.description["n_codebooks"]
        table = _replace(table, "audio_codes", store.ragged_column(encoded, pa.list_(pa.list_(pa.int32(), width))))
        if self.reconstruct_mels:
            mels = [self.codec.decode(codes).mel[: int(row["n_frames"])] for codes, row in zip(encoded, rows)]
            table = _replace(table, "mel", store.ragged_column(mels, table.schema.field("mel").type))
        return table


def _replace(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, pa.field(name, column.type), column)


def encode(codec_folder: str, data: str, output: str, *, reconstruct_mels: bool = False, actors: int = 1,
           batch_size: int = 32, overwrite: bool = False, use_gpu: bool = False) -> dict[str, Any]:
    """Write OUTPUT: DATA with the codec's codes (the codec description and code usage in its
    stats.json); returns the description with rows per split and usage. ``codec_folder``: a codec
    folder, or ``pretrained:KIND=FOLDER`` (``codec.pretrained``)."""
    from voxray.codec import load_codec, pretrained

    data, output = uri.absolute(data), uri.absolute(output)
    named = pretrained.parse(codec_folder)
    codec_folder = (f"{pretrained.PREFIX}{named[0]}={os.path.abspath(named[1])}" if named
                    else uri.absolute(codec_folder))
    codec = load_codec(codec_folder)
    stats = derive.read_stats(data)
    spec = AudioSpec(**stats["audio_spec"])
    if getattr(codec, "spec", None) is not None and spec != codec.spec:
        raise ValueError(f"the store's AudioSpec {stats['audio_spec']} differs from the codec's {codec.spec.model_dump()}")
    if reconstruct_mels and named:
        raise ValueError(f"--reconstruct-mels needs a codec that decodes to mels; {named[0]} decodes to a waveform")
    derive.prepare_output(output, overwrite)
    description = {**codec.description, "codec": codec_folder, "inferred": [], "length_tolerance": 0}
    stats = {**stats, "codec": description}
    if reconstruct_mels:
        stats["mels"] = {"reconstructed_by": codec_folder, "from_store": data}
    rows = derive.derive(data, output, lambda: Encoder(codec_folder, reconstruct_mels, spec.sample_rate, use_gpu),
                         stats, batch_size=batch_size, actors=actors, use_gpu=use_gpu)
    counts = np.zeros((codec.description["n_codebooks"], codec.description["codebook_size"]), dtype=np.int64)
    frames = sum(code_stats.count(store.read_part(path, ["audio_codes"]).column("audio_codes"), counts)
                 for split in rows for path in store.split_files(output, split))
    stats["codec"] = {**description, "code_frames": frames, "usage": code_stats.usage(counts)}
    uri.write_text(uri.join(output, "stats.json"), json.dumps(stats, indent=1, ensure_ascii=False))
    return {**stats["codec"], "rows": rows}
