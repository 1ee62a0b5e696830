import pytest
from pydantic import ValidationError

from voxray.audio import AudioSpec


def test_frames_and_padding():
    spec = AudioSpec()
    assert spec.pad == (1024 - 256) // 2
    assert spec.frames_for(256 * 10 + 255) == 10
    assert spec.frame_seconds == pytest.approx(256 / 22050)


@pytest.mark.parametrize("kwargs", [
    {"hop_length": 0}, {"win_length": 2048}, {"fmax": 12000}, {"fmin": 9000},
    {"n_fft": 1024, "hop_length": 255}, {"log_floor": 0},
])
def test_invalid_specs(kwargs):
    with pytest.raises(ValidationError):
        AudioSpec(**kwargs)
