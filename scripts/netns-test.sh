#!/usr/bin/env bash
# Multi-host network faults in network namespaces.
#
# Builds cmd/negotiate once, then runs one real `negotiate node` daemon in
# each of 5 network namespaces (10.231.0.1-5), joined by veth pairs to a
# bridge that lives in a sixth "hub" namespace, so nothing changes in the
# host's own namespace. Sessions are driven with the CLI (propose, accept;
# the nodes decide by a policy file). Faults, each with sessions in flight:
#   1. baseline (no fault)
#   2. a partition after every party signed a signed offer (nftables drop
#      rules isolate the initiator past the deadline: every signed chain
#      must stay locked, then commit once healed)
#   3. a partition {1,2} | {3,4,5} in the middle of a batch of sessions
#   4. random packet loss (nftables `numgen random mod 100 < N drop`)
#   5. a rate limit (tc tbf on every node's link)
# After healing it waits until no node has an open session, stops the
# daemons with SIGTERM and checks every chain with scripts/chaincheck:
# `chain verify` passes, no lock is left, every record is on all its
# parties' chains or none with identical bytes, and each session's final
# outcome at its initiator matches the chains. It prints what it checked
# and exits 1 on any violation.
#
# Needs root and `ip netns`; installs Debian's nftables when `nft` is
# missing. Namespaces, rules (all inside the namespaces) and daemons are
# removed on exit, failure and Ctrl-C included; the work directory (homes
# and daemon logs) is kept after a failure.
#
# Environment: NEGOTIATE_BIN (a prebuilt binary), NETNS_SEED (bash RANDOM
# seed), NETNS_LOSS (percent, default 15), KEEP=1 (keep the work directory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=5
PFX="ngt$$"                 # namespace prefix, unique per run
HUB="${PFX}-hub"
NET=10.231.0               # node i is $NET.i, inside the namespaces only
PORT=4001
LOSS="${NETNS_LOSS:-15}"
SEED="${NETNS_SEED:-$$}"
RANDOM=$SEED
SESSION_TIMEOUT=15s

FAILS=0
CHECKS=0
declare -a PIDS AG SESSIONS
STATE=setup

say() { printf '== %s\n' "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf '   ok: %s\n' "$*"; }
violation() { FAILS=$((FAILS + 1)); printf '   VIOLATION: %s\n' "$*" >&2; }
die() { printf 'netns-test: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
	die "needs root (network namespaces, nftables, tc)"
fi
if ! ip netns list >/dev/null 2>&1; then
	die "ip netns does not work here"
fi
if ! command -v nft >/dev/null 2>&1; then
	say "nft missing: installing Debian's nftables"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq nftables >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq nftables >/dev/null; } ||
		die "could not install nftables (apt-get install nftables)"
fi
for tool in jq tc go; do
	if [ "$tool" = go ] && [ -n "${NEGOTIATE_BIN:-}" ]; then continue; fi
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

WORK="$(mktemp -d /tmp/netns-test.XXXXXX)"
HOST_RULES_BEFORE="$(nft list ruleset 2>/dev/null || true)"

ns() { echo "${PFX}-n$1"; }
neg() { local i=$1; shift; "$BIN" --home "$WORK/n$i" "$@"; }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for i in "${!PIDS[@]}"; do
		kill -TERM "${PIDS[$i]}" 2>/dev/null || true
	done
	for i in "${!PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "${PIDS[$i]}" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	for i in $(seq "$N"); do ip netns del "$(ns "$i")" 2>/dev/null || true; done
	ip netns del "$HUB" 2>/dev/null || true
	if [ "$rc" = 0 ] && [ "$FAILS" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "netns-test: homes and daemon logs kept in $WORK" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "netns-test: interrupted" >&2; exit 130' INT TERM

say "seed $SEED, work directory $WORK"
if [ -n "${NEGOTIATE_BIN:-}" ]; then
	BIN="$NEGOTIATE_BIN"
else
	say "building cmd/negotiate"
	(cd "$ROOT" && go build -o "$WORK/negotiate" ./cmd/negotiate)
	BIN="$WORK/negotiate"
fi
(cd "$ROOT" && go build -o "$WORK/chaincheck" ./scripts/chaincheck)

# --- network -------------------------------------------------------------
say "network: $N namespaces on a bridge in $HUB"
ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
for i in $(seq "$N"); do
	ip netns add "$(ns "$i")"
	ip -n "$(ns "$i")" link set lo up
	ip link add "v$i" netns "$HUB" type veth peer name eth0 netns "$(ns "$i")"
	ip -n "$HUB" link set "v$i" master br0 up
	ip -n "$(ns "$i")" addr add "$NET.$i/24" dev eth0
	ip -n "$(ns "$i")" link set eth0 up
	# One table per namespace for the faults; it dies with the namespace.
	ip netns exec "$(ns "$i")" nft -f - <<-'EOF'
		table inet fault {
			chain input { type filter hook input priority 0; policy accept; }
			chain output { type filter hook output priority 0; policy accept; }
		}
	EOF
done

# --- nodes ---------------------------------------------------------------
cat >"$WORK/policy.yaml" <<'EOF'
# netns-test: item=manual waits for `negotiate accept`; otherwise a
# participant accepts a price of 20 or more, counters 10-19 toward 20 and
# rejects the rest, and an initiator proposes every counter as the next round.
rules:
  - {name: by hand, when: {item: {equals: manual}}, action: ask}
  - {name: initiator takes counters, role: initiator, action: accept}
  - {name: fair price, role: participant, when: {price: {min: 20}}, action: accept}
  - name: haggle
    role: participant
    when: {price: {min: 10}}
    action: counter
    counter: {price: {toward: 20, step: 5}}
default: reject
EOF
for i in $(seq "$N"); do
	neg "$i" init >/dev/null
	AG[$i]="$(neg "$i" id | head -1)"
done

start_node() {
	local i=$1 boot=() j peer
	for j in $(seq "$N"); do
		[ "$j" = "$i" ] && continue
		[ -s "$WORK/n$j.out" ] || continue
		peer="$(head -1 "$WORK/n$j.out" | jq -r .peer_id)"
		boot+=(--bootstrap "/ip4/$NET.$j/tcp/$PORT/p2p/$peer")
	done
	ip netns exec "$(ns "$i")" "$BIN" --home "$WORK/n$i" node --json --mdns=false \
		--listen "/ip4/$NET.$i/tcp/$PORT" --listen "/ip4/$NET.$i/udp/$PORT/quic-v1" \
		--policy "$WORK/policy.yaml" "${boot[@]}" >"$WORK/n$i.out" 2>>"$WORK/n$i.log" &
	PIDS[$i]=$!
	for _ in $(seq 300); do
		[ -s "$WORK/n$i.out" ] && return 0
		kill -0 "${PIDS[$i]}" 2>/dev/null || die "node $i exited at start: $(tail -5 "$WORK/n$i.log")"
		sleep 0.1
	done
	die "node $i printed no identity within 30s"
}

say "starting $N daemons (one per namespace, TCP and QUIC on port $PORT)"
for i in $(seq "$N"); do start_node "$i"; done
say "waiting until every node reaches every other agent by agent ID"
deadline=$((SECONDS + 90))
for i in $(seq "$N"); do
	for j in $(seq "$N"); do
		[ "$i" = "$j" ] && continue
		until neg "$i" ping --count 1 --timeout 3s "${AG[$j]}" >/dev/null 2>&1; do
			[ $SECONDS -lt $deadline ] || die "node $i cannot reach node $j across the bridge"
			sleep 0.5
		done
	done
done
ok "all $((N * (N - 1))) node pairs ping each other across the bridge"

# --- faults ----------------------------------------------------------------
nft_in() { local i=$1; shift; ip netns exec "$(ns "$i")" nft "$@"; }
flush_faults() {
	local i
	for i in $(seq "$N"); do
		nft_in "$i" flush chain inet fault input
		nft_in "$i" flush chain inet fault output
		tc -n "$(ns "$i")" qdisc del dev eth0 root 2>/dev/null || true
	done
}
# partition A B: nodes in the space-separated list A and those in B stop
# hearing each other (both directions, at both ends).
partition() {
	local a=$1 b=$2 i j
	for i in $a; do
		for j in $b; do
			nft_in "$i" add rule inet fault output ip daddr "$NET.$j" drop
			nft_in "$i" add rule inet fault input ip saddr "$NET.$j" drop
			nft_in "$j" add rule inet fault output ip daddr "$NET.$i" drop
			nft_in "$j" add rule inet fault input ip saddr "$NET.$i" drop
		done
	done
}

# propose_bg NAME: one random session in the background (2-4 parties, 40 %
# signed offers, a price that is accepted, haggled or rejected).
BATCH=()
propose_bg() {
	local name=$1 init others=() k p args
	init=$((RANDOM % N + 1))
	for k in $(seq "$N"); do [ "$k" != "$init" ] && others+=("$k"); done
	for k in $(seq $((${#others[@]} - 1)) -1 1); do # shuffle
		p=$((RANDOM % (k + 1)))
		local t=${others[$k]}; others[$k]=${others[$p]}; others[$p]=$t
	done
	args=(propose --json --timeout "$SESSION_TIMEOUT" --term item=goods --term "price=$((RANDOM % 40))")
	for k in $(seq $((RANDOM % 3 + 1))); do args+=(--with "${AG[${others[$((k - 1))]}]}"); done
	[ $((RANDOM % 100)) -lt 40 ] && args+=(--offer)
	local f="$WORK/$name.json"
	echo "$init" >"$f.init"
	neg "$init" "${args[@]}" >"$f" 2>"$f.err" &
	BATCH+=($!)
}
wait_batch() {
	local name=$1 pid f
	for pid in "${BATCH[@]}"; do wait "$pid" || true; done
	BATCH=()
	local c=0 r=0 a=0 o=0
	for f in "$WORK"/"$name"-*.json; do
		local out; out="$(jq -r '.outcome // empty' "$f" 2>/dev/null || true)"
		local sid; sid="$(jq -r '.session // empty' "$f" 2>/dev/null || true)"
		[ -n "$sid" ] && SESSIONS+=("$(cat "$f.init") $sid")
		case "$out" in committed) c=$((c + 1)) ;; rejected) r=$((r + 1)) ;; aborted) a=$((a + 1)) ;; *) o=$((o + 1)) ;; esac
	done
	say "$name: $c committed, $r rejected, $a aborted, $o other (timeout at the CLI or not started) at the initiators"
}
run_batch() {
	local name=$1 count=$2 k
	for k in $(seq "$count"); do propose_bg "$name-$k"; sleep 0.0$((RANDOM % 10)); done
}
lock_of() { neg "$1" chain status --json | jq -r '.lock.session // "none"'; }
state_of() { neg "$1" show "$2" --json 2>/dev/null | jq -r '.state // empty'; }

# 1. baseline
STATE=baseline
say "1. baseline: 8 sessions, no fault"
run_batch base 8
wait_batch base

# 2. partition after signing
STATE=partition-signed
say "2. partition after signing: a signed offer from node 1 to nodes 2 and 3, node 1 cut off before they accept"
SID="$(neg 1 propose --offer --wait=false --json --timeout 8s --with "${AG[2]}" --with "${AG[3]}" --term item=manual --term price=30 | jq -r .session)"
SESSIONS+=("1 $SID")
for i in 2 3; do
	for _ in $(seq 100); do
		neg "$i" inbox --json | jq -e --arg s "$SID" 'any(.[]; .session == $s)' >/dev/null && break
		sleep 0.1
	done
done
partition "1" "2 3 4 5"
for i in 2 3; do
	neg "$i" accept "$SID" >/dev/null || violation "node $i could not accept the offer (see the message above)"
done
# Node 1 hears nobody, so only a certificate could free it: it must stay
# locked. Nodes 2 and 3 hear each other: each holds node 1's statement
# (from the offer) and its own, and may complete the set with the other's
# (query/status, after its 2 s resolve timer) and commit; what none may do
# is unlock without a certificate.
check_signed() {
	local when=$1 i l st
	for i in 1 2 3; do
		l="$(lock_of "$i")"
		st="$(state_of "$i" "$SID")"
		if [ "$l" = "$SID" ]; then
			ok "node $i $when: signed, chain locked by the session"
		elif [ "$i" != 1 ] && [ "$l" = none ] && [ "$st" = committed ]; then
			ok "node $i $when: committed with the statements of its side of the partition"
		else
			violation "node $i $when: lock $l, state '$st' (want locked by $SID, or committed for nodes 2 and 3)"
		fi
	done
}
check_signed "after accepting"
say "   waiting past the 8 s deadline while partitioned"
sleep 12
check_signed "past the deadline (no timer unlocks a signed chain)"
flush_faults
say "   healed; waiting for the session to resolve"
deadline=$((SECONDS + 120))
while :; do
	s1="$(state_of 1 "$SID")"; s2="$(state_of 2 "$SID")"; s3="$(state_of 3 "$SID")"
	[ -n "$s1" ] && [ -n "$s2" ] && [ -n "$s3" ] && break
	[ $SECONDS -lt $deadline ] || break
	sleep 1
done
if [ "$s1" = committed ] && [ "$s2" = committed ] && [ "$s3" = committed ]; then
	ok "after healing the session committed on nodes 1, 2 and 3"
else
	violation "after healing: node 1 '$s1', node 2 '$s2', node 3 '$s3'; every party signed, so all must commit"
fi

# 3. partition in the middle of a batch
STATE=partition-batch
say "3. partition {1,2} | {3,4,5} in the middle of 12 sessions (6 started before it, 6 during it), healed after 10 s"
run_batch part-a 6
partition "1 2" "3 4 5"
run_batch part-b 6
sleep 10
flush_faults
wait_batch part

# 4. packet loss
STATE=loss
say "4. random packet loss: $LOSS % dropped in and out at every node"
for i in $(seq "$N"); do
	nft_in "$i" add rule inet fault input numgen random mod 100 "<" "$LOSS" drop
	nft_in "$i" add rule inet fault output numgen random mod 100 "<" "$LOSS" drop
done
run_batch loss 10
wait_batch loss
flush_faults

# 5. rate limit
STATE=rate
say "5. rate limit: tbf 256kbit on every node's link"
for i in $(seq "$N"); do
	tc -n "$(ns "$i")" qdisc add dev eth0 root tbf rate 256kbit burst 16kb latency 400ms
done
run_batch rate 8
wait_batch rate
flush_faults

# --- settle and check --------------------------------------------------------
STATE=settle
say "healed: waiting until no node has an open session"
deadline=$((SECONDS + 180))
while :; do
	open=0
	for i in $(seq "$N"); do open=$((open + $(neg "$i" sessions --json | jq 'length'))); done
	[ "$open" = 0 ] && break
	if [ $SECONDS -ge $deadline ]; then
		violation "$open session(s) still open 180 s after healing:"
		for i in $(seq "$N"); do neg "$i" sessions >&2 || true; done
		break
	fi
	sleep 1
done
[ "$open" = 0 ] && ok "every session ended on every node"

: >"$WORK/outcomes.jsonl"
declare -A final
for entry in "${SESSIONS[@]}"; do
	read -r i sid <<<"$entry"
	v="$(neg "$i" show "$sid" --json 2>/dev/null || true)"
	if [ -z "$v" ]; then
		echo "{\"session\":\"$sid\",\"outcome\":\"lost\"}" >>"$WORK/outcomes.jsonl"
		final[lost]=$((${final[lost]:-0} + 1))
		continue
	fi
	jq -c '{session, parties, outcome: .state, record_hash}' <<<"$v" >>"$WORK/outcomes.jsonl"
	st="$(jq -r .state <<<"$v")"
	final[$st]=$((${final[$st]:-0} + 1))
done
summary=""
for k in "${!final[@]}"; do summary+="${summary:+, }${final[$k]} $k"; done
say "final outcomes of ${#SESSIONS[@]} sessions at their initiators: $summary"

say "stopping the daemons with SIGTERM"
for i in $(seq "$N"); do
	kill -TERM "${PIDS[$i]}"
	if wait "${PIDS[$i]}"; then ok "node $i stopped cleanly"; else violation "node $i exited with status $? on SIGTERM"; fi
	unset "PIDS[$i]"
done

say "checking every chain (scripts/chaincheck)"
homes=()
for i in $(seq "$N"); do homes+=("$WORK/n$i"); done
if "$WORK/chaincheck" --bin "$BIN" --outcomes "$WORK/outcomes.jsonl" "${homes[@]}"; then
	ok "chains verify, no lock left, every record on all its parties' chains or none with identical bytes, outcomes match"
else
	violation "chaincheck failed (above)"
fi

# --- cleanup, then prove nothing is left -------------------------------------
STATE=cleanup
for i in $(seq "$N"); do ip netns del "$(ns "$i")"; done
ip netns del "$HUB"
if ip netns list | grep -q "^$PFX-"; then violation "namespaces left: $(ip netns list | grep "^$PFX-")"; else ok "no namespace left"; fi
if [ "$(nft list ruleset 2>/dev/null || true)" = "$HOST_RULES_BEFORE" ]; then ok "host nftables ruleset unchanged"; else violation "host nftables ruleset changed"; fi
if ps -eo args= | grep -F -- "$WORK/n" | grep -v grep >/dev/null; then violation "daemon processes left"; else ok "no daemon process left"; fi

if [ "$FAILS" != 0 ]; then
	echo "netns-test: FAIL: $FAILS violation(s), $CHECKS checks passed" >&2
	exit 1
fi
echo "netns-test: PASS: $CHECKS checks"
