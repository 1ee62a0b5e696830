"""``voxray predict-mels``: a copy of a feature store whose ``mel`` column is an acoustic model's
ground-truth-aligned prediction, to fine-tune a vocoder on the mels it will be given.

Every split goes through Ray Data batch inference (one model load per actor, a GPU per actor
when asked). The prediction is teacher-forced: the store's durations (or the model's own
alignment of the recorded mel, when it learned one), pitch and energy, so frame ``i`` of the
predicted mel lines up with samples ``i * hop ...`` of the stored audio. Everything else (audio,
text, labels) is kept; ``stats.json`` records which model predicted the mels.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.data import batching, store
from voxray.data.splits import SPLITS
from voxray.export import read_final
from voxray.models.acoustic import fastspeech2

COPIED = ("vocab.json", "config.yaml", "rejected.jsonl")


def label_maps(model_manifest: dict[str, Any], model_vocabulary: list[str], stats: dict[str, Any]
               ) -> dict[str, list[int]]:
    """Store index -> model index for tokens, speakers and languages, by name; an error naming
    the labels the model never saw."""
    def table(names: dict[str, dict]) -> list[str]:
        return [name for name, _ in sorted(names.items(), key=lambda item: item[1]["index"])]

    maps, unknown = {}, {}
    for column, store_names, model_names in (
            ("token_ids", list(stats["vocabulary"]), model_vocabulary),
            ("speaker_index", table(stats["speakers"]), model_manifest["speakers"]),
            ("language_index", table(stats["languages"]), model_manifest["languages"])):
        position = {name: i for i, name in enumerate(model_names)}
        missing = [name for name in store_names if name not in position]
        if missing:
            unknown[column] = missing
        maps[column] = [position.get(name, 0) for name in store_names]
    if unknown:
        raise ValueError("the acoustic model never saw these labels of the store: "
                         + "; ".join(f"{column}: {', '.join(map(str, names[:10]))}" for column, names in unknown.items()))
    return maps


class MelPredictor:
    """A Ray Data actor: loads the model once, then predicts the mels of each batch of rows."""

    def __init__(self, model: str, maps: dict[str, list[int]], use_gpu: bool) -> None:
        final = read_final(model, family="acoustic")
        self.model = fastspeech2.build(**final.manifest["build"])
        self.model.load_state_dict(final.weights)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.eval().to(self.device)
        self.maps = {column: np.asarray(lookup, dtype=np.int64) for column, lookup in maps.items()}
        self.n_mels = final.audio_spec.n_mels

    @torch.no_grad()
    def __call__(self, table: pa.Table) -> pa.Table:
        rows = store.arrow_rows(table.select(["id", "token_ids", "speaker_index", "language_index", "mel", "f0",
                                              "energy", "durations"]))
        mapped = [{**row, **{column: lookup[np.asarray(row[column], dtype=np.int64)]
                             for column, lookup in self.maps.items()}} for row in rows]
        batch = {k: (None if v is None else v.to(self.device)) for k, v in batching.collate(mapped).items()}
        out = self.model(batch["tokens"], batch["token_lengths"], batch["speakers"], batch["languages"],
                         batch["mels"], batch["mel_lengths"], batch["pitch"], batch["energy"], batch["durations"])
        lengths = batch["mel_lengths"].tolist()
        predicted = [out["mel"][i, : lengths[i]].float().cpu().numpy() for i in range(len(rows))]
        index = table.schema.get_field_index("mel")
        return table.set_column(index, table.schema.field(index),
                                store.ragged_column(predicted, table.schema.field(index).type))


def _predictor(model: str, maps: dict[str, list[int]], use_gpu: bool) -> type:
    """MelPredictor with its arguments inside the class (Ray ships a class with the task; keyword
    arguments would go through the object store, which Ray warns about for restartable actors)."""
    class Predictor(MelPredictor):
        def __init__(self) -> None:
            super().__init__(model, maps, use_gpu)

    return Predictor


def predict_mels(model: str, data: str, output: str, *, batch_size: int = 16, actors: int = 1,
                 use_gpu: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write OUTPUT (local or s3://) from DATA with predicted mels; returns rows per split."""
    import ray

    from voxray.cluster import ensure_ray

    data, output = uri.absolute(data), uri.absolute(output)
    final = read_final(model, family="acoustic")
    stats_path = uri.join(data, "stats.json")
    if not uri.exists(stats_path):
        raise FileNotFoundError(f"{data} is not a feature store (no stats.json); run voxray preprocess first")
    stats = json.loads(uri.read_text(stats_path))
    if AudioSpec(**stats["audio_spec"]) != final.audio_spec:
        raise ValueError(f"the store's AudioSpec {stats['audio_spec']} differs from the model's "
                         f"{final.audio_spec.model_dump()}")
    maps = label_maps(final.manifest, final.vocabulary.tokens, stats)
    if uri.exists(output) and not uri.is_empty_dir(output):
        if not overwrite:
            raise FileExistsError(f"{output} is not empty; choose another --output or pass --overwrite")
        uri.remove_tree(output)
    ensure_ray(cpus=actors + 1)
    env = uri.storage_env()
    for split in SPLITS:
        files = store.split_files(data, split)
        if not files:
            continue
        paths = [uri.filesystem(f)[1] if uri.is_remote(f) else f for f in files]
        dataset = ray.data.read_parquet(paths, filesystem=uri.pyarrow_filesystem(data),
                                        runtime_env={"env_vars": env} if env else None)
        predicted = dataset.map_batches(_predictor(uri.absolute(model), maps, use_gpu), batch_size=batch_size,
                                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                        num_gpus=1 if use_gpu else 0)
        target = store.split_dir(output, split)
        predicted.write_parquet(uri.filesystem(target)[1] if uri.is_remote(target) else target,
                                filesystem=uri.pyarrow_filesystem(output))
    for name in COPIED:
        if uri.exists(uri.join(data, name)):
            uri.write_bytes(uri.join(output, name), uri.read_bytes(uri.join(data, name)))
    stats = {**stats, "mels": {"predicted_by": uri.absolute(model), "teacher_forced": True, "from_store": data}}
    uri.write_text(uri.join(output, "stats.json"), json.dumps(stats, indent=1, ensure_ascii=False))
    return store.count_rows(output)
