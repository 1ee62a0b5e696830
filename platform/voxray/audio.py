"""AudioSpec: the one source of audio constants for preprocessing, acoustic model and vocoder.

The mel convention is HiFi-GAN's (magnitude STFT, Slaney mel filters, natural-log compressed,
reflect-padded by (n_fft - hop) / 2 with no centring), so a mel of ``n`` frames corresponds to
exactly ``n * hop_length`` waveform samples and a vocoder trained on this store lines up with it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AudioSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(22050, description="samples per second of the store's audio")
    n_fft: int = Field(1024, description="STFT size")
    hop_length: int = Field(256, description="samples per mel frame")
    win_length: int = Field(1024, description="STFT window, <= n_fft")
    n_mels: int = Field(80, description="mel channels")
    fmin: float = Field(0.0, description="lowest mel filter edge, Hz")
    fmax: float = Field(8000.0, description="highest mel filter edge, Hz (<= sample_rate / 2)")
    log_floor: float = Field(1e-5, description="mel values are clamped to this before the log")

    @model_validator(mode="after")
    def _check(self) -> "AudioSpec":
        problems = []
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.win_length > self.n_fft:
            problems.append(f"win_length={self.win_length} must be <= n_fft={self.n_fft}")
        if (self.n_fft - self.hop_length) % 2:
            problems.append(
                f"n_fft - hop_length = {self.n_fft - self.hop_length} must be even "
                "(the reflect padding is split evenly on both sides)"
            )
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= fmin ({self.fmin}) < fmax ({self.fmax}) <= sample_rate / 2 "
                f"({self.sample_rate / 2})"
            )
        if not self.log_floor > 0:
            problems.append(f"log_floor={self.log_floor} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate

    @property
    def pad(self) -> int:
        return (self.n_fft - self.hop_length) // 2

    def frames_for(self, n_samples: int) -> int:
        """Mel frames for a waveform of ``n_samples`` (HiFi-GAN padding: floor(n / hop))."""
        return n_samples // self.hop_length
