#!/usr/bin/env bash
# One setup step for a fresh machine; both README commands run it. Idempotent: when
# pyproject.toml, constraints.txt and this script are unchanged and the venv imports, it
# returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
STAMP="$VENV/.voxray-setup"
WANT=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

system_packages() {
    # espeak-ng gives phonemes (libespeak-ng) and built the sample corpus; Chromium and its
    # driver open voxray evaluate's HTML report in the tests (a real headless browser);
    # alsa-utils ships a real person's recordings (/usr/share/sounds/alsa), on which the tests
    # calibrate the MCD beside espeak-ng audio; sox is the binary qwen_tts's `sox` module looks
    # for when imported (it prints a warning into every console and worker log without it).
    if ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 && command -v espeak-ng >/dev/null \
            && command -v chromium >/dev/null && command -v chromedriver >/dev/null \
            && [ -f /usr/share/sounds/alsa/Front_Center.wav ] && command -v sox >/dev/null; then
        return 0
    fi
    local apt=""
    if [ "$(id -u)" = 0 ]; then apt="apt-get"; elif sudo -n true 2>/dev/null; then apt="sudo apt-get"; fi
    if [ -n "$apt" ] && command -v apt-get >/dev/null; then
        echo "setup: installing espeak-ng, chromium, chromium-driver, alsa-utils and sox with $apt"
        $apt update -qq && DEBIAN_FRONTEND=noninteractive $apt install -y -qq espeak-ng chromium chromium-driver alsa-utils sox >/dev/null
    else
        cat >&2 <<'MSG'
setup: WARNING: espeak-ng is missing and cannot be installed here (no root, no apt).
       Install it by hand:   sudo apt-get install espeak-ng      (Debian/Ubuntu)
                             sudo dnf install espeak-ng          (Fedora)
                             brew install espeak-ng              (macOS)
       Until then voxray falls back to character tokens for every language.
       The report test needs chromium and chromium-driver the same way.
MSG
    fi
}

system_packages

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import voxray" 2>/dev/null; then
    exit 0
fi

echo "setup: building $VENV from constraints.txt (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install -c constraints.txt pip setuptools wheel
# torch first: DeepSpeed builds against the installed torch, without build isolation.
$PIP install -c constraints.txt torch torchaudio
DS_BUILD_OPS=0 $PIP install --no-build-isolation -c constraints.txt deepspeed
# pysptk and pesq build from source against numpy with Cython (no build isolation: pinned versions).
$PIP install -c constraints.txt Cython numpy
$PIP install --no-build-isolation -c constraints.txt -e ".[dev]"
# Qwen3-TTS: qwen-tts-hf is the transformers-5 build of Qwen's qwen-tts (the same qwen_tts module;
# qwen-tts itself pins transformers 4.57.3). Its metadata pins accelerate==1.12.0 (voxray's stack
# has a newer one) and pulls gradio for a demo voxray never runs, so it goes in without its
# dependencies; what it imports is in the stack (librosa, einops, onnxruntime, soundfile) or here
# (sox, the Python wrapper). voxray.models.pretrained.qwen3_tts_compat adapts it to transformers 5.23.
$PIP install --no-deps -c constraints.txt qwen-tts-hf sox
"$VENV/bin/python" -c 'import voxray.cli' >/dev/null 2>&1 || { echo "setup: voxray does not import" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'from importlib.metadata import version as v; print(*(f"{p} {v(p)}" for p in ("ray", "torch", "torchaudio", "deepspeed")), sep=", ")'))"
