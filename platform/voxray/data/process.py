"""One utterance in, one row out: kept (with features) or rejected (with a reason).

These functions run inside Ray Data tasks. ``process_units`` and ``scan_units`` are the
``map_batches`` callables: a batch is a table of JSON-encoded reader units.
"""

from __future__ import annotations

import json
import posixpath
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from voxray import uri
from voxray.config import Config
from voxray import cleaning, codeswitch
from voxray.data import alignments, augment, codes, features, readers, store
from voxray.cleaning import Rejected
from voxray.data.splits import split_of
from voxray.text import G2P, Vocabulary, normalize_text

BAD_TAGS = "bad_tags"       # per-word tags that do not fit the row's words (rejected.jsonl reason)


@dataclass
class Context:
    config: Config
    vocabulary: Optional[Vocabulary] = None
    speakers: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    codec: Optional[codes.CodecInfo] = None        # what the rows' audio_codes are, when they have any

    @property
    def g2p(self) -> G2P:
        return G2P(self.config.preprocess.g2p)

    @property
    def code_switch(self) -> codeswitch.CodeSwitch:
        pre = self.config.preprocess
        return codeswitch.CodeSwitch(pre.code_switch, pre.particles, pre.code_switch_margin)

    def absorb(self, scans: list[dict]) -> None:
        """Fix the vocabulary and the speaker/language ids from the scan pass's rows."""
        def index(key: str) -> dict[str, int]:
            return {name: i for i, name in enumerate(sorted({n for row in scans for n in row[key]}))}

        self.vocabulary = Vocabulary.build({s for row in scans for s in row["symbols"]})
        self.speakers = index("speakers")
        self.languages = index("languages")
        observed = codes.summarise(codes.Observation(int(v[0]), int(v[1]), v[2] if v[2] >= 0 else None, int(v[3]))
                                   for row in scans for v in row["codes"])
        self.codec = codes.infer(self.config.codec, observed)

    @property
    def codebooks(self) -> Optional[tuple[int, int]]:
        """(n_codebooks, codebook_size) when the rows carry codes."""
        return (self.codec.n_codebooks, self.codec.codebook_size) if self.codec else None

    def to_json(self) -> dict[str, Any]:
        """What ``absorb`` fixed, for a resumed run (``_progress/context.json``)."""
        return {"vocabulary": json.loads(self.vocabulary.to_json()), "speakers": self.speakers,
                "languages": self.languages, "codec": None if self.codec is None else asdict(self.codec)}

    def restore(self, saved: dict[str, Any]) -> None:
        """Take back what ``to_json`` saved instead of scanning again."""
        self.vocabulary = Vocabulary.from_json(json.dumps(saved["vocabulary"]))
        self.speakers, self.languages = saved["speakers"], saved["languages"]
        codec = saved["codec"]
        self.codec = None if codec is None else codes.CodecInfo(**{**codec, "inferred": tuple(codec["inferred"])})


def clean_audio(data: bytes, config: Config, trim: bool = True) -> cleaning.CleanAudio:
    pre, spec = config.preprocess, config.audio
    return cleaning.clean(
        data, sample_rate=spec.sample_rate, loudness_lufs=pre.loudness_lufs,
        max_peak=pre.max_peak, silence_peak_dbfs=pre.silence_peak_dbfs,
        trim_top_db=pre.trim_top_db, min_seconds=pre.min_seconds, max_seconds=pre.max_seconds,
        frame_length=spec.win_length, hop_length=spec.hop_length, trim=trim, denoise_strength=pre.denoise,
        denoise_stationary=pre.denoise_stationary)


def _labels(item: readers.RawItem, ctx: Context) -> tuple[str, str]:
    pre = ctx.config.preprocess
    return item.get("speaker_id") or pre.default_speaker, item.get("language") or pre.default_language


def _textgrid(item: readers.RawItem, speaker: str, folder: str) -> list[alignments.Interval]:
    """The row's TextGrid's phone tier (Rejected when missing or malformed)."""
    tiers = _textgrid_tiers(item, speaker, folder)
    try:
        return alignments.phone_tier(tiers)
    except alignments.TextGridError as exc:
        raise Rejected(cleaning.BAD_ALIGNMENT, str(exc)) from None


def _textgrid_tiers(item: readers.RawItem, speaker: str, folder: str) -> dict[str, list[alignments.Interval]]:
    stems = [item["id"]]
    if item.get("audio"):
        stems.append(posixpath.splitext(posixpath.basename(item["audio"]))[0])
    for stem in dict.fromkeys(stems):
        for candidate in (uri.join(folder, f"{stem}.TextGrid"), uri.join(folder, speaker, f"{stem}.TextGrid")):
            try:
                text = uri.read_text(candidate)
            except FileNotFoundError:
                continue
            try:
                return alignments.parse_textgrid(text)
            except alignments.TextGridError as exc:
                raise Rejected(cleaning.BAD_ALIGNMENT, f"{candidate}: {exc}") from None
    raise Rejected(cleaning.MISSING_ALIGNMENT, f"no {stems[0]}.TextGrid under {folder}")


def _word_langs(item: readers.RawItem, language: str, ctx: Context) -> Optional[list[Optional[str]]]:
    """The manifest's per-word languages; with ``preprocess.code_switch`` each must be one of its
    languages (matched by primary subtag: "en" is an en-us row's "en-us")."""
    tags = item.get("word_langs")
    switch = ctx.code_switch
    if tags is None or not switch.languages:
        return tags
    allowed = {codeswitch.primary(name): name for name in switch.row_languages(language)}
    particle = codeswitch.PARTICLE_LANGUAGE
    unknown = sorted({tag for tag in tags if tag and tag.lower() != particle and codeswitch.primary(tag) not in allowed})
    if unknown:
        raise codeswitch.TagError(f"word_langs {unknown} not in preprocess.code_switch {list(switch.languages)} "
                                  f"(or {particle!r})")
    return [tag if not tag or tag.lower() == particle else allowed[codeswitch.primary(tag)] for tag in tags]


def _aligned_words(item: readers.RawItem, text: str, language: str, ctx: Context,
                   phones: list[alignments.Interval], words: list[alignments.Interval]) -> codeswitch.Tagged:
    """A TextGrid's phones with the language and particle type of the word each lies in: the
    row's words tagged as without alignments (the manifest's tags, else detection), matched in
    order to the TextGrid's spoken words; a pause carries the language of the word before it."""
    try:
        tagged = ctx.code_switch.tag(text, language, _word_langs(item, language, ctx), item.get("particle_tags"))
    except codeswitch.TagError as exc:
        raise Rejected(BAD_TAGS, str(exc)) from None
    owners, n_words = alignments.phone_words(phones, words)
    if n_words != len(tagged):
        raise Rejected(cleaning.BAD_ALIGNMENT, f"the TextGrid has {n_words} spoken words, the text {len(tagged)}: "
                                               f"{[w.text for w in tagged]}")
    languages, particles, current = [], [], next((tagged[o].language for o in owners if o >= 0), language)
    for owner in owners:
        if owner >= 0:
            current = tagged[owner].language
        languages.append(current)
        particles.append(tagged[owner].particle if owner >= 0 else 0)
    return codeswitch.Tagged(alignments.phone_labels(phones), languages, particles)


def front_end(item: readers.RawItem, text: str, speaker: str, language: str, ctx: Context) -> codeswitch.Tagged:
    """Tokens of a row, each with its language and particle type: from the TextGrid's phones, from
    the row's text in its language, or word by word (``preprocess.code_switch`` or per-word tags in
    the manifest). Raises Rejected."""
    pre = ctx.config.preprocess
    switching = pre.code_switch or item.get("word_langs") is not None or item.get("particle_tags") is not None
    if pre.alignments:
        try:
            tiers = _textgrid_tiers(item, speaker, pre.alignments)
            phones = alignments.spoken_span(alignments.phone_tier(tiers))
            tokens = alignments.phone_labels(phones)
            if switching:
                return _aligned_words(item, text, language, ctx, phones, alignments.word_tier(tiers))
        except alignments.TextGridError as exc:
            raise Rejected(cleaning.BAD_ALIGNMENT, str(exc)) from None
    elif switching:
        try:
            words = ctx.code_switch.tag(text, language, _word_langs(item, language, ctx), item.get("particle_tags"))
        except codeswitch.TagError as exc:
            raise Rejected(BAD_TAGS, str(exc)) from None
        return codeswitch.phonemize(text, words, language, ctx.g2p)
    else:
        tokens = ctx.g2p(text, language)
    return codeswitch.Tagged.monolingual(tokens, language)


def process_item(item: readers.RawItem, ctx: Context) -> dict[str, Any]:
    """One input row -> its store row (kept, with features) or its reject."""
    return _process(item, ctx)[0]


def _process(item: readers.RawItem, ctx: Context) -> tuple[dict[str, Any], Optional[np.ndarray]]:
    """``process_item``, and the cleaned waveform of a kept row (augmentation starts from it)."""
    speaker, language = _labels(item, ctx)
    row: dict[str, Any] = {"id": item.get("id"), "source": item.get("source"),
                           "speaker_id": speaker, "language": language}
    if item.get("malformed"):
        return {**row, "status": "malformed", "reason": cleaning.MALFORMED_ROW,
                "detail": item["malformed"]}, None
    pre, spec = ctx.config.preprocess, ctx.config.audio
    try:
        text = normalize_text(item.get("text") or "")
        if not text:
            raise Rejected(cleaning.EMPTY_TEXT, "text is empty after normalisation")
        try:
            data = readers.audio_bytes(item)
        except FileNotFoundError:
            if item.get("audio_codes") is None or not pre.codes_without_audio or ctx.codec is None \
                    or pre.alignments:
                raise Rejected(cleaning.MISSING_FILE, f"{item.get('audio')} does not exist") from None
            data = None                 # codes only (preprocess.codes_without_audio): for talker training
        has_codes = item.get("audio_codes") is not None
        if data is None:
            audio_codes = codes.check(item["audio_codes"], ctx.codec, None)
            feats = features.empty(spec)
            seconds = len(audio_codes) / ctx.codec.frame_rate
        else:
            audio = clean_audio(data, ctx.config, trim=not has_codes)      # trimming would shift audio against codes
            audio_codes = codes.check(item["audio_codes"], ctx.codec, audio.waveform.shape[0] / spec.sample_rate) \
                if has_codes else None
            feats = features.extract(audio.waveform, spec, pre.f0_floor, pre.f0_ceil, pre.f0_rate, pre.f0_speed)
            seconds = feats.waveform.shape[0] / spec.sample_rate
        durations = None
        if pre.alignments:
            intervals = _textgrid(item, speaker, pre.alignments)
            try:
                tokens, durations = alignments.phones_and_durations(
                    intervals, audio.trim_start_seconds, feats.n_frames, spec.frame_seconds)
            except alignments.TextGridError as exc:
                raise Rejected(cleaning.BAD_ALIGNMENT, str(exc)) from None
            tagged = front_end(item, text, speaker, language, ctx)     # the same phones, with their words' tags
        else:
            tagged = front_end(item, text, speaker, language, ctx)
            tokens = tagged.tokens
        if not tokens:
            raise Rejected(cleaning.EMPTY_TEXT, "no tokens after grapheme-to-phoneme conversion")
        unknown = ctx.vocabulary.unknown(tokens)
        if unknown:  # the scan pass saw every token; this means the input changed under us
            raise Rejected(cleaning.PROCESSING_ERROR, f"tokens missing from the vocabulary: {unknown}")
    except Rejected as rejected:
        return {**row, "status": "rejected", "reason": rejected.reason, "detail": rejected.detail}, None
    except Exception as exc:  # never let one utterance crash the run
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**row, "status": "rejected", "reason": cleaning.PROCESSING_ERROR,
                "detail": f"{type(exc).__name__}: {exc} ({posixpath.basename(where.filename)}:{where.lineno})"}, None
    return {
        **row, "status": "kept", "split": item.get("forced_split") or _hashed_split(row["id"], pre),
        "speaker_index": ctx.speakers[speaker], "language_index": ctx.languages[language],
        "text": item.get("text"), "normalized_text": text, "phonemes": tokens,
        "token_ids": ctx.vocabulary.encode(tokens),
        "token_languages": [ctx.languages[name] for name in tagged.languages],
        "token_particles": tagged.particles, "n_languages": tagged.n_languages,
        "code_switched": tagged.n_languages > 1, "accent": item.get("accent"), "n_frames": feats.n_frames,
        "n_particles": sum(1 for i, p in enumerate(tagged.particles) if p and (i == 0 or tagged.particles[i - 1] != p)),
        "audio_seconds": seconds,
        "mel": feats.mel, "f0": feats.f0, "energy": feats.energy, "durations": durations,
        "sample_rate": spec.sample_rate, "audio": feats.waveform if pre.store_audio and data is not None else None,
        "ref_audio": item.get("ref_audio"), "ref_text": item.get("ref_text"),
        "audio_codes": audio_codes, "metadata": item.get("metadata"),
        "denoise_db": audio.denoise_db if data is not None else None,
    }, feats.waveform


def _hashed_split(utt_id: str, pre) -> str:
    """The row's split by its id's hash; with ``preprocess.val_input`` the val share is train's
    (val rows come from that input)."""
    split = split_of(utt_id, pre.split)
    return "train" if split == "val" and pre.val_input else split


def augmented_rows(row: dict[str, Any], waveform: np.ndarray, ctx: Context) -> list[dict[str, Any]]:
    """The augmented copies of a kept train row (``preprocess.augment``; ``voxray.data.augment``):
    the same text and labels, features of the transformed audio, ``augmented`` saying what was
    done. Rows with codes are not augmented (the codes describe the recording)."""
    pre, spec = ctx.config.preprocess, ctx.config.audio
    if not pre.augment.copies or row["status"] != "kept" or row["split"] != "train" \
            or row["audio_codes"] is not None:
        return []
    out = []
    for variant in augment.variants(row["id"], waveform, spec.sample_rate, pre.augment, pre.max_peak):
        feats = features.extract(variant.waveform, spec, pre.f0_floor, pre.f0_ceil, pre.f0_rate, pre.f0_speed)
        if row["durations"] is not None and sum(row["durations"]) != feats.n_frames:
            continue                    # MFA durations fit only audio of the recording's length
        out.append({**row, "id": f"{row['id']}@{variant.suffix}", "n_frames": feats.n_frames,
                    "audio_seconds": feats.waveform.shape[0] / spec.sample_rate, "mel": feats.mel, "f0": feats.f0,
                    "energy": feats.energy, "audio": feats.waveform if pre.store_audio else None,
                    "augmented": variant.suffix})
    return out


def _units(batch: pa.Table) -> list[dict]:
    return [json.loads(u) for u in batch.column("unit").to_pylist()]


def process_units(batch: pa.Table, ctx: Context) -> pa.Table:
    rows = []
    for unit in _units(batch):
        for item in readers.read_unit(unit):
            row, waveform = _process(item, ctx)
            rows.append(row)
            if waveform is not None:
                rows.extend(augmented_rows(row, waveform, ctx))
    return store.to_table(rows, ctx.config.audio.n_mels, ctx.codec.n_codebooks if ctx.codec else None)


def process_and_write(batch: pa.Table, ctx: Context, output: str) -> pa.Table:
    """The feature pass's task: process a batch of units (column ``index`` numbers them in the
    run's plan) and write them (``store.write_task``); one summary row out for the driver."""
    table = process_units(batch, ctx)
    marker = store.write_task(table, output, batch.column("index").to_pylist(), ctx.config.audio.n_mels,
                              ctx.codebooks)
    stats = marker["stats"]
    return pa.table({"units": [len(marker["units"])], "rows": [stats["input_rows"]],
                     "kept": [stats["kept"]], "seconds": [float(sum(stats["split_seconds"].values()))]})


def scan_units(batch: pa.Table, ctx: Context) -> pa.Table:
    """First pass, text only: the token symbols, speakers and languages (rows' and words') of the
    input, and what the rows' codes look like (``codes.summarise``: width, largest code, code
    frames per second of audio from the file header when ``codec.frame_rate`` is to be inferred, -1 when unknown; one
    entry per distinct width and rate, not one per row)."""
    symbols: set[str] = set()
    speakers: set[str] = set()
    languages: set[str] = set()
    seen: list[codes.Observation] = []
    for unit in _units(batch):
        for item in readers.read_unit(unit, with_audio=False):
            if item.get("malformed"):
                continue
            speaker, language = _labels(item, ctx)
            speakers.add(speaker)
            languages.add(language)
            if item.get("audio_codes") is not None:
                seconds = readers.audio_seconds(item) if ctx.config.codec.frame_rate is None else None
                seen.append(codes.observe(item["audio_codes"], seconds))
            text = normalize_text(item.get("text") or "")
            if not text:
                continue
            try:
                tagged = front_end(item, text, speaker, language, ctx)
            except Exception:  # the feature pass records the reason for this row
                continue
            symbols.update(tagged.tokens)
            languages.update(tagged.languages)
    return pa.table({"symbols": [sorted(symbols)], "speakers": [sorted(speakers)],
                     "languages": [sorted(languages)],
                     "codes": pa.array([[[o.n_codebooks, o.max_code, -1.0 if o.rate is None else o.rate, o.count]
                                         for o in codes.summarise(seen)]], pa.list_(pa.list_(pa.float64())))})
