#!/usr/bin/env bash
# Installs every Debian package mcm builds against. Run as root (or through sudo).
#   tools/install-deps.sh          install what is missing
#   tools/install-deps.sh --check  exit 1 and list what is missing, install nothing
set -euo pipefail

# One line per package, with what mcm uses it for.
PACKAGES=(
  build-essential   # gcc, make
  pkg-config        # library detection in the Makefile
  libopenblas-openmp-dev # CPU matrix products (cblas), threaded with OpenMP like mcm's own loops
  libhdf5-dev       # tensor files, checkpoints, data shards
  libinih-dev       # INI configuration parser
  libsndfile1-dev   # audio reading and writing (WAV, FLAC, OGG, ...)
  libsoxr-dev       # high-quality resampling to 16 kHz
  libfftw3-dev      # FFTs for the mel front end (single precision: libfftw3f)
  libjansson-dev    # JSON manifests
  libpng-dev        # spectrogram pictures (./infer --mel-png)
  libfluidsynth-dev # rendering the demo dataset from generated MIDI
  fluid-soundfont-gm # the General MIDI SoundFont the demo dataset is rendered with
  libopenmpi-dev    # data-parallel training across CPU processes (mpicc, MPI collectives)
  openmpi-bin       # mpirun
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; run as root: apt-get install -y ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
