#!/usr/bin/env bash
# A real transfer end to end on the embedded stack: start `sftd dev`, create
# alice and bob, send a 64 MiB random file from alice to bob while a watcher
# prints the session's events, then check the bytes arrived intact.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail
bin=${1:?usage: demo.sh BIN_DIR}
work=$(mktemp -d -t sft-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The demo runs a stack of its own for users of its own: nothing of the
# caller's SFT or NATS settings, or of their config files, may reach it.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SFT_|XDG_|NATS_)')
export HOME=$work/home SFT_DATA_DIR=$work/data
mkdir -p "$HOME"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "sftd dev: embedded NATS (TLS, JetStream), state store, auth, session and key services"
"$bin/sftd" dev --listen 127.0.0.1:0 --log-level warn >"$work/sftd.out" 2>"$work/sftd.log" &
pids+=($!)
for _ in $(seq 100); do grep -q 'NATS at' "$work/sftd.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'NATS at' "$work/sftd.out" || { echo "sftd dev did not start:"; cat "$work/sftd.log"; exit 1; }
cat "$work/sftd.out"
export SFT_NATS_URL=$(awk '/^sftd dev: NATS at /{print $NF; exit}' "$work/sftd.out")

say "sftd user add alice / bob (password read from stdin)"
echo 'correct horse alice' | "$bin/sftd" user add alice
echo 'correct horse bob' | "$bin/sftd" user add bob

as() { # as USER CMD...: run sft-cli with USER's own config dir (token cache)
  local u=$1; shift
  # exec: run in the background, the subshell becomes sft-cli itself, so
  # the pid cleanup kills is sft-cli's and nothing outlives the demo.
  SFT_CONFIG_DIR=$work/$u SFT_USER=$u exec "$bin/sft-cli" "$@"
}
say "sft-cli login (each user caches a 0600 token)"
echo 'correct horse alice' | (as alice login)
echo 'correct horse bob' | (as bob login)

head -c $((64 << 20)) /dev/urandom >"$work/report.bin"
say "alice: sft-cli watch   (events of her sessions, live)"
as alice watch >"$work/events.txt" 2>&1 &
pids+=($!)
sleep 0.5

say "alice: sft-cli send report.bin --to bob"
as alice send "$work/report.bin" --to bob >"$work/send.out" 2>"$work/send.err" &
send=$!
until (as bob ls --state waiting) 2>/dev/null | grep -q report.bin; do sleep 0.1; done
cat "$work/send.err"

say "bob: sft-cli recv -o inbox"
mkdir -p "$work/inbox"
time (as bob recv -o "$work/inbox")
wait "$send"
cat "$work/send.out"

say "the file arrived intact"
sha256sum "$work/report.bin" "$work/inbox/report.bin" | sed "s|$work/||"
cmp "$work/report.bin" "$work/inbox/report.bin"

sleep 0.3
say "events seen live by alice's watcher"
cat "$work/events.txt"
