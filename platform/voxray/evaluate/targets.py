"""The users' quality targets and the evaluation's verdict on each.

A target is a range, as the users' plans write them ("MCD 5.5-6.5 dB"): the range the plan
expects at that phase. The verdict only asks whether the measure is at least as good as the
range's worse end: an MCD of 5.0 dB passes a 5.5-6.5 dB target, 6.8 dB fails it; a predicted MOS
of 4.4 passes 3.5-4.2, 3.2 fails it.

The defaults are the Malaysian plan's targets at the end of training (MCD 5.5-6.5 dB, F0 RMSE
15-25 Hz, duration MAE 30-50 ms, MOS 3.5-4.2); ``--phase`` picks the plan's targets of one phase
and ``--target NAME=LOW-HIGH`` overrides one measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional


class TargetError(ValueError):
    """A target given on the command line that cannot be read; the message names it."""


@dataclass(frozen=True)
class Target:
    low: float
    high: float
    unit: str
    higher_is_better: bool = False

    def describe(self) -> str:
        return f"{self.low:g}-{self.high:g}{' ' + self.unit if self.unit else ''}"

    def passes(self, value: float) -> bool:
        return value >= self.low if self.higher_is_better else value <= self.high


UNITS = {"mcd_db": ("dB", False), "f0_rmse_hz": ("Hz", False), "f0_fine_rmse_hz": ("Hz", False),
         "duration_mae_ms": ("ms", False), "mos": ("", True), "gross_pitch_error": ("", False),
         "vuv_error": ("", False), "wer": ("", False), "cer": ("", False), "speaker_similarity": ("", True),
         "pesq": ("", True), "stoi": ("", True)}


def _targets(mcd: tuple, f0: tuple, duration: tuple, mos: Optional[tuple]) -> dict[str, Target]:
    ranges = {"mcd_db": mcd, "f0_rmse_hz": f0, "duration_mae_ms": duration, "mos": mos}
    return {name: Target(*bounds, *UNITS[name]) for name, bounds in ranges.items() if bounds}


# The Malaysian plan's targets by phase (it gives no MOS after pretraining); ``None`` is the
# default: its end-of-training targets with its whole MOS range.
PHASES: dict[Optional[str], dict[str, Target]] = {
    None: _targets((5.5, 6.5), (15, 25), (30, 50), (3.5, 4.2)),
    "pretraining": _targets((7, 8), (30, 40), (60, 80), None),
    "main": _targets((6, 7), (20, 30), (40, 60), (3.5, 3.8)),
    "finetuned": _targets((5.5, 6.5), (15, 25), (30, 50), (3.8, 4.2)),
}


def resolve(phase: Optional[str] = None, overrides: Optional[list[str]] = None) -> dict[str, Target]:
    """The targets of ``phase`` (None: the defaults) with ``overrides`` ("NAME=LOW-HIGH") applied."""
    if phase not in PHASES:
        raise TargetError(f"--phase {phase}: the phases are {', '.join(p for p in PHASES if p)}")
    targets = dict(PHASES[phase])
    for text in overrides or []:
        name, _, bounds = text.partition("=")
        low, _, high = bounds.partition("-")
        if name not in UNITS:
            raise TargetError(f"--target {text}: {name!r} has no target; choose from {', '.join(UNITS)}")
        try:
            values = float(low), float(high or low)
        except ValueError:
            raise TargetError(f"--target {text}: write NAME=LOW-HIGH, e.g. mcd_db=5.5-6.5") from None
        if values[0] > values[1]:
            raise TargetError(f"--target {text}: the low end is above the high end")
        targets[name] = Target(*values, *UNITS[name])
    return targets


@dataclass(frozen=True)
class Verdict:
    value: float
    target: str
    verdict: str               # pass | fail
    note: str = ""             # why the measure may not mean much on this corpus


def verdicts(means: dict[str, float], targets: dict[str, Target], notes: dict[str, str]) -> dict[str, dict]:
    """Each target's verdict on the measured mean (measures not taken have none)."""
    out = {}
    for name, target in targets.items():
        value = means.get(name)
        if value is None or not math.isfinite(value):
            continue
        out[name] = asdict(Verdict(value=value, target=target.describe(),
                                   verdict="pass" if target.passes(value) else "fail", note=notes.get(name, "")))
    return out


# Above this WER on the recordings themselves, the recogniser (not the synthesis) decides the WER.
RECOGNISER_TRUST_WER = 0.3


def caveats(means: dict[str, float], targets: dict[str, Target], recogniser: str, mos_name: str) -> dict[str, str]:
    """Measures that do not mean much on this corpus, and why (shown next to them)."""
    notes = {}
    recorded = means.get("wer_recorded")
    if recorded is not None and recorded > RECOGNISER_TRUST_WER:
        for name in ("wer", "cer"):
            notes[name] = (f"not meaningful here: the recogniser ({recogniser}) misreads the recordings themselves "
                           f"(WER {recorded:.2f} on them)")
    mos = "a proxy for a listening test, not one"
    recorded_mos, mos_target = means.get("mos_recorded"), targets.get("mos")
    if recorded_mos is not None and mos_target is not None and not mos_target.passes(recorded_mos):
        mos += (f"; the recordings themselves are predicted {recorded_mos:.2f}, short of the target: the target "
                f"cannot be met on this corpus as {mos_name} hears it")
    notes["mos"] = mos
    return notes
