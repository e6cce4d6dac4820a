#!/usr/bin/env bash
# A/B of two tollgate binaries on the L7 path: CPU time per request, not requests/s.
#
# Why not requests/s: on a shared 2-core machine (other builds running) throughput moves by
# tens of percent between trials, while the agent's own CPU time over a fixed number of
# requests moves much less. Both agents run side by side with the same revision as
# gateway-user/benches/l7.rs (10 routes, API key, a rate limit that never triggers,
# X-Forwarded-For/-Proto, keep-alive to one nginx backend, no access log); each round loads
# them in turn (the order rotated every round) with h2load and a fixed request count, and
# reads utime+stime of the agent's process from /proc/PID/stat before and after. Medians and
# min-max over rounds, the median of each round's new/old ratio, and the same medians of user
# time alone (what the proxy's own code changes move; the kernel's share is the same work for
# both); the load average is printed with the figures. RSS (VmRSS, and the
# smaps_rollup split) of each agent is read after the last round.
#
# Usage (root): l7_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [REQUESTS] [PROTOS]
#   PROTOS: any of h1 tls h2 h1new (default "h1 h2"). h1new: HTTP/1.1 with a new connection for
#   every request (ab without keep-alive, 32 at once), the load where accepting matters; its
#   trials send REQUESTS/10 requests (loopback's ephemeral ports run out long before 200,000).
# L7AB_BACKEND_TLS=1: the agents reach nginx over TLS (a Backend with `tls`, trusting a CA made
# for the run), for the proxy's TLS client side; the client side stays as PROTOS says.
# Names are unique to this harness (prefix lpab): netns lpab-ns, veths lpab[ab]0, ports 2961x.
set -euo pipefail

OLD=${1:?old binary}
NEW=${2:?new binary}
ROUNDS=${3:-7}
REQUESTS=${4:-200000}
PROTOS=${5:-h1 h2}
BASE=/run/tollgate-l7ab
NETNS=lpab-ns
BACKEND=29601
KEY=bench-key-5b0c7a6e1f
HOST=bench.local
TICK=$(getconf CLK_TCK)

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    for i in lpaba0 lpabb0; do ip link del "$i" 2>/dev/null || true; done
    ip netns del "$NETNS" 2>/dev/null || true
    mkdir -p /tmp/tollgate-l7ab-logs && cp "$BASE"/*.log /tmp/tollgate-l7ab-logs/ 2>/dev/null || true
    umount "$BASE/bpf" 2>/dev/null || true
    rm -rf "$BASE"
}
PIDS=()
trap cleanup EXIT
cleanup
mkdir -p "$BASE/tmp" "$BASE/bpf" "$BASE/secrets/default/bench-tls" "$BASE/secrets/default/bench-keys"
mount -t bpf bpf "$BASE/bpf"
ip netns add "$NETNS"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$BASE/tls.key" \
    -out "$BASE/tls.crt" -days 2 -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" 2>/dev/null
cp "$BASE/tls.crt" "$BASE/tls.key" "$BASE/secrets/default/bench-tls/"
BACKEND_TLS=${L7AB_BACKEND_TLS:-}
backend_listen="listen 127.0.0.1:$BACKEND backlog=4096;"
backend_spec=""
backend_kind="in cleartext"
if [ -n "$BACKEND_TLS" ]; then
    backend_kind="over TLS"
    # A CA of the run, and the backend's certificate for backend.internal signed by it.
    mkdir -p "$BASE/secrets/default/bench-backend-ca"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$BASE/ca.key" \
        -out "$BASE/ca.crt" -days 2 -subj "/CN=bench backend CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$BASE/backend.key" \
        -out "$BASE/backend.csr" -subj "/CN=backend.internal" 2>/dev/null
    printf 'subjectAltName=DNS:backend.internal\n' >"$BASE/backend.ext"
    openssl x509 -req -in "$BASE/backend.csr" -CA "$BASE/ca.crt" -CAkey "$BASE/ca.key" \
        -CAcreateserial -days 2 -extfile "$BASE/backend.ext" -out "$BASE/backend.crt" 2>/dev/null
    cp "$BASE/ca.crt" "$BASE/secrets/default/bench-backend-ca/ca.crt"
    backend_listen="listen 127.0.0.1:$BACKEND ssl backlog=4096; ssl_certificate $BASE/backend.crt; ssl_certificate_key $BASE/backend.key;"
    backend_spec="  tls: { hostname: backend.internal, caCertificateRefs: [{ name: bench-backend-ca }] }"
fi
salt=bench-salt-0001
hash=$(printf '%s%s' "$salt" "$KEY" | sha256sum | cut -d' ' -f1)
echo "bench:sha256:$(printf '%s' "$salt" | xxd -p):$hash" >"$BASE/secrets/default/bench-keys/keys"

cat >"$BASE/backend.conf" <<EOF
worker_processes 2;
pid $BASE/backend.pid;
error_log $BASE/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $BASE/tmp; proxy_temp_path $BASE/tmp; fastcgi_temp_path $BASE/tmp;
  uwsgi_temp_path $BASE/tmp; scgi_temp_path $BASE/tmp;
  keepalive_requests 10000000; keepalive_timeout 300s;
  server { $backend_listen location / { return 200 "ok\n"; } }
}
EOF
nginx -p "$BASE" -c "$BASE/backend.conf" -g 'daemon off;' &
PIDS+=($!)

revision() { # http tls
    cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: edge }
spec:
  gatewayClassName: tollgate
  listeners:
    - { name: http, port: $1, protocol: HTTP }
    - { name: https, port: $2, protocol: HTTPS, hostname: $HOST, tls: { mode: Terminate, certificateRefs: [{ kind: Secret, name: bench-tls }] } }
---
apiVersion: tollgate.dev/v1alpha1
kind: Backend
metadata: { name: app }
spec:
  endpoints:
    - ip: { address: 127.0.0.1, port: $BACKEND }
$backend_spec
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
    for i in $(seq 1 9); do
        n=$(printf '%05d' "$i")
        cat <<EOF
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: svc-$n }
spec:
  parentRefs: [{ name: edge }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /svc-$n } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]
EOF
    done
}

start_agent() { # name binary iface http tls admin [VAR=VALUE...]
    local name=$1 bin=$2 iface=$3 http=$4 tls=$5 admin=$6
    shift 6
    ip link add "$iface" type veth peer name "${iface%0}p"
    ip link set "${iface%0}p" netns "$NETNS"
    ip link set "$iface" up
    mkdir -p "$BASE/$name/policy"
    revision "$http" "$tls" >"$BASE/$name/policy/gateway.yaml"
    env TOLLGATE_LOG=warn "$@" "$bin" run --interface "$iface" --source "$BASE/$name/policy" \
        --pin-dir "$BASE/bpf/$name" --state-dir "$BASE/$name/state" --admin "127.0.0.1:$admin" \
        --gateway-address 127.0.0.1 --tls-secrets-dir "$BASE/secrets" --access-log off \
        --detach-on-exit >"$BASE/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 600); do
        if curl -s -o /dev/null "http://127.0.0.1:$http/"; then return 0; fi
        sleep 0.1
    done
    echo "agent $name did not listen; log:" >&2
    cat "$BASE/$name.log" >&2
    exit 1
}

start_agent old "$OLD" lpaba0 29611 29612 29613
OLD_PID=${PIDS[-1]}
# L7AB_NEW_ENV="VAR=VALUE ...": extra environment of the new agent only (allocator settings).
# shellcheck disable=SC2086
start_agent new "$NEW" lpabb0 29621 29622 29623 ${L7AB_NEW_ENV:-}
NEW_PID=${PIDS[-1]}
sleep 2
for who in old new; do
    pid=$OLD_PID
    [ "$who" = new ] && pid=$NEW_PID
    echo "$who at start: $(grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ';')"
done

# Both must do the work: 200 with the key, 401 without.
for port in 29611 29621; do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $KEY" "http://127.0.0.1:$port/api/orders")
    [ "$c" = 200 ] || { echo "port $port: $c with the key" >&2; exit 1; }
    c=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/orders")
    [ "$c" = 401 ] || { echo "port $port: $c without a key" >&2; exit 1; }
done

cpu_ticks() { # pid: "utime+stime utime" of every thread of the process
    local s
    s=$(cat "/proc/$1/stat")
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo "$((${12} + ${13})) ${12}"
}

per_request() { # "t0 u0" "t1 u1" requests failed -> "µs/request user_µs/request failed"
    echo "$1 $2" | awk -v n="$3" -v t="$TICK" -v f="$4" \
        '{ printf "%.2f %.2f %d\n", ($3 - $1) / t * 1e6 / n, ($4 - $2) / t * 1e6 / n, f }'
}

trial() { # proto port pid -> "µs/request user_µs/request failed"
    local proto=$1 port=$2 pid=$3 args url out t0 t1 failed
    case $proto in
        h1) args=(--h1 -c 64); url="http://$HOST:$port/api/orders" ;;
        tls) args=(--h1 -c 64); url="https://$HOST:$((port + 1))/api/orders" ;;
        h2) args=(-c 8 -m 16); url="https://$HOST:$((port + 1))/api/orders" ;;
        h1new) ;;
    esac
    if [ "$proto" = h1new ]; then
        local n=$((REQUESTS / 10))
        t0=$(cpu_ticks "$pid")
        out=$(ab -q -n "$n" -c 32 -H "x-api-key: $KEY" -H "Host: $HOST" "http://127.0.0.1:$port/api/orders")
        t1=$(cpu_ticks "$pid")
        failed=$(echo "$out" | awk '/^Failed requests:/ { print $3 }')
        non2xx=$(echo "$out" | awk '/^Non-2xx responses:/ { print $3 }')
        per_request "$t0" "$t1" "$n" $((${failed:-0} + ${non2xx:-0}))
        return
    fi
    t0=$(cpu_ticks "$pid")
    out=$(h2load -t 1 -n "$REQUESTS" "${args[@]}" -H "x-api-key: $KEY" \
        --connect-to "127.0.0.1:$([ "$proto" = h1 ] && echo "$port" || echo $((port + 1)))" "$url")
    t1=$(cpu_ticks "$pid")
    failed=$(echo "$out" | awk -F'[ ,]+' '/^requests:/ { print $(NF-5) + $(NF-3) + $(NF-1) }')
    non2xx=$(echo "$out" | awk -F'[ ,]+' '/^status codes:/ { print $5 + $7 + $9 }')
    per_request "$t0" "$t1" "$REQUESTS" $((failed + non2xx))
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f %.1f %.1f\n", m, v[1], v[NR] }'
}

echo "rounds $ROUNDS, $REQUESTS requests per trial, h2load -t 1; backend $backend_kind; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for proto in $PROTOS; do
    # Warm-up of both (connections, pools, allocator).
    trial "$proto" 29611 "$OLD_PID" >/dev/null
    trial "$proto" 29621 "$NEW_PID" >/dev/null
    old=()
    new=()
    oldu=()
    newu=()
    fails=0
    loads=()
    for r in $(seq 1 "$ROUNDS"); do
        if ((r % 2)); then order="old new"; else order="new old"; fi
        for who in $order; do
            if [ "$who" = old ]; then
                read -r us uu f < <(trial "$proto" 29611 "$OLD_PID")
                old+=("$us")
                oldu+=("$uu")
            else
                read -r us uu f < <(trial "$proto" 29621 "$NEW_PID")
                new+=("$us")
                newu+=("$uu")
            fi
            fails=$((fails + f))
        done
        loads+=("$(cut -d' ' -f1 /proc/loadavg)")
    done
    read -r om omin omax < <(stats "${old[@]}")
    read -r nm nmin nmax < <(stats "${new[@]}")
    echo "| $proto | old | $om | $omin–$omax | ${old[*]} |"
    echo "| $proto | new | $nm | $nmin–$nmax | ${new[*]} |"
    read -r oum _ _ < <(stats "${oldu[@]}")
    read -r num _ _ < <(stats "${newu[@]}")
    # Each round's pair ran next to each other in time: the median of their ratios is less
    # moved by the host's drift than the ratio of the medians.
    pairs=()
    for i in "${!old[@]}"; do pairs+=("$(awk -v a="${old[$i]}" -v b="${new[$i]}" 'BEGIN { printf "%.4f", b / a }')"); done
    read -r pm pmin pmax < <(printf '%s\n' "${pairs[@]}" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }')
    echo "  $proto: new/old median $(awk -v a="$nm" -v b="$om" 'BEGIN { printf "%.3f", a / b }'); paired rounds $pm ($pmin–$pmax); user time only: old $oum, new $num µs, $(awk -v a="$num" -v b="$oum" 'BEGIN { printf "%.3f", a / b }'); failed or non-2xx: $fails; load average (1 min) after each round: ${loads[*]}"
done
for who in old new; do
    pid=$OLD_PID
    [ "$who" = new ] && pid=$NEW_PID
    echo "$who: $(grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|Threads)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ';')"
done
# L7AB_INSPECT=COMMAND: run COMMAND PID for each agent before stopping them (e.g. a smaps
# breakdown).
if [ -n "${L7AB_INSPECT:-}" ]; then
    for who in old new; do
        pid=$OLD_PID
        [ "$who" = new ] && pid=$NEW_PID
        echo "== $who (pid $pid)"
        $L7AB_INSPECT "$pid"
    done
fi
