import math

import numpy as np
import pytest

from voxray.evaluate import particles

FRAME = 0.01


def test_spans_are_particle_words():
    assert particles.spans([0, 1, 1, 0, 0, 3, 3, 3, 0, 1]) == [(1, 1, 3), (3, 5, 8), (1, 9, 10)]


@pytest.mark.parametrize("shape, f0", [
    ("rise-fall", 200 * 2 ** (np.concatenate([np.linspace(0, 3, 10), np.linspace(3, 0, 10)]) / 12)),
    ("rise", 200 * 2 ** (np.linspace(0, 4, 20) / 12)),
    ("fall", 200 * 2 ** (np.linspace(4, 0, 20) / 12)),
    ("flat", np.full(20, 180.0)),
    ("unvoiced", np.array([0, 0, 150.0, 0, 160.0])),
])
def test_contour_shapes(shape, f0):
    slope, found = particles.contour(np.asarray(f0, dtype=np.float64), FRAME)
    assert found == shape
    if shape == "rise":
        assert slope == pytest.approx(4 / (19 * FRAME), rel=1e-6)      # 4 semitones over 19 frame steps
    if shape == "unvoiced":
        assert math.isnan(slope)


def test_measure_and_judge_against_the_table():
    # tokens: s a j a | l a h .   (boundary and "." are not phones); lah's phones last 1.4x longer
    token_particles = [0, 0, 0, 0, 0, 1, 1, 1, 0]
    is_phone = [True, True, True, True, False, True, True, True, False]
    durations = [5, 5, 5, 5, 2, 7, 7, 7, 3]
    frames = sum(durations)
    f0 = np.full(frames, 150.0)
    start = 22
    f0[start: start + 21] = 150 * 2 ** (np.concatenate([np.linspace(0, 3, 11), np.linspace(3, 0, 10)]) / 12)
    found = particles.measure(token_particles, is_phone, durations, f0, FRAME, ["lah", "leh", "lor"])
    assert len(found) == 1 and found[0]["particle"] == "lah"
    assert found[0]["duration_ratio"] == pytest.approx(1.4) and found[0]["contour"] == "rise-fall"
    lor = {"particle": "lor", "duration_ratio": 1.6, "pitch_slope_st_per_s": 30.0, "contour": "rise"}
    summary = particles.summarise(found + [lor], recorded=found)
    assert summary["lah"]["meets"] == {"duration_ratio": True, "contour": True}
    assert summary["lah"]["recorded"]["count"] == 1
    assert summary["lor"]["meets"] == {"duration_ratio": False, "contour": False}
    assert summary["lor"]["expected"] == {"contours": ["flat", "fall"], "duration_ratio": [0.9, 1.1]}


def test_a_users_particle_table_replaces_and_adds_rows(tmp_path):
    table_file = tmp_path / "particles.yaml"
    table_file.write_text("lor: {contours: [rise], duration_ratio: [1.4, 1.8]}\n"
                          "sia: {contours: [fall, flat], duration_ratio: [1.0, 1.2]}\n")
    table = particles.load_table(str(table_file))
    assert table["lor"] == particles.Expectation(("rise",), (1.4, 1.8)) and "sia" in table
    assert table["lah"] == particles.EXPECTED["lah"]                   # the plan's other rows stay
    lor = {"particle": "lor", "duration_ratio": 1.6, "pitch_slope_st_per_s": 30.0, "contour": "rise"}
    assert particles.summarise([lor], table=table)["lor"]["meets"] == {"duration_ratio": True, "contour": True}
    table_file.write_text("lor: {contours: [wobble], duration_ratio: [1.4, 1.8]}\n")
    with pytest.raises(ValueError, match="particle 'lor': expected"):
        particles.load_table(str(table_file))
    table_file.write_text("lor: {contours: [rise], duration_ratio: [2, 1]}\n")
    with pytest.raises(ValueError, match="0 < low <= high"):
        particles.load_table(str(table_file))
