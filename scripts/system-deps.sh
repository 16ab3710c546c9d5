#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real (broker, PC/SC stack, systemd tools,
# ffmpeg for the V4L2 capture path, CJK fonts for raster receipt lines, chromium for the kiosk
# page). Root installs them; anyone else is told the command.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have mosquitto || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
have pcscd || [ -x /usr/sbin/pcscd ] || need+=(pcscd)
[ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || ls /usr/lib/pcsc/drivers/*/libifdvpcd* >/dev/null 2>&1 \
  || ls /usr/lib/pcsc/drivers/serial/* >/dev/null 2>&1 || need+=(vsmartcard-vpcd)
[ -e /usr/include/PCSC/winscard.h ] || need+=(libpcsclite-dev)
have swig || need+=(swig)
have systemd-socket-activate || need+=(systemd)
have systemd-analyze || need+=(systemd)
have ffmpeg || need+=(ffmpeg)
have curl || need+=(curl)
have ser2net || [ -x /usr/sbin/ser2net ] || need+=(ser2net)
have gcc || need+=(gcc)
# CJK fonts for receipt lines the printer's own font cannot print (drawn as raster images).
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
[ -e /usr/share/fonts/truetype/hanazono/HanaMinB.ttf ] || need+=(fonts-hanazono)
# The kiosk page's browser test drives Debian's chromium headless through chromedriver (selenium).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# The slow install test boots a Debian 12 root under systemd-nspawn (tests/systemd/test_nspawn.py).
have systemd-nspawn || need+=(systemd-container)
have debootstrap || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# The install-path tests build a venv from Debian's own python3.
if [ -x /usr/bin/python3 ]; then /usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1 || need+=(python3-venv); else need+=(python3 python3-venv); fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
# shellcheck disable=SC2207
need=($(printf '%s\n' "${need[@]}" | sort -u))
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
