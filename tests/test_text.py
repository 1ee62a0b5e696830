import pytest

from voxray.text import (PAD_ID, SPECIAL_TOKENS, UNK_ID, WORD_BOUNDARY, G2P, Vocabulary,
                              char_tokens, espeak, normalize_text, segments)

needs_espeak = pytest.mark.skipif(espeak() is None, reason="libespeak-ng is not installed")


def test_normalize_text():
    assert normalize_text("  “Hello”\t\tworld —\nagain…  ") == '"Hello" world - again...'
    assert normalize_text("a\x00b\u200bc") == "abc"           # control / zero-width space dropped
    assert normalize_text("می\u200cخواهم") == "می\u200cخواهم"  # Persian ZWNJ kept
    assert normalize_text("ﻣﻦ") == "من"                          # Arabic presentation forms folded
    assert normalize_text(" \n\t ") == ""


def test_segments_keep_punctuation_and_word_internal_marks():
    assert segments("Hi, it's a well-known fact!") == [
        (False, "Hi"), (True, ","), (False, "it's a well-known fact"), (True, "!")]


def test_char_fallback():
    assert char_tokens("Sannu da, zuwa.") == ["s", "a", "n", "n", "u", " ", "d", "a", ",", " ",
                                               "z", "u", "w", "a", "."]


@needs_espeak
def test_espeak_phonemes_per_language():
    g2p = G2P("espeak")
    english = g2p("Hello, world.", "en-us")
    assert english[:5] == ["h", "ə", "l", "ˈ", "oʊ"]
    assert "," in english and english[-1] == "." and WORD_BOUNDARY in english
    malay = g2p("Saya suka nasi.", "ms")
    assert malay[:4] == ["s", "ˈ", "a", "j"]
    assert g2p.backend("en-us").startswith("espeak-ng")
    # espeak-ng expands digits itself
    assert len(g2p("I have 23 apples", "en-us")) > len(g2p("I have apples", "en-us")) + 5


@needs_espeak
def test_languages_espeak_lacks_fall_back_to_characters():
    g2p = G2P("espeak")
    assert g2p.backend("ha") == "char"
    assert g2p("Sannu da zuwa", "ha") == char_tokens("Sannu da zuwa")
    assert g2p.backend("am").startswith("espeak-ng")  # Amharic is supported
    assert G2P("char")("Hello", "en-us") == list("hello")


def test_vocabulary():
    vocab = Vocabulary.build(["b", "a", " ", "a", "<pad>"])
    assert vocab.tokens == [*SPECIAL_TOKENS, " ", "a", "b"]
    assert vocab.encode(["a", "z", "b"]) == [5, UNK_ID, 6]
    assert vocab.unknown(["a", "z"]) == ["z"]
    assert vocab.index["<pad>"] == PAD_ID
    assert Vocabulary.from_json(vocab.to_json()).tokens == vocab.tokens
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
