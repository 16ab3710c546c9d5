#!/usr/bin/env bash
# Install edge-gateway on a Debian edge box from this checkout, or lay the same files out under
# a throwaway root (--root DIR / DESTDIR) without touching the running system.
# Safe to run again: it upgrades the code, keeps the config and the node key.
set -euo pipefail
# The venv must be readable by the service user whatever the technician's umask is.
umask 0022

readonly PROG=install.sh
readonly UNIT_DIR=/etc/systemd/system
readonly APP_DIR=/opt/edge-gateway
readonly VENV=/opt/edge-gateway/venv
readonly CONF_FILE=/etc/edge-gateway/gateway.toml
readonly SERVICE_USER=edge-gateway

usage() {
    cat <<EOF
usage: $PROG [--root DIR] [--pcsc] [--config FILE] [--python PYTHON] [--wheels DIR]

Installs edge-gateway: a venv under $VENV with this checkout pip-installed in it,
the config $CONF_FILE (only if absent), the systemd units, sysusers.d and tmpfiles.d
entries, the service user, the node signing key, then enables and starts the socket and service.

  --root DIR       lay everything out under DIR instead of / (also: DESTDIR=DIR); nothing on the
                   running system is changed and the steps that need it are printed instead
  --pcsc           also install the [pcsc] extra (pyscard) for PC/SC card readers
  --config FILE    config to install when none exists (default: config/gateway.example.toml)
  --python PYTHON  interpreter the venv is built from (default: /usr/bin/python3, >= 3.11)
  --wheels DIR     install offline from a wheelhouse made on a connected machine as
                   docs/install.md says (dependencies, the setuptools build backend, and pyscard
                   built as a wheel for --pcsc)
  -h, --help       this text
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
# Quote a command the way a technician could paste it back into a shell.
show() {
    local out="" arg
    for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
    printf '%s' "${out% }"
}
would_run() { note "would run on the live system: $(show "$@")"; }

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${DESTDIR:-/}
PCSC=0
CONFIG_SRC=""
PYTHON=/usr/bin/python3
WHEELS=""

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --pcsc) PCSC=1; shift ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG_SRC=$2; shift 2 ;;
        --config=*) CONFIG_SRC=${1#*=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a directory"; WHEELS=$2; shift 2 ;;
        --wheels=*) WHEELS=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ -n "$ROOT" ] || die "--root needs a directory"
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...): files are installed owned by root and $SERVICE_USER"
for tool in systemd-sysusers systemd-tmpfiles systemctl install tar; do
    command -v "$tool" >/dev/null || die "$tool not found; this installer needs a systemd-based Debian system"
done

if [ "$ROOT" = / ]; then
    LIVE=1
    R=""
    ROOT_ARG=()
else
    LIVE=0
    mkdir -p "$ROOT"
    R=$(cd "$ROOT" && pwd)
    [ "$R" != / ] || die "--root resolves to /; run without --root to install on this system"
    ROOT_ARG=(--root="$R")
fi
if [ -z "$CONFIG_SRC" ]; then
    CONFIG_SRC=$SRC/config/gateway.example.toml
fi

if [ "$LIVE" -eq 1 ]; then
    say "installing edge-gateway from $SRC on this system"
else
    say "laying out edge-gateway from $SRC under $R (the running system is not changed)"
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PYTHON is missing or older than 3.11; install Python 3.11+ or pass --python"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot create venvs; on Debian: apt-get install python3-venv"
if [ ! -e "$R$CONF_FILE" ] && [ ! -f "$CONFIG_SRC" ]; then
    die "no config to install: $CONFIG_SRC not found (pass --config FILE)"
fi
# A wheelhouse missing the build backend or a pyscard wheel fails in pip half-way; say so first.
if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "wheelhouse $WHEELS is not a directory"
    WHEELS=$(cd "$WHEELS" && pwd)
    compgen -G "$WHEELS/setuptools-*.whl" >/dev/null ||
        die "wheelhouse $WHEELS has no setuptools wheel, the build backend pip needs to build edge-gateway; make the wheelhouse as docs/install.md says (\"Offline install\")"
    if [ "$PCSC" -eq 1 ]; then
        compgen -G "$WHEELS/pyscard-*.whl" >/dev/null ||
            die "wheelhouse $WHEELS has no pyscard wheel (--pcsc); build one as docs/install.md says (\"Offline install\"), or drop --pcsc"
    fi
fi

# Directories this install creates in shared places; recorded (step 4) so uninstall.sh removes
# them again when they are left empty, and leaves the ones the system already had.
CREATED_DIRS=()
for dir in /etc/sysusers.d /etc/tmpfiles.d /etc/modules-load.d "$UNIT_DIR" /opt; do
    [ -d "$R$dir" ] || CREATED_DIRS+=("$dir")
done

# 1. Users first: everything below is owned by them.
say "service user and groups (sysusers.d)"
install -D -m 0644 "$SRC/systemd/edge-gateway.sysusers" "$R/etc/sysusers.d/edge-gateway.conf"
systemd-sysusers "${ROOT_ARG[@]}" edge-gateway.conf
GID=$(awk -F: -v g="$SERVICE_USER" '$1 == g { print $3 }' "$R/etc/group")
[ -n "$GID" ] || die "group $SERVICE_USER missing from $R/etc/group after systemd-sysusers"

# 2. Directories with their owners and modes; /run/edge-gateway must exist before the socket.
say "directories (tmpfiles.d)"
install -D -m 0644 "$SRC/systemd/edge-gateway.tmpfiles" "$R/etc/tmpfiles.d/edge-gateway.conf"
systemd-tmpfiles "${ROOT_ARG[@]}" --create edge-gateway.conf

# 3. Device class drivers, so DeviceAllow= finds their majors when the service starts.
say "device class drivers (modules-load.d)"
install -D -m 0644 "$SRC/systemd/edge-gateway.modules-load" "$R/etc/modules-load.d/edge-gateway.conf"
if [ "$LIVE" -eq 1 ]; then
    systemctl restart systemd-modules-load.service ||
        note "warning: some driver in /etc/modules-load.d/edge-gateway.conf did not load (journalctl -u systemd-modules-load); devices of that class stay inaccessible"
else
    would_run systemctl restart systemd-modules-load.service
fi

# 4. The venv, built from a clean copy so the checkout stays untouched (and may be read-only).
# A venv is complete once the marker exists; a new one that fails (or is interrupted) is removed,
# and one left without the marker by an older failure is built again from scratch.
say "python venv $VENV"
readonly VENV_MARK=$VENV/.edge-gateway-complete
NEW_VENV=0
BUILD=""
cleanup() {
    [ -z "$BUILD" ] || rm -rf "$BUILD"
    if [ "$NEW_VENV" -eq 1 ] && [ ! -e "$R$VENV_MARK" ] && [ -e "$R$VENV" ]; then
        rm -rf "$R$VENV"
        printf '%s: removed the unfinished venv %s\n' "$PROG" "$R$VENV" >&2
    fi
}
trap cleanup EXIT
if [ -x "$R$VENV/bin/python" ] && [ -e "$R$VENV_MARK" ]; then
    note "venv exists, upgrading edge-gateway in it"
else
    if [ -e "$R$VENV" ]; then
        note "$VENV was left unfinished by an earlier run; building it again"
        rm -rf "$R$VENV"
    fi
    install -d -m 0755 "$R$APP_DIR"
    NEW_VENV=1
    "$PYTHON" -m venv "$R$VENV" || die "$PYTHON could not create the venv $VENV"
fi
BUILD=$(mktemp -d)
tar -C "$SRC" \
    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache \
    --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
    -cf - . | tar -C "$BUILD" -xf -
TARGET=$BUILD
[ "$PCSC" -eq 0 ] || TARGET="${BUILD}[pcsc]"
# No cache: nothing of the install may stay behind outside the venv (uninstall removes only that).
PIP=("$R$VENV/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check)
if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "wheelhouse $WHEELS is not a directory"
    PIP+=(--no-index --find-links "$WHEELS")
fi
"${PIP[@]}" "$TARGET" || die "pip could not install edge-gateway into $VENV (see above)"
[ -x "$R$VENV/bin/edge-gateway" ] || die "$VENV/bin/edge-gateway missing after pip install"
touch "$R$VENV_MARK"
MANIFEST=$R$APP_DIR/created-dirs
{
    [ ! -f "$MANIFEST" ] || cat "$MANIFEST"
    [ ${#CREATED_DIRS[@]} -eq 0 ] || printf '%s\n' "${CREATED_DIRS[@]}"
} | sort -u >"$MANIFEST.new"
mv "$MANIFEST.new" "$MANIFEST"
install -D -m 0644 "$SRC/docs/install.md" "$R$APP_DIR/doc/install.md"

# 5. Config: installed once, never overwritten (it is the site's, not ours).
say "config $CONF_FILE"
if [ -e "$R$CONF_FILE" ]; then
    note "exists, left as it is"
else
    install -m 0640 -o 0 -g "$GID" "$CONFIG_SRC" "$R$CONF_FILE"
    note "installed from $CONFIG_SRC; edit it for this site (what is left to do is listed at the end)"
fi

# 6. Units.
say "systemd units in $UNIT_DIR"
install -D -m 0644 "$SRC/systemd/edge-gateway.socket" "$R$UNIT_DIR/edge-gateway.socket"
install -D -m 0644 "$SRC/systemd/edge-gateway.service" "$R$UNIT_DIR/edge-gateway.service"

# 7. Node signing key, created once by the service user so only it can read it.
say "node signing key"
KEY_FILE=$("$R$VENV/bin/python" - "$R$CONF_FILE" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    cfg = tomllib.load(f)
state_dir = cfg.get("node", {}).get("state_dir", "/var/lib/edge-gateway")
print(cfg.get("uplink", {}).get("key_file", f"{state_dir}/keys/node.ed25519"))
PY
) || die "cannot read $CONF_FILE as TOML; fix it and run $PROG again"
KEYS_INIT=(runuser -u "$SERVICE_USER" -- "$VENV/bin/edge-gateway" keys init -c "$CONF_FILE")
if [ -e "$R$KEY_FILE" ]; then
    note "$KEY_FILE exists, kept"
elif [ "$LIVE" -eq 1 ]; then
    (cd / && umask 0077 && "${KEYS_INIT[@]}") ||
        die "key generation failed; check $CONF_FILE (edge-gateway config check -c $CONF_FILE) and run $PROG again"
    note "created $KEY_FILE"
else
    would_run "${KEYS_INIT[@]}"
fi

# What the technician still has to set up, from the installed config (also shown by diag).
left_to_do() {
    "$R$VENV/bin/python" - "$R$CONF_FILE" "$CONF_FILE" <<'PY'
import sys

from gateway.config import load_config
from gateway.startup import left_to_do

config = load_config(sys.argv[1])
steps = left_to_do(config)
steps.append(
    "register the node's public key with the cloud: runuser -u edge-gateway -- "
    f"/opt/edge-gateway/venv/bin/edge-gateway keys show --public -c {sys.argv[2]}"
)
steps.append(f"after editing {sys.argv[2]}: systemctl restart edge-gateway.service")
for number, step in enumerate(steps, 1):
    print(f"  {number}. {step}")
PY
}

# 8. Enable; start the socket first so kiosk apps can connect while the daemon comes up.
say "enable and start"
if [ "$LIVE" -eq 1 ]; then
    WAS_ACTIVE=$(systemctl is-active edge-gateway.service || true)
    systemctl daemon-reload
    systemctl enable edge-gateway.socket edge-gateway.service
    systemctl start edge-gateway.socket
    VERB=start
    [ "$WAS_ACTIVE" != active ] || VERB=restart
    if ! systemctl "$VERB" edge-gateway.service; then
        # The daemon logged why in one line (the key and the fix); show it, not a traceback.
        journalctl -u edge-gateway.service -b -n 50 -o cat --no-pager 2>/dev/null |
            grep '"startup_failed"' | tail -n 1 | sed 's/^/    /' || true
        say "left to do"
        left_to_do || true
        die "installed, but edge-gateway.service did not start; fix what the log line above says, then: systemctl restart edge-gateway.service (journalctl -u edge-gateway shows more)"
    fi
    [ "$VERB" = start ] || note "restarted the running daemon on the new code"
    "$VENV/bin/edge-gateway" diag -c "$CONF_FILE" --only config key daemon device broker || true
    say "left to do"
    left_to_do || note "(could not read $CONF_FILE to list them: edge-gateway config check -c $CONF_FILE)"
    say "done: the service runs; systemctl status edge-gateway; journalctl -u edge-gateway -f"
else
    # Offline: only creates the [Install] symlinks under the root, never talks to systemd.
    systemctl "${ROOT_ARG[@]}" --quiet enable edge-gateway.socket edge-gateway.service
    note "enabled under $R"
    would_run systemctl daemon-reload
    would_run systemctl enable --now edge-gateway.socket edge-gateway.service
    say "done: layout under $R"
fi
