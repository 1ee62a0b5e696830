import pytest

from voxray.codeswitch import CodeSwitch, TagError, phonemize, words_of
from voxray.text import G2P, WORD_BOUNDARY, espeak, normalize_text
from tests.conftest import CODESWITCH

needs_espeak = pytest.mark.skipif(espeak() is None, reason="libespeak-ng is not installed")
SWITCH = CodeSwitch(("ms", "en"))


def test_words_are_what_tags_count():
    assert words_of("Aiyo, I forgot to bawa wallet leh.") == ["Aiyo", "I", "forgot", "to", "bawa", "wallet", "leh"]
    assert words_of("it's a well-known fact!") == ["it's", "a", "well-known", "fact"]


def test_detection_against_the_generated_corpus_truth():
    """spk_f's rows carry the tags the audio was made from; spk_m's twins are detected."""
    import json

    rows = [json.loads(line) for line in (CODESWITCH / "manifest.jsonl").read_text().splitlines()]
    truth = {r["text"]: r for r in rows if "word_langs" in r}
    right = total = 0
    for row in rows:
        if "word_langs" in row:
            continue
        tagged = SWITCH.tag(normalize_text(row["text"]), row["language"])
        want = truth[row["text"]]["word_langs"]
        right += sum(w.language == lang for w, lang in zip(tagged, want))
        total += len(want)
    assert total == 120 and right / total >= 0.9      # 116 of 120 with lingua 2.1.1


def test_undecided_words_take_agreeing_neighbours_else_the_row_language():
    # "I" is a coin toss for lingua between Malay and English
    assert [w.language for w in SWITCH.tag("I think so", "ms")] == ["ms", "en", "en"]
    assert [w.language for w in SWITCH.tag("we I think", "ms")] == ["en", "en", "en"]
    # a particle is the row's, whatever its neighbours
    assert [w.language for w in SWITCH.tag("go shopping lah", "ms")][-1] == "ms"
    # the row's own language stands in for the listed one of the same language
    assert {w.language for w in SWITCH.tag("the weather is hot", "en-us")} == {"en-us"}


def test_manifest_tags_win_and_must_fit():
    words = SWITCH.tag("Jom makan lunch lah.", "ms", ["ms", None, "ms", "ms"], [None, "", "O", "lah"])
    assert [w.language for w in words] == ["ms", "ms", "ms", "ms"]       # given tags win, None is detected
    assert [w.particle for w in words] == [0, 0, 0, 1]
    with pytest.raises(TagError, match="2 tags for 4 words"):
        SWITCH.tag("Jom makan lunch lah.", "ms", ["ms", "ms"])
    with pytest.raises(TagError, match="'lahh'"):
        SWITCH.tag("Jom lah", "ms", None, [None, "lahh"])
    # the plan's samples tag a particle with the language "particle": the row's language, a particle type
    words = SWITCH.tag("Jom makan lunch lah.", "ms", ["ms", "ms", "en", "particle"])
    assert [(w.language, w.particle) for w in words] == [("ms", 0), ("ms", 0), ("en", 0), ("ms", 1)]
    assert SWITCH.tag("ok lor", "en-us", ["en-us", "Particle"], [None, None])[1].particle == SWITCH.particle_of("lor")
    with pytest.raises(TagError, match="'makan' is tagged 'particle' but is not in preprocess.particles"):
        SWITCH.tag("Jom makan", "ms", ["ms", "particle"])
    # without detection languages, untagged words are the row's
    assert [w.language for w in CodeSwitch().tag("a b", "ha", [None, "en"])] == ["ha", "en"]


@needs_espeak
def test_each_word_is_phonemised_in_its_own_language():
    g2p = G2P()
    text = "Saya suka shopping, lah."
    tagged = phonemize(text, SWITCH.tag(text, "ms"), "ms", g2p)
    expected = [*g2p("Saya suka", "ms"), WORD_BOUNDARY, *g2p("shopping", "en"), ",", WORD_BOUNDARY,
                *g2p("lah", "ms"), "."]
    assert tagged.tokens == expected
    english = len(g2p("shopping", "en"))
    start = len(g2p("Saya suka", "ms")) + 1
    assert tagged.languages[start: start + english] == ["en"] * english
    assert tagged.languages[start + english] == "en"                     # the comma follows an English word
    assert tagged.languages[:start] == ["ms"] * start and tagged.n_languages == 2
    assert [p for p in tagged.particles if p] == [1] * len(g2p("lah", "ms"))
