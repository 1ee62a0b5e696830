"""Text normalisation, grapheme-to-phoneme conversion and the token vocabulary.

Phonemes come from libespeak-ng (called in-process through ctypes: ~0.1 ms per sentence,
where a subprocess costs ~10 ms) for the row's language; languages espeak-ng lacks (Hausa,
for one) fall back to character tokens. Punctuation is kept as tokens because it drives pauses,
and words are separated by a word-boundary token.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

WORD_BOUNDARY = " "
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
STRESS_MARKS = ("ˈ", "ˌ")
_ZWNJ = "\u200c"  # zero-width non-joiner: part of Persian spelling, not noise
_REPLACEMENTS = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "«": '"',
                               "»": '"', "–": "-", "—": "-", "‐": "-"})
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)?\)")


def normalize_text(text: str) -> str:
    """NFKC, unified quotes and dashes, no control characters, single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_REPLACEMENTS)
    text = "".join(
        ch for ch in text
        if ch == _ZWNJ or ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    return " ".join(text.split())


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P") and ch not in "'-"


def segments(text: str) -> list[tuple[bool, str]]:
    """Split normalised text into (is_punctuation, chunk) runs."""
    runs: list[tuple[bool, str]] = []
    for ch in text:
        punct = _is_punct(ch)
        if runs and runs[-1][0] == punct and not punct:
            runs[-1] = (False, runs[-1][1] + ch)
        else:
            runs.append((punct, ch))
    return [(p, c) if p else (p, c.strip()) for p, c in runs if p or c.strip()]


def _join_words(items: list[tuple[bool, list[str]]]) -> list[str]:
    """Words (lists of symbols) and punctuation -> one token list with word boundaries."""
    return join_owned([(is_punct, symbols, -1) for is_punct, symbols in items])[0]


def join_owned(items: list[tuple[bool, list[str], int]]) -> tuple[list[str], list[int]]:
    """``_join_words`` that also says which item each token came from: items are
    (is_punctuation, symbols, owner); word boundaries get owner -1."""
    tokens: list[str] = []
    owners: list[int] = []
    for is_punct, symbols, owner in items:
        if not is_punct and tokens and tokens[-1] != WORD_BOUNDARY:
            tokens.append(WORD_BOUNDARY)
            owners.append(-1)
        tokens.extend(symbols)
        owners.extend([owner] * len(symbols))
        if is_punct:
            tokens.append(WORD_BOUNDARY)
            owners.append(-1)
    while tokens and tokens[-1] == WORD_BOUNDARY:
        tokens.pop()
        owners.pop()
    return tokens, owners


def char_tokens(text: str) -> list[str]:
    """Character-level fallback: lower-cased letters per word, punctuation kept."""
    items: list[tuple[bool, list[str]]] = []
    for is_punct, chunk in segments(text):
        if is_punct:
            items.append((True, [chunk]))
        else:
            items.extend((False, list(word.lower())) for word in chunk.split())
    return _join_words(items)


class EspeakError(RuntimeError):
    pass


class Espeak:
    """libespeak-ng through ctypes; one per process (the library keeps global state)."""

    _IPA = 0x02
    _SEPARATOR = "_"

    def __init__(self, library: Optional[str] = None) -> None:
        name = library or os.environ.get("VOXRAY_ESPEAK_LIBRARY") or ctypes.util.find_library(
            "espeak-ng"
        )
        if not name:
            raise EspeakError("libespeak-ng not found (install the espeak-ng package)")
        try:
            self._lib = ctypes.cdll.LoadLibrary(name)
        except OSError as exc:
            raise EspeakError(f"cannot load {name}: {exc}") from exc
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Info.restype = ctypes.c_char_p
        # AUDIO_OUTPUT_SYNCHRONOUS = 2; espeakINITIALIZE_DONT_EXIT = 0x8000.
        if self._lib.espeak_Initialize(2, 0, None, 0x8000) < 0:
            raise EspeakError("espeak_Initialize failed (is espeak-ng-data installed?)")
        self.version = (self._lib.espeak_Info(None) or b"?").decode()
        self._lock = threading.Lock()
        self._voice: Optional[str] = None
        self._supported: dict[str, bool] = {}

    def supports(self, language: str) -> bool:
        if language not in self._supported:
            with self._lock:
                self._supported[language] = self._set_voice(language)
        return self._supported[language]

    def _set_voice(self, language: str) -> bool:
        if self._voice == language:
            return True
        ok = self._lib.espeak_SetVoiceByName(language.encode()) == 0
        self._voice = language if ok else None
        return ok

    def words(self, text: str, language: str) -> list[list[str]]:
        """Phoneme symbols per word; stress marks become symbols of their own."""
        flags = self._IPA | (ord(self._SEPARATOR) << 8)
        with self._lock:
            if not self._set_voice(language):
                raise EspeakError(f"espeak-ng has no voice for language {language!r}")
            buffer = ctypes.c_char_p(text.encode("utf-8"))
            pointer = ctypes.pointer(buffer)
            clauses = []
            while pointer.contents.value:
                clauses.append((self._lib.espeak_TextToPhonemes(pointer, 1, flags) or b"").decode())
        words = []
        for word in _LANGUAGE_SWITCH.sub("", " ".join(clauses)).split():
            symbols: list[str] = []
            for phone in word.split(self._SEPARATOR):
                while phone[:1] in STRESS_MARKS and phone:
                    symbols.append(phone[0])
                    phone = phone[1:]
                if phone:
                    symbols.append(phone)
            if symbols:
                words.append(symbols)
        return words


@lru_cache(maxsize=1)
def espeak() -> Optional[Espeak]:
    """The process's espeak-ng, or None when the library is missing."""
    try:
        return Espeak()
    except EspeakError:
        return None


@dataclass(frozen=True)
class G2P:
    """Text -> phoneme tokens for a language; ``backend`` says which path a language takes."""

    mode: str = "espeak"  # "espeak" | "char"

    def backend(self, language: str) -> str:
        engine = espeak() if self.mode == "espeak" else None
        if engine is not None and engine.supports(language):
            return f"espeak-ng {engine.version}"
        return "char"

    def word(self, word: str, language: str) -> list[list[str]]:
        """One written word in ``language`` -> its phoneme words (espeak-ng may read one written
        word as several: "23" -> "twenty three"); characters where espeak-ng has no voice."""
        engine = espeak() if self.mode == "espeak" else None
        if engine is None or not engine.supports(language):
            return [list(word.lower())]
        return engine.words(word, language)

    def __call__(self, text: str, language: str) -> list[str]:
        engine = espeak() if self.mode == "espeak" else None
        if engine is None or not engine.supports(language):
            return char_tokens(text)
        items: list[tuple[bool, list[str]]] = []
        for is_punct, chunk in segments(text):
            if is_punct:
                items.append((True, [chunk]))
            else:
                items.extend((False, word) for word in engine.words(chunk, language))
        return _join_words(items)


class Vocabulary:
    """Token <-> id. Ids 0-3 are the special tokens; the word boundary is always present."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = list(tokens)
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}")
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary must not repeat tokens")

    @classmethod
    def build(cls, symbols: Iterable[str]) -> "Vocabulary":
        rest = set(symbols) - set(SPECIAL_TOKENS) - {WORD_BOUNDARY}
        return cls([*SPECIAL_TOKENS, WORD_BOUNDARY, *sorted(rest)])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(token, UNK_ID) for token in tokens]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        return sorted({token for token in tokens if token not in self.index})

    def to_json(self) -> str:
        return json.dumps({"tokens": self.tokens}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        return cls(json.loads(text)["tokens"])
