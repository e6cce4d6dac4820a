#!/usr/bin/env bash
# What the L7 proxy costs above the floor: CPU per request (user and system apart) of nginx,
# of examples/l7_floor.rs (the least an HTTP/1.1 relay on tokio costs: no features, no checks),
# of examples/l7_hyper_relay.rs (hyper's server and hyper-util's pooled client, with no work
# either; again with RELAY_CLIENT=pool, hyper's connection-level client in a per-thread
# pool, the shape of the proxy's backend_h1; and with RELAY_CLIENT=raw, hyper's server with no
# client library, the floor's raw backend exchange: hyper's server alone) and of tollgate, each relaying HTTP/1.1 to the
# same nginx backend over keep-alive, loaded in turn by the same h2load (64 connections, a fixed
# request count), the order rotated every round. tollgate and nginx do the L7 bench's work
# (route, API key, a limit that never triggers, X-Forwarded-For/-Proto); the two relays add
# the X-Forwarded-* headers and do nothing else. CPU from /proc/PID/stat
# (utime, stime; nginx: master and workers). Medians and min-max over rounds.
#
# Usage (root): l7_floor.sh TOLLGATE_BINARY [ROUNDS] [REQUESTS]
# With L7_FLOOR_PROFILE=GATEWAY (and L7_FLOOR_SECONDS), one gateway is loaded without pause
# instead, for a profiler to attach to the PID it prints.
# Builds the two examples (release) first. Names are unique to this harness (prefix lflr): netns
# lflr-ns, veth lflr0, ports 2970x, /run/tollgate-l7floor.
set -euo pipefail

TG=${1:?tollgate binary}
ROUNDS=${2:-5}
REQUESTS=${3:-200000}
BASE=/run/tollgate-l7floor
NETNS=lflr-ns
BACKEND=29701
KEY=bench-key-5b0c7a6e1f
HOST=bench.local
TICK=$(getconf CLK_TCK)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p gateway-user \
    --example l7_floor --example l7_hyper_relay
FLOOR_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/l7_floor
HYPER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/l7_hyper_relay

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    ip link del lflr0 2>/dev/null || true
    ip netns del "$NETNS" 2>/dev/null || true
    umount "$BASE/bpf" 2>/dev/null || true
    rm -rf "$BASE"
}
trap cleanup EXIT
cleanup
mkdir -p "$BASE/tmp" "$BASE/bpf" "$BASE/secrets/default/bench-keys" "$BASE/tg/policy"
mount -t bpf bpf "$BASE/bpf"
ip netns add "$NETNS"
salt=bench-salt-0001
hash=$(printf '%s%s' "$salt" "$KEY" | sha256sum | cut -d' ' -f1)
echo "bench:sha256:$(printf '%s' "$salt" | xxd -p):$hash" >"$BASE/secrets/default/bench-keys/keys"

temps="client_body_temp_path $BASE/tmp; proxy_temp_path $BASE/tmp; fastcgi_temp_path $BASE/tmp;
  uwsgi_temp_path $BASE/tmp; scgi_temp_path $BASE/tmp;"
cat >"$BASE/backend.conf" <<EOF
worker_processes 2; pid $BASE/backend.pid; error_log $BASE/backend-error.log;
events { worker_connections 4096; }
http { access_log off; $temps keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$BACKEND backlog=4096; location / { return 200 "ok\n"; } } }
EOF
# The L7 bench's nginx (gateway-user/benches/l7.rs), HTTP/1.1 only.
cat >"$BASE/nginx.conf" <<EOF
worker_processes 2; pid $BASE/nginx.pid; error_log $BASE/nginx-error.log;
events { worker_connections 4096; }
http { access_log off; $temps keepalive_requests 10000000; keepalive_timeout 300s;
  limit_req_zone \$binary_remote_addr zone=perclient:10m rate=1000000r/s;
  map \$http_x_api_key \$api_key_ok { "$KEY" 1; default 0; }
  upstream app { server 127.0.0.1:$BACKEND; keepalive 128; keepalive_requests 10000000; }
  server { listen 127.0.0.1:29702 backlog=4096;
    location /api { if (\$api_key_ok = 0) { return 401; }
      limit_req zone=perclient burst=1000000 nodelay;
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; } } }
EOF
# The L7 bench's revision (l7_ab.sh), HTTP only, one route.
cat >"$BASE/tg/policy/gateway.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: 29704, protocol: HTTP }
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

nginx -p "$BASE" -c "$BASE/backend.conf" -g 'daemon off;' &
PIDS+=($!)
nginx -p "$BASE" -c "$BASE/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($!)
"$FLOOR_BIN" 127.0.0.1:29703 "127.0.0.1:$BACKEND" &
FLOOR_PID=$!
PIDS+=($!)
"$HYPER_BIN" 127.0.0.1:29706 "127.0.0.1:$BACKEND" &
HYPER_PID=$!
PIDS+=($!)
RELAY_CLIENT=pool "$HYPER_BIN" 127.0.0.1:29707 "127.0.0.1:$BACKEND" &
HYPERP_PID=$!
PIDS+=($!)
RELAY_CLIENT=raw "$HYPER_BIN" 127.0.0.1:29708 "127.0.0.1:$BACKEND" &
HYPERR_PID=$!
PIDS+=($!)
ip link add lflr0 type veth peer name lflrp
ip link set lflrp netns "$NETNS"
ip link set lflr0 up
env TOLLGATE_LOG=warn "$TG" run --interface lflr0 --source "$BASE/tg/policy" \
    --pin-dir "$BASE/bpf/tg" --state-dir "$BASE/tg/state" --admin 127.0.0.1:29705 \
    --gateway-address 127.0.0.1 --tls-secrets-dir "$BASE/secrets" --access-log off \
    --detach-on-exit >"$BASE/tg.log" 2>&1 &
TG_PID=$!
PIDS+=($!)
for port in 29702 29703 29706 29707 29708 29704; do
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" -H "Host: $HOST" \
            "http://127.0.0.1:$port/api/orders")" = 200 ] && continue 2
        sleep 0.1
    done
    echo "port $port never answered 200; tollgate's log:" >&2
    cat "$BASE/tg.log" >&2
    exit 1
done

cpu() { # pid -> "utime stime" in ticks, the process and its children (nginx's workers)
    local p
    for p in "$1" $(pgrep -P "$1" || true); do
        s=$(cat "/proc/$p/stat")
        echo "${s##*) }"
    done | awk '{ u += $12; s += $13 } END { print u, s }'
}

trial() { # port pid -> "user_us system_us failed_or_non2xx"
    local a b out failed ok
    a=$(cpu "$2")
    out=$(h2load -t 1 -n "$REQUESTS" --h1 -c 64 -H "x-api-key: $KEY" \
        --connect-to "127.0.0.1:$1" "http://$HOST:$1/api/orders")
    b=$(cpu "$2")
    ok=$(echo "$out" | awk -F'[ ,]+' '/^status codes:/ { print $3 }')
    echo "$a $b" | awk -v n="$REQUESTS" -v t="$TICK" -v ok="${ok:-0}" \
        '{ printf "%.2f %.2f %d\n", ($3 - $1) / t * 1e6 / n, ($4 - $2) / t * 1e6 / n, n - ok }'
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}

if [ -n "${L7_FLOOR_PROFILE:-}" ]; then
    # For `perf record -p PID`: one gateway (nginx floor hyper-relay hyper-pool-relay hyper-server
    # tollgate) loaded without pause for L7_FLOOR_SECONDS (60), its PID printed first.
    case "$L7_FLOOR_PROFILE" in
    nginx) port=29702 pid=$NGINX_PID ;; floor) port=29703 pid=$FLOOR_PID ;;
    hyper-relay) port=29706 pid=$HYPER_PID ;; hyper-pool-relay) port=29707 pid=$HYPERP_PID ;;
    hyper-server) port=29708 pid=$HYPERR_PID ;;
    tollgate) port=29704 pid=$TG_PID ;;
    *) echo "L7_FLOOR_PROFILE: unknown gateway $L7_FLOOR_PROFILE" >&2; exit 2 ;;
    esac
    echo "profiling $L7_FLOOR_PROFILE: pid $pid"
    end=$((SECONDS + ${L7_FLOOR_SECONDS:-60}))
    while [ $SECONDS -lt $end ]; do trial "$port" "$pid"; done
    exit 0
fi

names=(nginx floor hyper-relay hyper-pool-relay hyper-server tollgate)
ports=(29702 29703 29706 29707 29708 29704)
pids=("$NGINX_PID" "$FLOOR_PID" "$HYPER_PID" "$HYPERP_PID" "$HYPERR_PID" "$TG_PID")
n=${#names[@]}
declare -A user sys total
fails=0
for i in $(seq 0 $((n - 1))); do trial "${ports[$i]}" "${pids[$i]}" >/dev/null; done # warm-up
echo "rounds $ROUNDS, $REQUESTS requests per trial; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
        i=$(((k + r) % n))
        read -r u s f < <(trial "${ports[$i]}" "${pids[$i]}")
        user[$i]+="$u "
        sys[$i]+="$s "
        total[$i]+="$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }') "
        fails=$((fails + f))
    done
done
echo "| gateway | µs/request, median (min–max) | user | system |"
echo "|---|---:|---:|---:|"
for i in $(seq 0 $((n - 1))); do
    # shellcheck disable=SC2086
    read -r tm tmin tmax < <(stats ${total[$i]})
    # shellcheck disable=SC2086
    read -r um _ _ < <(stats ${user[$i]})
    # shellcheck disable=SC2086
    read -r sm _ _ < <(stats ${sys[$i]})
    echo "| ${names[$i]} | $tm ($tmin–$tmax) | $um | $sm |"
done
echo "failed or non-2xx requests: $fails; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
