#!/usr/bin/env bash
# System packages Scriptorium needs on a Debian/Ubuntu machine or image:
#   ffmpeg     command-line transcoding (the demo writes MP3/Ogg/FLAC; decoding itself uses PyAV's bundled FFmpeg)
#   espeak-ng  speech synthesis for the demo corpus
#   sox        audio inspection in tests and benchmarks
#   chromium   headless, renders report.html in a test (a person's view of the run report)
#   chromium-driver  chromedriver, so Selenium drives that chromium in the `browse` test (no browser download)
set -euo pipefail
need=()
for cmd in ffmpeg espeak-ng sox chromium; do command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd"); done
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
