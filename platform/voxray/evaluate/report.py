"""``report.html``: a page to look at, not read. The summary table (means next to the users'
targets, with a pass/fail verdict and a note where a measure does not mean much), a histogram per metric, and for the worst and the best few utterances (by MCD, else
by WER) the recorded and synthesised mel and F0 side by side with both audio players. Images
and recordings are files next to the page (``report/*.png``, ``reference/*.wav``), linked
relatively, so the folder can be copied or served as it is.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import soundfile

from voxray import uri
from voxray.audio import AudioSpec
from voxray.data import store
from voxray.evaluate import metrics
from voxray.evaluate.run import FLOAT_METRICS, audio_name

LABELS = {"mcd_db": "MCD (dB)", "f0_rmse_hz": "F0 RMSE (Hz)", "f0_rmse_cents": "F0 RMSE (cents)",
          "gross_pitch_error": "gross pitch error", "f0_fine_rmse_hz": "F0 RMSE without gross errors (Hz)",
          "mos": "predicted MOS (synthesis)", "mos_recorded": "predicted MOS (recording)", "vuv_error": "voicing error", "duration_mae_ms": "duration MAE (ms)", "pesq": "PESQ (wb)",
          "stoi": "STOI", "wer": "WER (synthesis)", "cer": "CER (synthesis)", "wer_recorded": "WER (recording)",
          "cer_recorded": "CER (recording)", "speaker_similarity": "speaker similarity",
          "language_accuracy": "language head accuracy", "particle_accuracy": "particle head accuracy"}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def histogram(values: np.ndarray, label: str) -> bytes:
    figure, axis = _figure(figsize=(3.6, 2.4))
    axis.hist(values, bins=min(20, max(5, len(values) // 2)), color="#4c78a8")
    axis.set_xlabel(label)
    axis.set_ylabel("utterances")
    data = _png(figure)
    _close(figure)
    return data


def side_by_side(recording: np.ndarray, synthesis: np.ndarray, spec: AudioSpec, title: str) -> bytes:
    """Log-mel of both signals (top) and their F0 contours (bottom)."""
    import torch

    from voxray.dsp import log_mel

    figure, axes = _figure(2, 2, figsize=(9, 4.2), gridspec_kw={"height_ratios": [3, 2]})
    for column, (name, waveform) in enumerate((("recording", recording), ("synthesis", synthesis))):
        mel = log_mel(torch.from_numpy(np.array(waveform, dtype=np.float32)), spec).numpy()
        axes[0, column].imshow(mel, origin="lower", aspect="auto", cmap="magma")
        axes[0, column].set_title(f"{name}: log-mel")
        try:
            f0 = metrics.analyse(waveform, spec.sample_rate).f0
        except ValueError:
            f0 = np.zeros(1)
        seconds = np.arange(len(f0)) * metrics.FRAME_MS / 1000
        axes[1, column].plot(seconds, np.where(f0 > 0, f0, np.nan), color="#e45756")
        axes[1, column].set_ylabel("F0 (Hz)")
        axes[1, column].set_xlabel("seconds")
    figure.suptitle(title, fontsize=9)
    data = _png(figure)
    _close(figure)
    return data


def _recordings(data: str, split: str, ids: list[str]) -> dict[str, np.ndarray]:
    """The stored audio of ``ids``, one part file at a time (the split is never held whole)."""
    wanted, found = pa.array(ids), {}
    for path in store.split_files(data, split):
        part = store.read_part(path, ["id", "audio"])
        part = part.filter(pc.is_in(part["id"], value_set=wanted))
        for row in store.arrow_rows(part):
            found[row["id"]] = np.asarray(row["audio"], dtype=np.float32)
    return found


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return "&ndash;" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def _picks(table: pa.Table, count: int) -> tuple[str, list[dict], list[dict]]:
    """(the metric ranked by, the worst ``count``, the best ``count``)."""
    rows = table.to_pylist()
    for name, worse_is_higher in (("mcd_db", True), ("wer", True), ("speaker_similarity", False)):
        ranked = [r for r in rows if r[name] is not None and math.isfinite(r[name])]
        if ranked:
            ranked.sort(key=lambda r: r[name], reverse=worse_is_higher)
            worst = ranked[:count]
            best = [r for r in ranked[::-1][:count] if r not in worst]
            return name, worst, best
    return "", [], []


def write_report(output: str, data: str, split: str, table: pa.Table, summary: dict[str, Any], spec: AudioSpec,
                 count: int = 3) -> str:
    """Write OUTPUT/report.html (and its images and reference recordings); returns its path."""
    means = summary["metrics"]
    head = [f"<h1>voxray evaluate: {html.escape(summary['mode'])} on the {html.escape(split)} split</h1>",
            f"<p>model: {html.escape(str(summary['model']))}; vocoder: {html.escape(str(summary['vocoder']))}; "
            f"{summary['utterances']} utterances, {summary['failed']} failed. Recognisers: "
            + html.escape(", ".join(f"{k}: {v}" for k, v in summary["recognisers"].items()))
            + f"; speaker encoder: {html.escape(summary['speaker_encoder'])}; MOS predictor: "
            f"{html.escape(summary['mos_predictor'])}. MCD: mel-cepstra of order {summary['mcd']['order']} without "
            f"c0, DTW, {html.escape(summary['mcd']['silence'])}, {html.escape(summary['mcd']['calibration'])}.</p>",
            "<p>A predicted MOS is a proxy for a listening test, not one. Targets: "
            f"{html.escape(summary['phase'])}.</p>",
            "<table id='summary'><tr><th>metric</th><th>mean</th><th>utterances</th><th>target</th>"
            "<th>verdict</th><th>note</th></tr>"]
    verdicts, notes = summary["verdicts"], summary["notes"]
    for name in FLOAT_METRICS:
        if name in means:
            verdict = verdicts.get(name, {})
            head.append(f"<tr><td>{LABELS[name]}</td><td>{means[name]:.3f}</td><td>{summary['counts'][name]}</td>"
                        f"<td>{html.escape(summary['targets'].get(name, ''))}</td>"
                        f"<td class='{verdict.get('verdict', '')}'>{verdict.get('verdict', '')}</td>"
                        f"<td class='note'>{html.escape(notes.get(name, ''))}</td></tr>")
    head.append("</table>")
    if summary.get("particles"):
        head.append("<h2>Discourse particles</h2><table id='particles'><tr><th>particle</th><th>words</th>"
                    "<th>duration ratio</th><th>recording</th><th>expected</th><th>contours</th>"
                    "<th>expected</th><th>slope (st/s)</th></tr>")
        for name, entry in summary["particles"].items():
            expected = entry.get("expected", {})
            ratio = "&ndash;".join(f"{v:g}" for v in expected.get("duration_ratio", []))
            recorded = entry.get("recorded", {}).get("duration_ratio")
            head.append(f"<tr><td>{html.escape(name)}</td><td>{entry['count']}</td><td>{_cell(entry['duration_ratio'])}"
                        f"</td><td>{_cell(recorded)}</td><td>{ratio}</td><td>"
                        + html.escape(", ".join(f"{k} {v}" for k, v in entry["contours"].items()))
                        + f"</td><td>{html.escape(' or '.join(expected.get('contours', [])))}</td>"
                        f"<td>{_cell(entry['pitch_slope_st_per_s'])}</td></tr>")
        head.append("</table>")

    charts = ["<h2>Per utterance</h2><div class='grid'>"]
    for name in FLOAT_METRICS:
        values = np.asarray(table[name].to_pylist(), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            path = f"report/hist_{name}.png"
            uri.write_bytes(uri.join(output, path), histogram(values, LABELS[name]))
            charts.append(f"<img src='{path}' alt='{LABELS[name]} histogram'>")
    charts.append("</div>")

    ranked_by, worst, best = _picks(table, count)
    recordings = _recordings(data, split, [r["id"] for r in worst + best])
    sections = []
    for title, rows in ((f"Worst {len(worst)} by {LABELS.get(ranked_by, ranked_by)}", worst),
                        (f"Best {len(best)} by {LABELS.get(ranked_by, ranked_by)}", best)):
        if not rows:
            continue
        sections.append(f"<h2>{html.escape(title)}</h2>")
        for row in rows:
            name = audio_name(row["id"])
            synthesis, _ = soundfile.read(io.BytesIO(uri.read_bytes(uri.join(output, "audio", name))), dtype="float32")
            recording = recordings[row["id"]]
            buffer = io.BytesIO()
            soundfile.write(buffer, recording, spec.sample_rate, subtype="PCM_16", format="WAV")
            uri.write_bytes(uri.join(output, "reference", name), buffer.getvalue())
            picture = f"report/{name[:-4]}.png"
            uri.write_bytes(uri.join(output, picture),
                            side_by_side(recording, synthesis, spec, f"{row['id']}: {row['text']}"))
            values = ", ".join(f"{LABELS[m]} {_cell(row[m])}" for m in FLOAT_METRICS
                               if row[m] is not None and math.isfinite(row[m]))
            heard = (f"<br>recogniser heard: <i>{html.escape(row['transcript'])}</i> (recording: "
                     f"<i>{html.escape(row['transcript_recorded'] or '')}</i>)") if row["transcript"] is not None else ""
            sections.append(
                f"<div class='utterance'><h3>{html.escape(row['id'])}</h3><p>{html.escape(row['text'])}<br>"
                f"{values}{heard}</p><img src='{picture}' alt='mel and F0 of {html.escape(row['id'])}'><br>"
                f"recording <audio controls preload='metadata' src='reference/{name}'></audio> "
                f"synthesis <audio controls preload='metadata' src='audio/{name}'></audio></div>")

    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>voxray evaluate</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.grid img{margin:4px}"
            ".utterance{border-top:1px solid #ddd;margin-top:1em}.pass{color:#1a7f37}.fail{color:#cf222e}"
            ".note{text-align:left;font-size:90%}#summary td:nth-child(4){white-space:nowrap}</style></head><body>"
            + "\n".join(head + charts + sections)
            + "<p>Per-utterance values: <a href='utterances.parquet'>utterances.parquet</a>; means: "
              "<a href='metrics.json'>metrics.json</a>.</p></body></html>")
    path = uri.join(output, "report.html")
    uri.write_text(path, page)
    return path
