#!/usr/bin/env bash
# Remove edge-gateway installed by scripts/install.sh: stop and disable the units, remove them and
# the venv. The config and the state (outbox, node key) stay unless --purge.
# Safe to run again, or on a half-installed box.
set -euo pipefail

readonly PROG=uninstall.sh
readonly UNIT_DIR=/etc/systemd/system
# The socket first: while it listens, a client connecting in between would start the service again.
readonly UNITS=(edge-gateway.socket edge-gateway.service)

usage() {
    cat <<EOF
usage: $PROG [--root DIR] [--purge]

Stops and disables edge-gateway, removes its units, sysusers.d/tmpfiles.d/modules-load.d entries and
/opt/edge-gateway. Keeps /etc/edge-gateway and /var/lib/edge-gateway (config, outbox, node key)
unless --purge. The edge-gateway user and the kiosk group are always kept.

  --root DIR   act on the layout under DIR (also: DESTDIR=DIR) instead of this system
  --purge      also delete /etc/edge-gateway, /var/lib/edge-gateway and local unit drop-ins;
               the node key and any unsent outbox messages are lost
  -h, --help   this text
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
show() {
    local out="" arg
    for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
    printf '%s' "${out% }"
}
would_run() { note "would run on the live system: $(show "$@")"; }
remove() {
    local path
    for path in "$@"; do
        if [ -e "$path" ] || [ -L "$path" ]; then
            rm -rf -- "$path"
            note "removed $path"
        fi
    done
}

ROOT=${DESTDIR:-/}
PURGE=0
while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ -n "$ROOT" ] || die "--root needs a directory"
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...)"
if [ "$ROOT" = / ]; then
    LIVE=1
    R=""
else
    LIVE=0
    [ -d "$ROOT" ] || die "$ROOT is not a directory"
    R=$(cd "$ROOT" && pwd)
    [ "$R" != / ] || die "--root resolves to /; run without --root to uninstall from this system"
fi

if [ "$LIVE" -eq 1 ]; then
    say "removing edge-gateway from this system"
else
    say "removing the edge-gateway layout under $R (the running system is not changed)"
fi

# Stop first, so nothing is running from the files about to go.
say "stop and disable"
if [ "$LIVE" -eq 1 ]; then
    for unit in "${UNITS[@]}"; do
        if [ -e "$UNIT_DIR/$unit" ]; then
            systemctl disable --now "$unit"
        else
            note "$unit not installed"
        fi
    done
elif [ -e "$R$UNIT_DIR/edge-gateway.service" ] || [ -e "$R$UNIT_DIR/edge-gateway.socket" ]; then
    # Offline: only removes the [Install] symlinks under the root.
    systemctl --root="$R" --quiet disable "${UNITS[@]}"
    would_run systemctl disable --now "${UNITS[@]}"
fi

# Shared directories install.sh had to create (it records them under /opt/edge-gateway).
CREATED_DIRS=()
if [ -f "$R/opt/edge-gateway/created-dirs" ]; then
    mapfile -t CREATED_DIRS <"$R/opt/edge-gateway/created-dirs"
fi

say "units, sysusers.d, tmpfiles.d, modules-load.d, venv"
remove "$R$UNIT_DIR/edge-gateway.service" "$R$UNIT_DIR/edge-gateway.socket" \
    "$R/etc/sysusers.d/edge-gateway.conf" "$R/etc/tmpfiles.d/edge-gateway.conf" \
    "$R/etc/modules-load.d/edge-gateway.conf" \
    "$R/opt/edge-gateway" "$R/run/edge-gateway"

if [ "$PURGE" -eq 1 ]; then
    say "purge: config, state and local drop-ins"
    remove "$R/etc/edge-gateway" "$R/var/lib/edge-gateway" \
        "$R$UNIT_DIR/edge-gateway.service.d" "$R$UNIT_DIR/edge-gateway.socket.d"
else
    note "kept $R/etc/edge-gateway and $R/var/lib/edge-gateway (config, outbox, node key); --purge deletes them"
fi

# Deepest first, and only if nothing else has put files in them since.
for dir in $(printf '%s\n' "${CREATED_DIRS[@]}" | sort -r); do
    if [ -d "$R$dir" ] && rmdir "$R$dir" 2>/dev/null; then
        note "removed $R$dir (created by install.sh, now empty)"
    fi
done

if [ "$LIVE" -eq 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed "${UNITS[@]}" 2>/dev/null || true
else
    would_run systemctl daemon-reload
fi
note "user edge-gateway and group kiosk kept (files may still belong to them); remove by hand with: userdel edge-gateway; groupdel kiosk"
say "done"
