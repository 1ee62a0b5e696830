import pytest

from voxray.labels import label_maps


def test_store_labels_map_to_the_models_by_name_and_unknown_ones_are_named():
    stats = {"vocabulary": ["<pad>", "a", "b"], "speakers": {"s2": {"index": 0}, "s1": {"index": 1}},
             "languages": {"en-us": {"index": 0}}}
    manifest = {"speakers": ["s1", "s2"], "languages": ["ms", "en-us"]}
    maps = label_maps(manifest, ["<pad>", "b", "a"], stats)
    assert maps == {"token_ids": [0, 2, 1], "speaker_index": [1, 0], "language_index": [1]}
    stats["speakers"]["s9"] = {"index": 2}
    stats["vocabulary"].append("ʒ")
    with pytest.raises(ValueError, match="token_ids: ʒ; speaker_index: s9"):
        label_maps(manifest, ["<pad>", "b", "a"], stats)
