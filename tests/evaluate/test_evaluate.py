"""``voxray evaluate`` end to end on the session's tiny models: Ray Data actors, the outputs, the
report in a real headless browser, and requests that cannot run."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from voxray import cli


def open_in_browser(page: str) -> dict:
    """Load ``page`` in headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
    and report what a person would see broken: images that did not decode, audio that did not
    load, links to files that are not there."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        driver.get(f"file://{page}")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete) && "
            "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)"))
        return driver.execute_script("""
            return {
              title: document.title,
              rows: document.querySelectorAll('#summary tr').length,
              images: document.images.length,
              broken_images: [...document.images].filter(i => !i.naturalWidth).map(i => i.src),
              players: document.querySelectorAll('audio').length,
              broken_players: [...document.querySelectorAll('audio')]
                  .filter(a => a.error || !(a.duration > 0)).map(a => a.src),
              links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
            };""")
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def evaluation(base_run, vocoder_run, sample_store, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("eval") / "acoustic")
    assert cli.main(["evaluate", "--model", f"{base_run}/final", "--vocoder", f"{vocoder_run}/final",
                     "--data", sample_store, "--limit", "6", "--output", output]) == 0
    return output


def test_evaluate_acoustic_model_writes_metrics_utterances_audio_and_a_report(evaluation, capsys):
    summary = json.load(open(os.path.join(evaluation, "metrics.json")))
    assert summary["mode"] == "acoustic" and summary["split"] == "test" and summary["utterances"] == 6
    assert summary["failed"] == 0
    means = summary["metrics"]
    for name in ("mcd_db", "f0_rmse_hz", "vuv_error", "duration_mae_ms", "speaker_similarity"):
        assert name in means and summary["counts"][name] == 6, name
    assert "pesq" not in means                           # text -> speech is not time-aligned with the recording
    assert summary["recognisers"]["en-us"].startswith("pocketsphinx") and summary["recognisers"]["ms"].startswith("none")
    english = summary["counts"]["wer"]
    assert 0 < english < 6 and summary["counts"]["wer_recorded"] == english

    rows = pq.read_table(os.path.join(evaluation, "utterances.parquet")).to_pylist()
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == 6
    assert all(os.path.getsize(os.path.join(evaluation, "audio", f"{r['id']}.wav")) > 1000 for r in rows)
    assert all(r["synthesis_seconds"] > 0.2 and r["mcd_db"] > 0 for r in rows)

    seen = open_in_browser(os.path.join(evaluation, "report.html"))
    assert seen["title"] == "voxray evaluate" and seen["rows"] > 5
    assert seen["images"] >= 8 and not seen["broken_images"], seen
    assert seen["players"] >= 4 and not seen["broken_players"], seen
    assert all(os.path.exists(os.path.join(evaluation, link)) for link in seen["links"]), seen["links"]


def test_copy_synthesis_measures_pesq_and_stoi(vocoder_run, sample_store, tmp_path):
    """The vocoder alone (copy synthesis of the stored mels, time-aligned): PESQ and STOI too;
    Griffin-Lim is the baseline with the same command."""
    for vocoder in (f"{vocoder_run}/final", "griffin-lim"):
        output = str(tmp_path / vocoder.replace("/", "_"))
        assert cli.main(["evaluate", "--vocoder", vocoder, "--data", sample_store, "--split", "val", "--limit", "2",
                         "--output", output]) == 0
        summary = json.load(open(os.path.join(output, "metrics.json")))
        assert summary["mode"] == "copy" and summary["utterances"] == 2
        assert 1.0 <= summary["metrics"]["pesq"] <= 4.7 and 0 < summary["metrics"]["stoi"] <= 1
        assert "duration_mae_ms" not in summary["metrics"]


def test_requests_that_cannot_run_say_why(base_run, vocoder_run, sample_store, tmp_path, capsys):
    def refused(*args: str) -> str:
        assert cli.main(["evaluate", *args, "--data", sample_store, "--output", str(tmp_path / "out")]) == 2
        return capsys.readouterr().err

    assert "give --model" in refused()
    assert "is a vocoder model" in refused("--model", f"{vocoder_run}/final")
    assert "no such model folder" in refused("--model", f"{base_run}/final", "--asr", f"ms={tmp_path}/none")
    assert "not a voxray model export" in refused("--model", str(tmp_path))
    assert not os.path.exists(tmp_path / "out")           # nothing written by a refused request


def test_evaluate_a_talker_through_its_codec(talker_run, codes_store, tmp_path):
    """text -> sampled codes -> the mel codec the export records -> Griffin-Lim; no duration MAE."""
    output = str(tmp_path / "talker")
    assert cli.main(["evaluate", "--model", f"{talker_run}/final", "--data", codes_store, "--split", "val",
                     "--limit", "2", "--output", output]) == 0
    summary = json.load(open(os.path.join(output, "metrics.json")))
    assert summary["mode"] == "talker" and summary["utterances"] == 2 and summary["failed"] == 0
    assert summary["counts"]["mcd_db"] == 2 and "duration_mae_ms" not in summary["metrics"]
