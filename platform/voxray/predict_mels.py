"""``voxray predict-mels``: a copy of a feature store whose ``mel`` column is an acoustic model's
ground-truth-aligned prediction, to fine-tune a vocoder on the mels it will be given.

Every split goes through Ray Data batch inference (one model load per actor, a GPU per actor
when asked). The prediction is teacher-forced: the store's durations (or the model's own
alignment of the recorded mel, when it learned one), pitch and energy, so frame ``i`` of the
predicted mel lines up with samples ``i * hop ...`` of the stored audio. Everything else (audio,
text, labels) is kept; ``stats.json`` records which model predicted the mels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from voxray import uri
from voxray.audio import AudioSpec
from voxray.data import batching, derive, store
from voxray.export import read_final
from voxray.labels import label_maps
from voxray.models.acoustic import fastspeech2


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
        per_token = [c for c in store.PER_TOKEN_COLUMNS if c in table.column_names]
        rows = store.arrow_rows(table.select(["id", "token_ids", "speaker_index", "language_index", "mel", "f0",
                                              "energy", "durations", *per_token]))
        maps = {**self.maps, **({"token_languages": self.maps["language_index"]} if per_token else {})}
        mapped = [{**row, **{column: lookup[np.asarray(row[column], dtype=np.int64)]
                             for column, lookup in maps.items()}} for row in rows]
        batch = {k: (None if v is None else v.to(self.device)) for k, v in batching.collate(mapped).items()}
        out = self.model(batch["tokens"], batch["token_lengths"], batch["speakers"], batch["languages"],
                         batch["mels"], batch["mel_lengths"], batch["pitch"], batch["energy"], batch["durations"],
                         batch["token_languages"], batch["token_particles"])
        lengths = batch["mel_lengths"].tolist()
        predicted = [out["mel"][i, : lengths[i]].float().cpu().numpy() for i in range(len(rows))]
        index = table.schema.get_field_index("mel")
        return table.set_column(index, table.schema.field(index),
                                store.ragged_column(predicted, table.schema.field(index).type))


def predict_mels(model: str, data: str, output: str, *, batch_size: int = 16, actors: int = 1,
                 use_gpu: bool = False, overwrite: bool = False) -> dict[str, int]:
    """Write OUTPUT (local or s3://) from DATA with predicted mels; returns rows per split."""
    data, output, model = uri.absolute(data), uri.absolute(output), uri.absolute(model)
    final = read_final(model, family="acoustic")
    stats = derive.read_stats(data)
    if AudioSpec(**stats["audio_spec"]) != final.audio_spec:
        raise ValueError(f"the store's AudioSpec {stats['audio_spec']} differs from the model's "
                         f"{final.audio_spec.model_dump()}")
    maps = label_maps(final.manifest, final.vocabulary.tokens, stats)
    derive.prepare_output(output, overwrite)
    stats = {**stats, "mels": {"predicted_by": model, "teacher_forced": True, "from_store": data}}
    return derive.derive(data, output, lambda: MelPredictor(model, maps, use_gpu), stats, batch_size=batch_size,
                         actors=actors, use_gpu=use_gpu)
