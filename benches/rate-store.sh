#!/usr/bin/env bash
# What sharing rate-limit state through Redis costs: `tollgate serve` with its in-memory
# store against the same serve with `--rate-store redis://`, both in front of one nginx
# origin, every request under a rate limit (API keys, one key per caller so the limit's
# state is spread over keys as it is in use; plus one run where every request hits the
# same key, the worst case for compare-and-set).
#
#   benches/rate-store.sh [SECONDS] [CONNECTIONS]     (ROUNDS=3)
#
# Paths are timed in turn; prints wrk's summaries and a table of requests/s, mean latency
# and the ratio against the in-memory store. Installs wrk, nginx-light and redis-server
# with apt-get when missing; everything listens on 127.0.0.1 and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
threads=$(( connections < 2 ? 1 : 2 ))

. scripts/lib.sh
apt_install wrk:wrk nginx:nginx-light redis-server:redis-server
cargo build -q --release --locked -p tollgate-cli
tollgate=target/release/tollgate

scratch

# The origin: nginx serving 1 KiB.
origin_port=$(free_port)
mkdir -p "$work/www/acme/app.git/info" "$work/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/acme/app.git/info/refs"
chmod -R a+rX "$work"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$origin_port; root $work/www; } }
CONF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$origin_port"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
wait_port "$redis_port"

# 64 API keys, each its own caller and rate-limit key; a limit no run reaches.
keys=()
{
    for i in $(seq 64); do
        key="bench-key-$i"
        keys+=("$key")
        printf '[[api_key]]\nname = "k%d"\nsha256 = "%s"\nuser = "bot%d"\ngroups = ["bots"]\n\n' \
            "$i" "$(printf %s "$key" | "$tollgate" hash-key)" "$i"
    done
    printf '[[grant]]\nwho = "group:bots"\nrepos = "acme/*"\naccess = "read"\n\n'
    printf '[[rate_limit]]\nname = "bots"\nwho = "group:bots"\nrequests = 1000000000\nperiod_seconds = 1\n'
} > "$work/policy.toml"
sed 's/^period_seconds = 1$/period_seconds = 1\nshared = true/' "$work/policy.toml" > "$work/shared.toml"
printf '{%s}\n' "$(for i in $(seq 64); do printf '"gogs-token/bot%d": "t"' "$i"; [ "$i" -lt 64 ] && printf ','; done)" > "$work/secrets.json"

start_tollgate() { # port policy [args...]
    local port=$1 policy=$2; shift 2
    "$tollgate" serve --policy "$policy" --origin "http://127.0.0.1:$origin_port" \
        --listen "127.0.0.1:$port" --secrets "$work/secrets.json" --audit-log /dev/null "$@" \
        2>/dev/null & pids+=($!)
    wait_port "$port"
}
memory_port=$(free_port); start_tollgate "$memory_port" "$work/policy.toml"
redis_port_a=$(free_port); start_tollgate "$redis_port_a" "$work/policy.toml" --rate-store "redis://127.0.0.1:$redis_port/0"
shared_port=$(free_port); start_tollgate "$shared_port" "$work/shared.toml" --rate-store "redis://127.0.0.1:$redis_port/0"

# wrk spreads its connections over the keys (one key per connection, round robin).
cat > "$work/keys.lua" <<LUA
local keys = { $(printf '"%s",' "${keys[@]}") }
local counter = 0
setup = function(thread) end
init = function(args) counter = math.random(#keys) end
request = function()
    counter = counter % #keys + 1
    return wrk.format("GET", "/acme/app.git/info/refs", { ["Authorization"] = "token " .. keys[counter] })
end
LUA
path=/acme/app.git/info/refs
for port in "$memory_port" "$redis_port_a" "$shared_port"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token ${keys[0]}" "http://127.0.0.1:$port$path")
    [ "$status" = 200 ] || { echo "error: port $port answered $status, not 200" >&2; exit 1; }
done

# Rounds interleave the paths so drift on the machine falls on all of them alike; the
# table shows each path's median round.
rounds=${ROUNDS:-3}
declare -A rps latency
run() { # key label port
    echo "== $2"
    wrk -t"$threads" -c"$connections" -d2s -s "$work/keys.lua" "http://127.0.0.1:$3" >/dev/null
    local out
    out=$(wrk -t"$threads" -c"$connections" -d"${seconds}s" -s "$work/keys.lua" "http://127.0.0.1:$3")
    echo "$out" | grep -E "Requests/sec|Latency|Non-2xx" || true
    if echo "$out" | grep -q "Non-2xx"; then echo "error: $2 answered non-2xx under load" >&2; exit 1; fi
    rps[$1]+="$(echo "$out" | awk '/Requests\/sec/ { print $2 }') "
    # wrk writes the mean latency as 223.45us, 1.25ms or 1.02s: kept in microseconds.
    latency[$1]+="$(echo "$out" | awk '/Latency/ { v = $2; f = v ~ /us$/ ? 1 : v ~ /ms$/ ? 1000 : 1000000; sub(/[a-z]+$/, "", v); print v * f }') "
}
for round in $(seq "$rounds"); do
    echo "-- round $round of $rounds"
    run memory "in-memory store, 64 keys" "$memory_port"
    run redis "Redis store, 64 keys" "$redis_port_a"
    run shared "Redis store, one shared key" "$shared_port"
done

echo
echo "wrk -t$threads -c$connections -d${seconds}s, API keys, every request rate-limited; median of $rounds rounds; $(nproc) cores"
echo
echo "| rate-limit store | requests/s | mean latency | vs in memory |"
echo "| --- | ---: | ---: | ---: |"
for key in memory redis shared; do
    label=$(case $key in memory) echo "in memory (one instance)";; redis) echo "Redis, 64 keys";; shared) echo "Redis, one key for all";; esac)
    # shellcheck disable=SC2086 # the rounds' figures are meant to split into arguments
    python3 -c 'import sys; v, m, l = map(float, sys.argv[1:4]); print(f"| {sys.argv[4]} | {v:,.0f} | {l:,.0f} us | {v/m:.2f} |")' \
        "$(median ${rps[$key]})" "$(median ${rps[memory]})" "$(median ${latency[$key]})" "$label"
done
