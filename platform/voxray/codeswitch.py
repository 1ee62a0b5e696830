"""Code-switched text: a language and a discourse-particle type for every word, then every word
phonemised by espeak-ng in its own language.

Malaysian speakers switch between Malay and English inside a sentence ("Saya nak pergi shopping
lah") and mark prosody with particles (lah, leh, lor, ...). A word's language comes from the
manifest when it says so (``word_langs``), else from lingua-language-detector (its models ship
inside the package; nothing is downloaded), restricted to the languages the user names. A word
lingua cannot tell apart (confidence margin below ``margin``: "I", numbers) takes the language
of the nearest decided words on both sides when they agree, else the row's language; a particle
takes the row's language (it belongs to the code-switched variety, not to either language).

Tokens that belong to no word (word boundaries, punctuation) carry the language of the word
before them (of the first word at the start) and no particle: the row's languages are its words'.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from voxray.text import G2P, join_owned, segments

# Malaysian English / Colloquial Malay discourse particles (the users' plan); config can replace it.
MALAYSIAN_PARTICLES = ("lah", "leh", "lor", "loh", "meh", "mah", "hor", "wor", "ah", "kan")
NO_PARTICLE_TAGS = ("", "o", "none")     # particle_tags entries that mean "not a particle" (BIO's "O")
# A word_langs entry that says "this word is a discourse particle" (the Malaysian plan's samples):
# the word takes the row's language and its particle type from the inventory.
PARTICLE_LANGUAGE = "particle"


class TagError(ValueError):
    """A manifest's per-word tags do not fit the row's words (the row is rejected with this)."""


def primary(language: str) -> str:
    """"en-us" -> "en": the part lingua knows languages by."""
    return language.split("-")[0].split("_")[0].lower()


def words_of(text: str) -> list[str]:
    """The written words of normalised text, in order (punctuation is not a word; "it's" and
    "well-known" are one word each): what a manifest's per-word tags count."""
    return [word for is_punct, chunk in segments(text) if not is_punct for word in chunk.split()]


@lru_cache(maxsize=8)
def _detector(primaries: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = [Language.from_iso_code_639_1(IsoCode639_1.from_str(code)) for code in primaries]
    return LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()


def check_languages(languages: Sequence[str]) -> None:
    """Raise ValueError naming a language lingua-language-detector does not know."""
    from lingua import IsoCode639_1

    for language in languages:
        try:
            IsoCode639_1.from_str(primary(language))
        except ValueError:
            raise ValueError(f"preprocess.code_switch: lingua-language-detector does not know {language!r} "
                             f"(ISO 639-1 {primary(language)!r}); give per-word languages in the manifest "
                             "(word_langs) instead") from None


@dataclass(frozen=True)
class Word:
    text: str
    language: str
    particle: int          # 1 + index in the particle inventory; 0: not a particle


@dataclass(frozen=True)
class CodeSwitch:
    """The per-word front end: ``languages`` to detect among (espeak-ng names, e.g. ("ms", "en")),
    the particle inventory, and the confidence margin below which a word is undecided."""

    languages: tuple[str, ...] = ()
    particles: tuple[str, ...] = MALAYSIAN_PARTICLES
    margin: float = 0.2

    def row_languages(self, row_language: str) -> tuple[str, ...]:
        """The languages a row's words may take: the row's own language stands in for the listed
        one with the same primary subtag (an en-us row reads its English words as en-us)."""
        return tuple(row_language if primary(row_language) == primary(name) else name for name in self.languages)

    def detect(self, words: Sequence[str], row_language: str) -> list[str]:
        """A language per word (see the module docstring for undecided words)."""
        candidates = self.row_languages(row_language)
        by_primary = {primary(name): name for name in candidates}
        detector = _detector(tuple(by_primary))
        decided: list[Optional[str]] = []
        for word in words:
            if self.particle_of(word):      # particles belong to neither language: the row's they are
                decided.append(None)
                continue
            scores = sorted(((c.value, c.language.iso_code_639_1.name.lower())
                             for c in detector.compute_language_confidence_values(word)), reverse=True)
            best, second = scores[0], scores[1] if len(scores) > 1 else (0.0, "")
            decided.append(by_primary[best[1]] if best[0] > 0 and best[0] - second[0] >= self.margin else None)
        fallback = row_language if row_language in candidates else candidates[0]
        languages = []
        for i, language in enumerate(decided):
            if language is None:
                before = next((x for x in reversed(decided[:i]) if x is not None), None)
                after = next((x for x in decided[i + 1:] if x is not None), None)
                language = before if before is not None and before == after and not self.particle_of(words[i]) \
                    else fallback
            languages.append(language)
        return languages

    def particle_of(self, word: str) -> int:
        word = word.lower()
        return self.particles.index(word) + 1 if word in self.particles else 0

    def tag(self, text: str, row_language: str, word_langs: Optional[list[Optional[str]]] = None,
            particle_tags: Optional[list[Optional[str]]] = None) -> list[Word]:
        """Normalised text -> its words with a language and a particle type each. ``word_langs`` and
        ``particle_tags`` (from the manifest, one per word; None entries are filled in) win over
        detection; a list of the wrong length raises TagError."""
        words = words_of(text)
        for name, tags in (("word_langs", word_langs), ("particle_tags", particle_tags)):
            if tags is not None and len(tags) != len(words):
                raise TagError(f"{name} has {len(tags)} tags for {len(words)} words: {words}")
        marked = {i for i, tag in enumerate(word_langs or []) if (tag or "").lower() == PARTICLE_LANGUAGE}
        for i in sorted(marked):
            if not self.particle_of(words[i]) and not (particle_tags and particle_tags[i]):
                raise TagError(f"word {words[i]!r} is tagged {PARTICLE_LANGUAGE!r} but is not in preprocess.particles "
                               f"{list(self.particles)} (give its type in particle_tags, or add it)")
        if marked:
            word_langs = [row_language if i in marked else tag for i, tag in enumerate(word_langs)]
        if word_langs is not None and all(word_langs):
            languages = list(word_langs)
        elif self.languages:
            detected = self.detect(words, row_language)
            languages = [given or found for given, found in zip(word_langs or [None] * len(words), detected)]
        else:
            languages = [given or row_language for given in (word_langs or [None] * len(words))]
        if particle_tags is None:
            particles = [self.particle_of(word) for word in words]
        else:
            particles = []
            for i, (word, tag) in enumerate(zip(words, particle_tags)):
                name = (tag or "").lower()
                if i in marked and not name:
                    particles.append(self.particle_of(word))
                elif name in NO_PARTICLE_TAGS:
                    particles.append(0)
                elif name in self.particles:
                    particles.append(self.particles.index(name) + 1)
                else:
                    raise TagError(f"particle tag {tag!r} (word {word!r}) is not in preprocess.particles "
                                   f"{list(self.particles)}")
        return [Word(w, lang, particle) for w, lang, particle in zip(words, languages, particles)]


@dataclass(frozen=True)
class Tagged:
    """Tokens with the language and particle type of each (see the module docstring)."""

    tokens: list[str]
    languages: list[str]
    particles: list[int]

    @classmethod
    def monolingual(cls, tokens: list[str], language: str) -> "Tagged":
        """Tokens all in one language, none a particle (a row read without per-word tags)."""
        return cls(tokens, [language] * len(tokens), [0] * len(tokens))

    @property
    def n_languages(self) -> int:
        return len(set(self.languages))


def phonemize(text: str, words: list[Word], row_language: str, g2p: G2P) -> Tagged:
    """Each word phonemised in its own language, punctuation kept (as ``G2P.__call__`` does for a
    whole row); ``words`` are ``CodeSwitch.tag``'s for ``text``."""
    items: list[tuple[bool, list[str], int]] = []
    index = 0
    for is_punct, chunk in segments(text):
        if is_punct:
            items.append((True, [chunk], -1))
            continue
        for _ in chunk.split():
            word = words[index]
            items.extend((False, symbols, index) for symbols in g2p.word(word.text, word.language))
            index += 1
    tokens, owners = join_owned(items)
    languages, current = [], words[0].language if words else row_language
    for owner in owners:
        current = words[owner].language if owner >= 0 else current
        languages.append(current)
    return Tagged(tokens, languages, [words[o].particle if o >= 0 else 0 for o in owners])
