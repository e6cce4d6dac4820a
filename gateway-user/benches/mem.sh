#!/usr/bin/env bash
# Resident memory of the agent: two tollgate binaries (OLD, NEW) and nginx doing the same L7
# work, at 10 routes, 10,000 routes, and 10 routes plus 100,000 L4 rules; idle and after load.
#
# Each measurement starts one process alone (so that the machine's page cache and the other
# agent do not blur the figures), waits until it is ready (the listener answers and /readyz is
# 200), lets it settle (SETTLE seconds: mimalloc returns freed pages to the kernel after a
# delay), reads its memory ("idle"), loads it with h2load (HTTP/1.1, 64 connections, then
# HTTP/2 over TLS, 8 connections x 16 streams; REQUESTS each, every one with the API key; with
# MEM_LOAD="h1 tls h2", also HTTP/1.1 over TLS with 64 connections, as the L7 bench does), lets
# it settle again and reads its memory again ("after load"). Memory is read from
# /proc/PID/status (VmRSS, VmHWM = the peak since the start, RssAnon, RssFile, Threads) and
# /proc/PID/smaps_rollup (Anonymous). nginx is its master and 2 workers, summed.
# Medians over ROUNDS rounds (the order of the three processes rotated each round).
#
# The revision is that of gateway-user/benches/l7.rs and l7_ab.sh: a Gateway with an HTTP and
# an HTTPS listener, a Backend (an nginx on 127.0.0.1), the route `bench` (/api) with an API key
# and a per-client rate limit that never triggers, and 9 (or 9,999) other routes. The L4 rules
# are one L4Policy of 100,000 deny rules (the prefixes of benches/bench.rs's blocklist_policy).
#
# Usage (root): mem.sh OLD_BINARY NEW_BINARY [ROUNDS] [REQUESTS] [SCENARIOS]
#   SCENARIOS: any of r10 r10k l4 (default all three).
#   MEM_NEW_ENV="VAR=VALUE ...": extra environment of the NEW agent only (allocator settings).
#   MEM_LOAD: the loads, in order, of h1 tls h2 (default "h1 h2").
# Names are unique to this harness (prefix mb): veth mba0, ports 2971x, /run/tollgate-mem.
set -euo pipefail

OLD=${1:?old binary}
NEW=${2:?new binary}
ROUNDS=${3:-3}
REQUESTS=${4:-100000}
SCENARIOS=${5:-r10 r10k l4}
SETTLE=${SETTLE:-5}
MEM_LOAD=${MEM_LOAD:-h1 h2}
BASE=/run/tollgate-mem
NETNS=mb-ns
IFACE=mba0
BACKEND=29701
HTTP=29711
TLS=29712
ADMIN=29713
KEY=bench-key-5b0c7a6e1f
HOST=bench.local

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    ip link del "$IFACE" 2>/dev/null || true
    ip netns del "$NETNS" 2>/dev/null || true
    mkdir -p /tmp/tollgate-mem-logs && cp "$BASE"/*.log /tmp/tollgate-mem-logs/ 2>/dev/null || true
    umount "$BASE/bpf" 2>/dev/null || true
    rm -rf "$BASE"
}
trap cleanup EXIT
cleanup
mkdir -p "$BASE/tmp" "$BASE/bpf" "$BASE/secrets/default/bench-tls" "$BASE/secrets/default/bench-keys"
mount -t bpf bpf "$BASE/bpf"
ip netns add "$NETNS"
ip link add "$IFACE" type veth peer name mbap
ip link set mbap netns "$NETNS"
ip link set "$IFACE" up

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$BASE/tls.key" \
    -out "$BASE/tls.crt" -days 2 -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" 2>/dev/null
cp "$BASE/tls.crt" "$BASE/tls.key" "$BASE/secrets/default/bench-tls/"
salt=bench-salt-0001
hash=$(printf '%s%s' "$salt" "$KEY" | sha256sum | cut -d' ' -f1)
echo "bench:sha256:$(printf '%s' "$salt" | xxd -p):$hash" >"$BASE/secrets/default/bench-keys/keys"

nginx_http() { # extra lines of the http block
    cat <<EOF
http {
  access_log off;
  client_body_temp_path $BASE/tmp; proxy_temp_path $BASE/tmp; fastcgi_temp_path $BASE/tmp;
  uwsgi_temp_path $BASE/tmp; scgi_temp_path $BASE/tmp;
  keepalive_requests 10000000; keepalive_timeout 300s;
$1
}
EOF
}
{
    printf 'worker_processes 2;\npid %s/backend.pid;\nerror_log %s/backend-error.log;\nevents { worker_connections 4096; }\n' "$BASE" "$BASE"
    nginx_http "  server { listen 127.0.0.1:$BACKEND backlog=4096; location / { return 200 \"ok\\n\"; } }"
} >"$BASE/backend.conf"
nginx -p "$BASE" -c "$BASE/backend.conf" -g 'daemon off;' &
PIDS+=($!)
# The peer: nginx doing the same work as the agent (l7.rs's configuration).
{
    printf 'worker_processes 2;\npid %s/nginx.pid;\nerror_log %s/nginx-error.log;\nevents { worker_connections 4096; }\n' "$BASE" "$BASE"
    nginx_http "  limit_req_zone \$binary_remote_addr zone=perclient:10m rate=1000000r/s;
  map \$http_x_api_key \$api_key_ok { \"$KEY\" 1; default 0; }
  upstream app { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$HTTP backlog=4096;
    listen 127.0.0.1:$TLS ssl http2 backlog=4096;
    ssl_certificate $BASE/tls.crt; ssl_certificate_key $BASE/tls.key;
    location = /readyz { return 200; }
    location /api {
      if (\$api_key_ok = 0) { return 401; }
      limit_req zone=perclient burst=1000000 nodelay;
      proxy_pass http://app; proxy_http_version 1.1;
      proxy_set_header Connection \"\"; proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }"
} >"$BASE/nginx.conf"

revision() { # routes
    cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: $HTTP, protocol: HTTP }
    - { name: https, port: $TLS, protocol: HTTPS, hostname: $HOST, tls: { mode: Terminate, certificateRefs: [{ kind: Secret, name: bench-tls }] } }
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: app }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: $BACKEND }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: bench }
spec:
  parentRefs: [{ name: edge }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]
---
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: { name: bench-auth }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: bench }]
  apiKey: { header: X-Api-Key, credentialRefs: [{ name: bench-keys }] }
---
apiVersion: tollgate.dev/v1alpha1
kind: RateLimitPolicy
metadata: { name: bench-limit }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: bench }]
  limits:
    - { name: per-client, key: clientIP, requests: 1000000000, per: 1s }
EOF
    awk -v n="$1" 'BEGIN { for (i = 1; i < n; i++) {
        s = sprintf("%05d", i)
        printf "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: svc-%s }\nspec:\n  parentRefs: [{ name: edge }]\n  rules:\n    - matches: [{ path: { type: PathPrefix, value: /svc-%s } }]\n      backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]\n", s, s
    } }'
}

# benches/bench.rs's blocklist_policy(100_000): the same xorshift prefixes (1 in 8 IPv6 /48-/64
# in 2001:db8::/32, the others IPv4 /16-/32 in 10.0.0.0/8), deduplicated, 99,998 deny rules
# and two allow rules (TCP 443 with a rate limit that never triggers, and ICMP).
l4_policy() {
    python3 - <<'EOF'
import ipaddress
M = (1 << 64) - 1
seed = 0x9E3779B97F4A7C15
def nxt():
    global seed
    seed ^= (seed << 13) & M
    seed ^= seed >> 7
    seed ^= (seed << 17) & M
    return seed
out = ["apiVersion: tollgate.dev/v1alpha1", "kind: L4Policy", "metadata: { name: big }",
       "spec:", "  defaultAction: allow", "  rules:"]
seen = set()
n = 100_000
while len(seen) < n - 2:
    r = nxt()
    if r % 8 == 0:
        length = 48 + (r >> 8) % 256 % 17
        addr = (0x20010DB8 << 96) | (nxt() << 32)
        net = ipaddress.IPv6Network((addr, length), strict=False)
    else:
        length = 16 + (r >> 8) % 256 % 17
        addr = 0x0A000000 | (nxt() & 0x00FFFFFF)
        net = ipaddress.IPv4Network((addr, length), strict=False)
    if net not in seen:
        seen.add(net)
        out.append(f"    - name: deny-{len(seen) - 1}\n      action: deny\n      from: [\"{net}\"]")
out.append("    - name: https\n      action: allow\n      protocol: TCP\n      ports: [\"443\"]\n"
           "      rateLimit: { packetsPerSecond: 100000000, burst: 100000000 }")
out.append("    - name: ping\n      action: allow\n      protocol: ICMP")
print("\n".join(out))
EOF
}

mkdir -p "$BASE/policy-r10" "$BASE/policy-r10k" "$BASE/policy-l4"
revision 10 >"$BASE/policy-r10/gateway.yaml"
revision 10000 >"$BASE/policy-r10k/gateway.yaml"
revision 10 >"$BASE/policy-l4/gateway.yaml"
l4_policy >"$BASE/policy-l4/l4.yaml"

wait_ready() { # pid what [readyz port]
    local ready=${3:-$ADMIN}
    for _ in $(seq 1 1200); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ready/readyz" 2>/dev/null)" = 200 ] &&
            curl -s -o /dev/null "http://127.0.0.1:$HTTP/"; then
            return 0
        fi
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    echo "$2 did not become ready; log:" >&2
    cat "$BASE/$2.log" >&2 || true
    exit 1
}

# Memory of a process (KiB): "VmRSS VmHWM RssAnon RssFile Anonymous Threads".
memory() {
    local s a
    s=$(awk '/^(VmRSS|VmHWM|RssAnon|RssFile|Threads):/ { v[$1] = $2 }
        END { print v["VmRSS:"], v["VmHWM:"], v["RssAnon:"], v["RssFile:"], v["Threads:"] }' "/proc/$1/status")
    a=$(awk '/^Anonymous:/ { print $2 }' "/proc/$1/smaps_rollup")
    set -- $s
    echo "$1 $2 $3 $4 $a $5"
}

# nginx: the master and its workers, summed (the peak is the largest VmHWM of the three).
nginx_memory() {
    local pids p rss=0 hwm=0 anon=0 file=0 anonr=0 threads=0
    pids="$1 $(pgrep -P "$1" | tr '\n' ' ')"
    for p in $pids; do
        read -r r h a f ar t < <(memory "$p")
        rss=$((rss + r)); anon=$((anon + a)); file=$((file + f)); anonr=$((anonr + ar))
        threads=$((threads + t)); ((h > hwm)) && hwm=$h
    done
    echo "$rss $hwm $anon $file $anonr $threads"
}

load() {
    local out
    for proto in $MEM_LOAD; do
        if [ "$proto" = h1 ]; then
            out=$(h2load -t 1 -n "$REQUESTS" --h1 -c 64 -H "x-api-key: $KEY" \
                --connect-to "127.0.0.1:$HTTP" "http://$HOST:$HTTP/api/orders")
        elif [ "$proto" = tls ]; then
            out=$(h2load -t 1 -n "$REQUESTS" --h1 -c 64 -H "x-api-key: $KEY" \
                --connect-to "127.0.0.1:$TLS" "https://$HOST:$TLS/api/orders")
        else
            out=$(h2load -t 1 -n "$REQUESTS" -c 8 -m 16 -H "x-api-key: $KEY" \
                --connect-to "127.0.0.1:$TLS" "https://$HOST:$TLS/api/orders")
        fi
        local bad
        bad=$(echo "$out" | awk -F'[ ,]+' '/^requests:/ { f = $(NF-5) + $(NF-3) + $(NF-1) }
            /^status codes:/ { x = $5 + $7 + $9 } END { print f + x }')
        if [ "$bad" != 0 ]; then
            echo "$proto load: $bad failed or non-2xx requests" >&2
            echo "$out" >&2
            exit 1
        fi
    done
}

# One measurement, into RESULT: "idle(6 fields) after(6 fields)". Not run in a subshell, so
# that the cleanup knows every process it started. Every agent starts with an empty state and
# pin directory: a state directory left by another scenario would be adopted (its id table and
# last good revision).
measure() { # who scenario
    local who=$1 scen=$2 pid bin envs=()
    if [ "$who" = nginx ]; then
        nginx -p "$BASE" -c "$BASE/nginx.conf" -g 'daemon off;' >"$BASE/nginx.log" 2>&1 &
        pid=$!
    else
        bin=$OLD
        if [ "$who" = new ]; then
            bin=$NEW
            # shellcheck disable=SC2206
            envs=(${MEM_NEW_ENV:-})
        fi
        rm -rf "$BASE/state"
        env TOLLGATE_LOG=warn "${envs[@]}" "$bin" run --interface "$IFACE" --source "$BASE/policy-$scen" \
            --pin-dir "$BASE/bpf/$who-$scen" --state-dir "$BASE/state" --admin "127.0.0.1:$ADMIN" \
            --gateway-address 127.0.0.1 --tls-secrets-dir "$BASE/secrets" --access-log off \
            --detach-on-exit >"$BASE/$who-$scen.log" 2>&1 &
        pid=$!
    fi
    PIDS+=("$pid")
    if [ "$who" = nginx ]; then wait_ready "$pid" nginx "$HTTP"; else wait_ready "$pid" "$who-$scen"; fi
    # The work is done: 200 with the key, 401 without.
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$HTTP/api/orders")
    [ "$c" = 200 ] || { echo "$who $scen: $c with the key" >&2; exit 1; }
    c=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP/api/orders")
    [ "$c" = 401 ] || { echo "$who $scen: $c without a key" >&2; exit 1; }
    sleep "$SETTLE"
    local idle after
    if [ "$who" = nginx ]; then idle=$(nginx_memory "$pid"); else idle=$(memory "$pid"); fi
    load
    sleep "$SETTLE"
    if [ "$who" = nginx ]; then after=$(nginx_memory "$pid"); else after=$(memory "$pid"); fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    if [ "$who" != nginx ] && [ -e "$BASE/bpf/$who-$scen" ]; then
        echo "$who $scen: pins left after the agent stopped (--detach-on-exit)" >&2
        exit 1
    fi
    RESULT="$idle $after"
}

stats() { # values (KiB)... -> "median min max" in MiB
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 / 1024 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}

echo "rounds $ROUNDS, $REQUESTS requests per protocol, settle ${SETTLE}s; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A R
for r in $(seq 1 "$ROUNDS"); do
    for scen in $SCENARIOS; do
        whos=(old new)
        [ "$scen" = r10 ] && whos+=(nginx)
        # Rotate the order every round.
        n=${#whos[@]}
        for i in $(seq 0 $((n - 1))); do
            who=${whos[$(((i + r) % n))]}
            measure "$who" "$scen"
            R[$scen,$who,$r]=$RESULT
            echo "round $r $scen $who: ${R[$scen,$who,$r]}" >&2
        done
    done
done

echo
echo "| scenario | process | VmRSS idle | anon idle | file idle | VmHWM (peak) | VmRSS after load | anon after load | file after load | threads |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for scen in $SCENARIOS; do
    whos=(old new)
    [ "$scen" = r10 ] && whos+=(nginx)
    for who in "${whos[@]}"; do
        cols=()
        # Fields: 1 VmRSS, 2 VmHWM, 3 RssAnon, 4 RssFile, 5 Anonymous, 6 Threads; +6 after load.
        for f in 1 5 4 8 7 11 10; do
            vals=()
            for r in $(seq 1 "$ROUNDS"); do
                # shellcheck disable=SC2206
                v=(${R[$scen,$who,$r]})
                vals+=("${v[$((f - 1))]}")
            done
            read -r m lo hi < <(stats "${vals[@]}")
            cols+=("$m ($lo–$hi)")
        done
        # shellcheck disable=SC2206
        v=(${R[$scen,$who,1]})
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scen" "$who" "${cols[@]}" "${v[11]}"
    done
done
echo "MiB, median (min–max) over $ROUNDS rounds; anon = Anonymous of smaps_rollup, file = RssFile; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
