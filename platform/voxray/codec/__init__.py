"""Discrete audio codecs: what turns a store row into codes ``[T, n_codebooks]`` and codes back
into sound (a mel for a vocoder, or a waveform).

    base.py          the ``Codec`` interface (``description``, ``encode(row)``, ``decode(codes)``),
                     ``Decoded``, and ``PrecomputedCodec`` (codes that came with the manifest)
    mel.py           voxray's own: a residual vector quantizer over stacked, normalised log-mel
                     frames, decoded through a vocoder (or Griffin-Lim)
    fit.py           fitting it on Ray Data (``voxray codec fit``) and encoding a store with any
                     codec (``voxray codec encode``)
    plugin.py        a user's own codec class from a local Python file (never downloaded)
    pretrained.py    pretrained codecs from a local folder through transformers (Mimi, DAC,
                     EnCodec), named ``pretrained:KIND=FOLDER`` instead of a codec folder

``KINDS`` is the one place the kind a ``codec.json`` names becomes a class.
"""

from __future__ import annotations

import json
from typing import Any

from voxray import uri
from voxray.codec import mel, plugin, pretrained
from voxray.codec.base import Codec, Decoded, PrecomputedCodec

KINDS = {"mel": mel.MelCodec.load, "plugin": plugin.load}


def load_codec(folder: str, device: str = "cpu") -> Codec:
    """The codec saved in ``folder`` (local or s3://; its ``codec.json`` names the kind), or a
    pretrained one, ``pretrained:KIND=FOLDER`` (on ``device``)."""
    if pretrained.parse(folder):
        return pretrained.load(folder, device)
    path = uri.join(folder, "codec.json")
    if not uri.exists(path):
        raise FileNotFoundError(f"{folder} is not a codec (no codec.json); fit one with voxray codec fit")
    saved = json.loads(uri.read_text(path))
    if saved.get("kind") not in KINDS:
        raise ValueError(f"{path}: unknown codec kind {saved.get('kind')!r} (choose from {', '.join(KINDS)})")
    return KINDS[saved["kind"]](folder, saved)


def precomputed(store: str, decoder: Any = None) -> PrecomputedCodec:
    """The codec a store's manifest codes were made with, as its stats.json records it."""
    stats = json.loads(uri.read_text(uri.join(store, "stats.json")))
    if not stats.get("codec"):
        raise ValueError(f"the feature store {store} has no audio codes")
    return PrecomputedCodec(stats["codec"], decoder)


__all__ = ["Codec", "Decoded", "KINDS", "PrecomputedCodec", "load_codec", "precomputed"]
