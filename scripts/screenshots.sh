#!/usr/bin/env bash
# Screenshots of the real windows, under Xvfb, through a scripted flow:
#   the host window with its invite box, a remote window (light theme), room chat while the agent
#   works, a plan vote in progress, a question, someone waiting in the lobby, and the host window
#   narrowed to 800×600.
#
# Usage: scripts/screenshots.sh [OUT_DIR]          (default: docs/screenshots)
# Needs: xvfb, imagemagick (import), xdotool:
#   apt-get install -y --no-install-recommends xvfb imagemagick xdotool
# Builds target/release/roundtable first unless ROUNDTABLE_BIN names a binary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshots}
mkdir -p "$OUT"
for tool in Xvfb import xdotool; do
    command -v "$tool" >/dev/null || { echo "screenshots: $tool is missing (apt-get install -y xvfb imagemagick xdotool)" >&2; exit 2; }
done
BIN=${ROUNDTABLE_BIN:-}
if [ -z "$BIN" ]; then
    echo "== building the release binary"
    cargo build --release --locked --quiet
    BIN=target/release/roundtable
fi
BIN=$(realpath "$BIN")

work=$(mktemp -d)
# One wide screen with the windows side by side (there is no window manager to stack them, and
# `import -window` captures what is on screen where the window is).
export DISPLAY=:77
# Screenshots are made offline: no public relays.
export ROUNDTABLE_RELAY=off
Xvfb "$DISPLAY" -screen 0 2500x900x24 -nolisten tcp >/dev/null 2>&1 &
pids=($!)
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
sleep 1

say() { echo "== $*"; }
# Waits for a window whose title contains $1 and is not in $2 (ids already known); prints its id.
window() {
    for _ in $(seq 1 100); do
        for id in $(xdotool search --name "$1" 2>/dev/null); do
            case " ${2:-} " in *" $id "*) ;; *) echo "$id"; return 0 ;; esac
        done
        sleep 0.2
    done
    echo "screenshots: no window named '$1' appeared" >&2
    exit 1
}
shot() { # window id, file name
    sleep "${3:-1.5}"
    import -window "$1" "$OUT/$2.png"
    echo "   $OUT/$2.png"
}
# A `join` in line mode fed from a FIFO, so the script can type for it.
joiner() { # name, data dir
    mkfifo "$work/$1.in"
    ROUNDTABLE_LINK="$link" "$BIN" --data-dir "$2" join --name "$1" <"$work/$1.in" >"$work/$1.out" 2>&1 &
    pids+=($!)
    exec {fd}>"$work/$1.in"
    eval "${1}_fd=$fd"
}
type_for() { # name, line
    local fd_var="${1}_fd"
    echo "$2" >&"${!fd_var}"
}

say "the host window (host --mint)"
mkdir -p "$work/project/src"
printf 'fn login() {}\n' >"$work/project/src/login.rs"
(cd "$work/project" && exec "$BIN" --data-dir "$work/host" host --mint --bind 127.0.0.1:0) >"$work/host.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    link=$(grep -m1 -o "roundtable://[^' ]*" "$work/host.out" || true)
    [ -n "$link" ] && break
    sleep 0.2
done
[ -n "$link" ] || { echo "screenshots: the host printed no link:"; cat "$work/host.out"; exit 1; } >&2
host=$(window "roundtable host")
xdotool windowsize "$host" 1280 800 windowmove "$host" 0 0
shot "$host" 01-host-invite 2

say "Ann's window (light theme) and Bob in a terminal"
mkdir -p "$work/ann"
echo '{"theme": "light"}' >"$work/ann/window.json"
before=$(xdotool search --name roundtable 2>/dev/null | tr '\n' ' ')
"$BIN" --data-dir "$work/ann" connect "$link" --name Ann >"$work/ann.out" 2>&1 &
pids+=($!)
ann=$(window "roundtable" "$before")
xdotool windowsize "$ann" 1100 760 windowmove "$ann" 1300 0
joiner Bob "$work/bob"
sleep 2
type_for Bob "/chat hi all — I'll take the login bug"
type_for Bob "/plan fix the login redirect in src/login.rs"
sleep 3
shot "$ann" 02-remote-plan-vote-light
shot "$host" 03-host-plan-vote 0.5

say "room chat while the plan waits for Ann"
type_for Bob "/approve"
type_for Bob "/chat Ann, have a look at the plan card — I approved"
sleep 2
shot "$ann" 04-remote-room-chat 1
type_for Bob "/cancel"

say "a question"
sleep 3
type_for Bob "/ask the migration"
sleep 3
shot "$host" 05-host-question

say "someone in the lobby"
lobby_link=$("$BIN" --data-dir "$work/host" share mint -w project --admission --label "design review" 2>/dev/null | tail -1)
mkdir -p "$work/dan"
ROUNDTABLE_LINK="$lobby_link" "$BIN" --data-dir "$work/dan" join --name Dan </dev/null >"$work/dan.out" 2>&1 &
pids+=($!)
sleep 3
shot "$host" 06-host-lobby 0.5

say "the host window at 800×600"
xdotool windowsize "$host" 800 600
shot "$host" 07-host-narrow 2

say "done: $(ls "$OUT"/*.png | wc -l) screenshots in $OUT"
