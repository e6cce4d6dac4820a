#!/bin/bash
# A check by hand for a change of the kernel maps' layout: an agent of one build (OLD) enforces
# a policy with /32, /31 and /24 denies, and IPv6 /128 and /64 denies, on a veth pair; it is stopped with its pins kept, and an
# agent of another build (NEW) takes the pins over. Pings from four addresses of the peer show
# (and three IPv6 ones) what is dropped with each agent, and one address of each family (and the
# /31's) is pinged every 50 ms through the hand-over
# (any reply is a packet let through). Run as root; swap the arguments for a downgrade.
#   bash gateway-user/benches/upgrade_check.sh OLD_TOLLGATE NEW_TOLLGATE
# Uses tgu0/tgu1, the namespace tgu-ns, /run/tgu, /tmp/tgu-*, and 127.0.0.1:19999 (admin).
OLD=$1; NEW=$2
set -u
cleanup() { pkill -f "tollgate run --interface tgu0" ; pkill -f "ping.*-I (10.9.8|fd00:98)"; sleep 1; ip link del tgu0 2>/dev/null; ip netns del tgu-ns 2>/dev/null; umount /run/tgu/bpf 2>/dev/null; umount /run/tgu 2>/dev/null; rm -rf /run/tgu /tmp/tgu-state /tmp/tgu-policy; }
trap cleanup EXIT
cleanup 2>/dev/null
ip netns add tgu-ns
ip link add tgu0 type veth peer name tgu1
ip link set tgu1 netns tgu-ns
ip addr add 10.9.8.1/24 dev tgu0; ip link set tgu0 up
ip -n tgu-ns link set lo up; ip -n tgu-ns link set tgu1 up
ip addr add fd00:98::1/64 dev tgu0 nodad
for a in 7 8 9; do ip -n tgu-ns addr add 10.9.8.$a/24 dev tgu1; ip -n tgu-ns addr add fd00:98::$a/64 dev tgu1 nodad; done
ip -n tgu-ns addr add 10.9.8.10/24 dev tgu1
mkdir -p /tmp/tgu-policy /tmp/tgu-state /run/tgu
cat > /tmp/tgu-policy/p.yaml <<'Y'
apiVersion: tollgate.dev/v1alpha1
kind: L4Policy
metadata: {name: upgrade}
spec:
  mode: enforce
  defaultAction: allow
  rules:
    - name: singles
      action: deny
      from: [10.9.8.7/32, 10.9.8.9/32]
    - name: block-net
      action: deny
      from: [10.9.7.0/24]
    - name: singles-v6
      action: deny
      from: ["fd00:98::7/128", "fd00:98::9/128"]
    - name: block-net-v6
      action: deny
      from: ["fd00:97::/64", "fd00:96::/48"]
    - name: long
      action: deny
      from: [10.9.8.10/31]
Y
# 4,352 /28s in 1.0.0.0-1.16.255.255, each in a /24 of its own: their /24s take the direct index's
# chunks, and 10.9.8.0/24, which sorts after them, gets none: its /31 is in the exact table (a
# build that has /25-/31s there) or in the trie (an older one).
python3 -c 'print("    - name: filler\n      action: deny\n      from:"); [print(f"        - 1.{i >> 8}.{i & 255}.16/28") for i in range(4352)]' >> /tmp/tgu-policy/p.yaml
probe() { local r=""; for a in 7 8 9 10; do if ip netns exec tgu-ns ping -c1 -W1 -I 10.9.8.$a 10.9.8.1 >/dev/null 2>&1; then r="$r $a:pass"; else r="$r $a:drop"; fi; done
  for a in 7 8 9; do if ip netns exec tgu-ns ping -6 -c1 -W1 -I fd00:98::$a fd00:98::1 >/dev/null 2>&1; then r="$r v6-$a:pass"; else r="$r v6-$a:drop"; fi; done; echo "$1:$r"; }
probe "no agent"
run() { $1 run --interface tgu0 --source /tmp/tgu-policy --state-dir /tmp/tgu-state --pin-dir /run/tgu/bpf --admin 127.0.0.1:19999 --gateway-address 127.0.0.1 > /tmp/tgu-$2.log 2>&1 & }
run $OLD old
for i in $(seq 1 100); do curl -sf 127.0.0.1:19999/readyz >/dev/null && break; sleep 0.2; done
probe "old agent"
# Probe continuously while the agents change hands.
( while true; do ip netns exec tgu-ns ping -c1 -W1 -I 10.9.8.7 10.9.8.1 >/dev/null 2>&1 && echo LEAK; sleep 0.05; done ) > /tmp/tgu-leak.log 2>&1 &
LOOP=$!
( while true; do ip netns exec tgu-ns ping -6 -c1 -W1 -I fd00:98::7 fd00:98::1 >/dev/null 2>&1 && echo LEAK; sleep 0.05; done ) > /tmp/tgu-leak6.log 2>&1 &
LOOP6=$!
( while true; do ip netns exec tgu-ns ping -c1 -W1 -I 10.9.8.10 10.9.8.1 >/dev/null 2>&1 && echo LEAK; sleep 0.05; done ) > /tmp/tgu-leak31.log 2>&1 &
LOOP31=$!
pkill -TERM -f "$OLD run --interface tgu0"; sleep 1
probe "between agents"
run $NEW new
for i in $(seq 1 100); do curl -sf 127.0.0.1:19999/readyz >/dev/null && break; sleep 0.2; done
probe "new agent"
sleep 1; kill $LOOP $LOOP6 $LOOP31
echo "packets from 10.9.8.7 let through during the hand-over: $(grep -c LEAK /tmp/tgu-leak.log)"
echo "packets from fd00:98::7 let through during the hand-over: $(grep -c LEAK /tmp/tgu-leak6.log)"
echo "packets from 10.9.8.10 (the /31) let through during the hand-over: $(grep -c LEAK /tmp/tgu-leak31.log)"
echo "ways of SRC4_EXACT holding 10.9.8.10 (both generations, with a build that has /31s there): $(bpftool map dump pinned /run/tgu/bpf/maps/SRC4_EXACT 2>/dev/null | grep -c "0a 08 09 0a")"
# DIR_TRIE | a /31 (bit 6 at DIR_LONGS_SHIFT 22) | no base, little-endian: 10.9.8.0/24's slot.
echo "/24 slots naming a /31 of the exact table (both generations, with a build that has them): $(bpftool map dump pinned /run/tgu/bpf/maps/SRC4_CHUNKS 2>/dev/null | grep -o "00 00 00 d0" | wc -l)"
echo "ways of SRC4_EXACT holding 10.9.8.7 (both generations, with a build that has the table): $(bpftool map dump pinned /run/tgu/bpf/maps/SRC4_EXACT 2>/dev/null | grep -c "07 08 09 0a")"
echo "non-empty sets of SRC6_EXACT (both generations, with a build that has the table): $(bpftool -j map dump pinned /run/tgu/bpf/maps/SRC6_EXACT 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if any(int(b, 16) for b in e["value"])))' 2>/dev/null)"
grep -iE "error|warn" /tmp/tgu-new.log | head -5
