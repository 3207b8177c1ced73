#!/usr/bin/env bash
# The whole CLI flow as people would type it, through the installed `backchannel` command.
#
# usage: cli_flow.sh RELAY_URL WORK_DIR
#
# A facilitator (Farida) opens a room and invites; Ben is approved, Dana is turned away;
# Chen joins an auto-approve room; messages and a file go back and forth and are read
# back with --json; Ben is removed and does not see what is said after.
set -euo pipefail
# grep below reads all its input (no -q): with pipefail, grep -q exiting early would
# make the command writing into it fail on SIGPIPE.

relay=${1:?usage: cli_flow.sh RELAY_URL WORK_DIR}
work=${2:?usage: cli_flow.sh RELAY_URL WORK_DIR}
mkdir -p "$work"
cd "$work"
export BACKCHANNEL_PASSPHRASE="correct horse battery staple"
unset BACKCHANNEL_HOME BACKCHANNEL_PROXY

fac() { backchannel --home "$work/farida" "$@"; }
ben() { backchannel --home "$work/ben" "$@"; }
chen() { backchannel --home "$work/chen" "$@"; }
dana() { backchannel --home "$work/dana" "$@"; }
field() { python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# the request id of NAME waiting in ROOM (the joiner may still be asking: poll)
request_of() {
    local room=$1 name=$2 id=""
    for _ in $(seq 1 50); do
        id=$(fac --json requests "$room" | python3 -c '
import json, sys
found = [r["id"] for r in json.load(sys.stdin) if r["name"] == sys.argv[1]]
print(found[0] if found else "")' "$name")
        [ -n "$id" ] && { echo "$id"; return 0; }
        sleep 0.2
    done
    fail "no join request from $name in $room"
}

echo "== profiles"
fac init --name Farida --relay "$relay" >/dev/null
ben init --name Ben --relay "$relay" >/dev/null
chen init --name Chen --relay "$relay" >/dev/null
dana init --name Dana --relay "$relay" >/dev/null

echo "== a manual room, Ben approved"
room=$(fac --json room create "Water talks" --retention 30d | field room)
link=$(fac --json room invite "$room" --uses 2 --expires 1h | field link)
ben join "$link"
fac approve "$room" "$(request_of "$room" Ben)"
ben sync
ben --json rooms | python3 -c '
import json, sys
rooms = json.load(sys.stdin)
assert [(r["id"], r["title"]) for r in rooms] == [(sys.argv[1], "Water talks")], rooms' "$room"

echo "== Dana turned away"
dana join "$link"
fac deny "$room" "$(request_of "$room" Dana)"
dana sync
[ "$(dana --json rooms)" = "[]" ] || fail "Dana is in a room"

echo "== an auto-approve room with Chen"
open=$(fac --json room create "Open forum" --approval auto | field room)
chen join "$(fac --json room invite "Open forum" | field link)"
fac sync  # Farida's client admits the request
chen sync
chen rooms | grep "Open forum" >/dev/null || fail "Chen is not in the open forum"
chen send "Open forum" "Chen here"
fac --json read "$open" | grep '"text": "Chen here"' >/dev/null || fail "Farida did not get Chen's message"

echo "== chatting"
ben send "Water talks" "hello from Ben"
fac send "Water talks" "welcome, Ben"
ben --json read "Water talks" | python3 -c '
import json, sys
lines = [json.loads(line) for line in sys.stdin]
texts = [(m["sender_name"], m["text"]) for m in lines if m["kind"] == "text"]
assert texts[-2:] == [("Ben", "hello from Ben"), ("Farida", "welcome, Ben")], texts
for m in lines:
    assert {"id", "sender", "sender_name", "text", "time"} <= set(m), m'
fac read "Water talks" | grep "Ben: hello from Ben" >/dev/null || fail "human read"
fac --json members "Water talks" | python3 -c '
import json, sys
members = {m["name"]: (m["role"], m["verified"]) for m in json.load(sys.stdin)}
assert members == {"Farida": ("facilitator", False), "Ben": ("participant", False)}, members'

echo "== safety numbers"
ben verify "Water talks" Farida | grep "Safety number" >/dev/null || fail "verify shows no number"
ben --json verify "Water talks" Farida --confirm | grep '"verified": true' >/dev/null || fail "verify"

echo "== a file"
head -c 20000 /dev/urandom > "$work/minutes.bin"
msg=$(fac --json send-file "Water talks" "$work/minutes.bin" | field id)
ben sync
ben save-file "Water talks" "$msg" "$work/received.bin" >/dev/null
cmp "$work/minutes.bin" "$work/received.bin"

echo "== Ben removed"
fac remove "Water talks" Ben
fac send "Water talks" "only for those still here"
ben sync
if ben --json read "$room" 2>/dev/null | grep "only for those still here" >/dev/null; then
    fail "Ben read a message sent after his removal"
fi
fac --json read "$room" | grep "only for those still here" >/dev/null || fail "Farida's message"

echo "OK"
