#!/usr/bin/env bash
# Throughput of `tollgate serve` on loopback: wrk against a static origin (nginx) directly,
# then through tollgate with an API-key policy, natively and with --wasm. Prints wrk's
# summaries; the README's table comes from this script.
#
#   benches/load.sh [SECONDS] [CONNECTIONS]
#
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light). Everything listens on
# 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install wrk nginx-light)" >&2; exit 1; }
done
cargo build -q --release --locked -p tollgate-cli
cargo build -q --locked -p tollgate-wasm-module --target wasm32-unknown-unknown --profile wasm-size
tollgate=target/release/tollgate

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# A static origin: a 1 KiB ref advertisement stand-in.
origin_port=$(free_port)
mkdir -p "$work/www/acme/app.git/info" "$work/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/acme/app.git/info/refs"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server { listen 127.0.0.1:$origin_port; root $work/www; }
}
CONF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$origin_port"

key=load-test-key
cat > "$work/policy.toml" <<POLICY
[[api_key]]
name = "load"
sha256 = "$(printf %s "$key" | $tollgate hash-key)"
user = "load"
[[grant]]
who = "key:load"
repos = "acme/*"
access = "read"
POLICY
echo '{"gogs-token/load": "origin-token"}' > "$work/secrets.json"

run() { # label url
    echo "== $1"
    wrk -t2 -c"$connections" -d"${seconds}s" -H "Authorization: token $key" "$2" | grep -E "Requests/sec|Latency|requests in"
}

run "origin directly" "http://127.0.0.1:$origin_port/acme/app.git/info/refs"
for mode in native wasm; do
    port=$(free_port)
    extra=()
    [ "$mode" = wasm ] && extra=(--wasm)
    $tollgate serve --policy "$work/policy.toml" --origin "http://127.0.0.1:$origin_port" \
        --listen "127.0.0.1:$port" --secrets "$work/secrets.json" --audit-log /dev/null "${extra[@]}" 2>/dev/null & pids+=($!)
    wait_port "$port"
    run "through tollgate serve ($mode)" "http://127.0.0.1:$port/acme/app.git/info/refs"
done
