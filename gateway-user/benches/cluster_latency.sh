#!/usr/bin/env bash
# Added latency of a cluster-limited route (RateLimitPolicy `scope: Cluster`, issue 14) against
# a node-limited one, on one agent, keep-alive, at a fixed offered rate.
#
# Why a fixed rate: at full load both routes queue and the latency is the queue's, not the
# work's; at about half of what the agent serves, the latency of a request is its own cost plus
# little queueing, so the two routes' percentiles differ by what the cluster limit costs. One
# agent (release build, `--ratelimit-redis` on a redis-server this script starts on loopback,
# `--ratelimit-agents 1`), one nginx backend, one HTTP listener with four routes that do the
# same work (API key, one limit that never triggers, the same backend):
#   /cluster  scope: Cluster, key: consumer          (one hot key: leases in the background)
#   /node     scope: Node,    key: consumer
#   /mcluster scope: Cluster, key: header X-Tenant   (many keys, below)
#   /mnode    scope: Node,    key: header X-Tenant
# The many-key trials go through a front nginx (keep-alive to the agent) that sets X-Tenant to
# the last 4 hex digits of its random $request_id, because h2load sends the same headers on
# every request: 65,536 keys drawn at random, so at a few thousand requests/s and windows of 1 s
# nearly every request is a key's first in its window (a key the agent may have swept: a
# SHA-256, a lease request through `try_send`, a Redis script in a later round), and the keys
# stay under the 100,000 an agent tracks per limit. The front nginx is on both many-key routes'
# path, so their difference is still the limit's.
#
# Each part first measures what the agent serves (closed loop, h2load -c 32, 5 s on the node
# route), then offers half of it with `h2load --rps` per connection. Each round loads the two
# routes in turn (the order alternates every round) for SECONDS; per-request latencies come from
# `h2load --log-file` (start of the request to the end of its response, as h2load sees it: a
# request that waited for its connection is not charged the wait). Medians and min-max over the
# rounds of each round's p50 and p99; the load average after each round. The agent's /metrics
# are read around every trial: the cluster trials must grow
# tollgate_ratelimit_redis_commands_total, and no trial may see a 429 (or any non-2xx, or a
# failed request), a sync error or the fallback.
#
# Usage (root): cluster_latency.sh BINARY [ROUNDS] [SECONDS]
#   CLAT_RATE=N: offer N req/s in both parts instead of half the measured capacity (a smoke run).
# Names are unique to this harness (prefix clat): netns clat-ns, veth clata0, ports 2970x-2972x.
set -euo pipefail

BIN=${1:?tollgate binary (release build)}
ROUNDS=${2:-5}
SECONDS_PER_TRIAL=${3:-10}
BASE=/run/tollgate-clat
NETNS=clat-ns
BACKEND=29701
FRONT=29702
PROXY=29711
ADMIN=29713
REDIS=29719
KEY=bench-key-9d41c2e07a
CONNS=32

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    ip link del clata0 2>/dev/null || true
    ip netns del "$NETNS" 2>/dev/null || true
    mkdir -p /tmp/tollgate-clat-logs && cp "$BASE"/*.log /tmp/tollgate-clat-logs/ 2>/dev/null || true
    umount "$BASE/bpf" 2>/dev/null || true
    rm -rf "$BASE"
}
PIDS=()
trap cleanup EXIT
cleanup
mkdir -p "$BASE/tmp" "$BASE/bpf" "$BASE/secrets/default/bench-keys" "$BASE/policy" "$BASE/redis"
mount -t bpf bpf "$BASE/bpf"
ip netns add "$NETNS"

salt=bench-salt-0002
hash=$(printf '%s%s' "$salt" "$KEY" | sha256sum | cut -d' ' -f1)
echo "bench:sha256:$(printf '%s' "$salt" | xxd -p):$hash" >"$BASE/secrets/default/bench-keys/keys"

redis-server --bind 127.0.0.1 --port "$REDIS" --save '' --appendonly no --dir "$BASE/redis" \
    --logfile "$BASE/redis.log" &
PIDS+=($!)
REDIS_PID=${PIDS[-1]}

cat >"$BASE/nginx.conf" <<EOF
worker_processes 1;
pid $BASE/nginx.pid;
error_log $BASE/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $BASE/tmp; proxy_temp_path $BASE/tmp; fastcgi_temp_path $BASE/tmp;
  uwsgi_temp_path $BASE/tmp; scgi_temp_path $BASE/tmp;
  keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$BACKEND backlog=4096; location / { return 200 "ok\n"; } }
  map \$request_id \$tenant { "~(?<t>[0-9a-f]{4})\$" \$t; }
  upstream agent { server 127.0.0.1:$PROXY; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$FRONT backlog=4096;
    location / {
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Tenant \$tenant;
    }
  }
}
EOF
nginx -p "$BASE" -c "$BASE/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

route() { # name path
    cat <<EOF
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: $1 }
spec:
  parentRefs: [{ name: edge }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: $2 } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]
EOF
}

limit() { # policy route scope key...
    local name=$1 target=$2 scope=$3
    shift 3
    cat <<EOF
---
apiVersion: tollgate.dev/v1alpha1
kind: RateLimitPolicy
metadata: { name: $name }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: $target }]
  scope: $scope
  limits:
    - { name: $name, $*, requests: 1000000000, per: 1s }
EOF
}

{
    cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: $PROXY, protocol: HTTP }
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: app }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: $BACKEND }
---
apiVersion: tollgate.dev/v1alpha1
kind: AuthPolicy
metadata: { name: bench-auth }
spec:
  targetRefs:
    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: cluster }
    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: node }
    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: mcluster }
    - { group: gateway.networking.k8s.io, kind: HTTPRoute, name: mnode }
  apiKey: { header: X-Api-Key, credentialRefs: [{ name: bench-keys }] }
EOF
    route cluster /cluster
    route node /node
    route mcluster /mcluster
    route mnode /mnode
    limit per-consumer-cluster cluster Cluster "key: consumer"
    limit per-consumer-node node Node "key: consumer"
    limit per-tenant-cluster mcluster Cluster "key: header, header: X-Tenant"
    limit per-tenant-node mnode Node "key: header, header: X-Tenant"
} >"$BASE/policy/gateway.yaml"

for _ in $(seq 1 50); do
    redis-cli -p "$REDIS" ping >/dev/null 2>&1 && break
    sleep 0.1
done
ip link add clata0 type veth peer name clatap
ip link set clatap netns "$NETNS"
ip link set clata0 up
env TOLLGATE_LOG=warn "$BIN" run --interface clata0 --source "$BASE/policy" \
    --pin-dir "$BASE/bpf/agent" --state-dir "$BASE/state" --admin "127.0.0.1:$ADMIN" \
    --gateway-address 127.0.0.1 --tls-secrets-dir "$BASE/secrets" --access-log off \
    --ratelimit-redis "redis://127.0.0.1:$REDIS" --ratelimit-agents 1 \
    --detach-on-exit >"$BASE/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$PROXY/" && break
    sleep 0.1
done
redis_state() {
    curl -s "http://127.0.0.1:$ADMIN/status" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ratelimit_backend"]["state"])' 2>/dev/null
}
for _ in $(seq 1 100); do
    [ "$(redis_state)" = up ] && break
    sleep 0.1
done
[ "$(redis_state)" = up ] || {
    echo "Redis not up for the agent; /status:" >&2
    curl -s "http://127.0.0.1:$ADMIN/status" >&2
    cat "$BASE/agent.log" >&2
    exit 1
}

# Every route must do the work: 200 with the key, 401 without, the limit's headers.
for path in /cluster /node /mcluster /mnode; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$PROXY$path")
    [ "$c" = 200 ] || { echo "$path: $c with the key" >&2; exit 1; }
    c=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY$path")
    [ "$c" = 401 ] || { echo "$path: $c without a key" >&2; exit 1; }
    curl -s -D - -o /dev/null -H "x-api-key: $KEY" "http://127.0.0.1:$FRONT$path" |
        grep -qi '^ratelimit-policy:' || { echo "$path: no RateLimit-Policy header" >&2; exit 1; }
done

metric() { # name: the sum over its label sets
    curl -s "http://127.0.0.1:$ADMIN/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# h2load against PATH: "p50 p99 requests bad" (bad: non-2xx plus failed), or with RATE=0 a
# closed-loop run of 5 s: "requests/s".
load() { # path many rate
    local path=$1 many=$2 rate=$3 out port=$PROXY
    [ "$many" = 1 ] && port=$FRONT
    local src=("http://127.0.0.1:$port$path")
    if [ "$rate" = 0 ]; then
        out=$(h2load --h1 -t 1 -c "$CONNS" -D 5 -H "x-api-key: $KEY" "${src[@]}")
        echo "$out" | awk '/^finished in/ { gsub(",", ""); print int($4) }'
        return
    fi
    local per=$((rate / CONNS)) n=$((rate * SECONDS_PER_TRIAL))
    rm -f "$BASE/h2load.tsv"
    out=$(h2load --h1 -t 1 -c "$CONNS" --rps "$per" -n "$n" -H "x-api-key: $KEY" \
        --log-file "$BASE/h2load.tsv" "${src[@]}")
    local bad
    bad=$(echo "$out" | awk -F'[ ,]+' '
        /^requests:/ { f = $(NF-5) + $(NF-3) + $(NF-1) }
        /^status codes:/ { x = $5 + $7 + $9 }
        END { print f + x }')
    cut -f3 "$BASE/h2load.tsv" | sort -n | awk -v b="$bad" '{ v[NR] = $1 } END {
        printf "%d %d %d %d\n", v[int(NR * 0.50 + 0.5)], v[int(NR * 0.99 + 0.5)], NR, b }'
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%d %d %d\n", m, v[1], v[NR] }'
}

echo "binary $BIN; redis $(redis-server --version | awk '{ print $3 }'); rounds $ROUNDS of ${SECONDS_PER_TRIAL} s per route; $CONNS keep-alive connections, h2load -t 1"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| part | route | offered req/s | p50 µs median (min–max) | p99 µs median (min–max) | requests | non-2xx or failed | Redis commands |"
echo "|---|---|---|---|---|---|---|---|"
for part in one many; do
    many=0 pre=""
    [ "$part" = many ] && many=1 pre=m
    if [ -n "${CLAT_RATE:-}" ]; then
        rate=$CLAT_RATE
    else
        capacity=$(load "/${pre}node" "$many" 0)
        rate=$((capacity / 2 / CONNS * CONNS))
        echo "  $part: closed loop on /${pre}node $capacity req/s; offering $rate req/s"
    fi
    load "/${pre}cluster" "$many" "$rate" >/dev/null # warm-up of both routes
    load "/${pre}node" "$many" "$rate" >/dev/null
    declare -A p50=() p99=() reqs=() bad=() cmds=()
    loads=()
    for r in $(seq 1 "$ROUNDS"); do
        if ((r % 2)); then order="cluster node"; else order="node cluster"; fi
        for who in $order; do
            c0=$(metric tollgate_ratelimit_redis_commands_total)
            read -r a b n f < <(load "/$pre$who" "$many" "$rate")
            c1=$(metric tollgate_ratelimit_redis_commands_total)
            p50[$who]+="$a " p99[$who]+="$b "
            reqs[$who]=$((${reqs[$who]:-0} + n)) bad[$who]=$((${bad[$who]:-0} + f))
            cmds[$who]=$((${cmds[$who]:-0} + c1 - c0))
        done
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
    done
    for who in cluster node; do
        # shellcheck disable=SC2086
        read -r m50 lo50 hi50 < <(stats ${p50[$who]})
        # shellcheck disable=SC2086
        read -r m99 lo99 hi99 < <(stats ${p99[$who]})
        echo "| $part key$([ "$part" = many ] && echo "s (65,536 at random)") | /$pre$who | $rate | $m50 ($lo50–$hi50) | $m99 ($lo99–$hi99) | ${reqs[$who]} | ${bad[$who]} | ${cmds[$who]} |"
        eval "med50_$who=$m50 med99_$who=$m99"
    done
    # shellcheck disable=SC2154
    echo "  $part: cluster - node: p50 $((med50_cluster - med50_node)) µs, p99 $((med99_cluster - med99_node)) µs (medians); per round p50 ${p50[cluster]}/ ${p50[node]}; p99 ${p99[cluster]}/ ${p99[node]}; load average (1 min) after each round: ${loads[*]}"
    unset p50 p99 reqs bad cmds
done
echo
echo "agent: limited $(metric tollgate_ratelimit_limited_total), sync errors $(metric tollgate_ratelimit_redis_sync_errors_total), fallback $(metric tollgate_ratelimit_cluster_fallback), Redis commands $(metric tollgate_ratelimit_redis_commands_total), cluster keys tracked $(metric tollgate_ratelimit_cluster_keys)"
echo "redis: $(redis-cli -p "$REDIS" info stats | grep -E '^total_commands_processed' | tr -d '\r'); $(redis-cli -p "$REDIS" info commandstats | grep -E '^cmdstat_(evalsha|eval|fcall)' | tr -d '\r' | tr '\n' ' ')"
echo "redis CPU: $(awk '{ printf "%.2f s", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$REDIS_PID/stat")"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
