#!/usr/bin/env bash
# Side-by-side throughput on loopback, every path with the same RS256 bearer token and the
# same 1 KiB origin response:
#
#   origin directly (nginx serving a file)
#   nginx proxy_pass, no auth: the floor for any proxy
#   HAProxy `jwt_verify` RS256 on every request + a path ACL (Debian's haproxy)
#   tollgate serve, token cache on / off
#   tollgate serve --wasm (the policy module under wasmtime, its own token cache)
#
#   benches/load.sh [SECONDS] [CONNECTIONS] [ROUNDS]
#
# The paths are timed in turn, ROUNDS times over (default 3), so a machine that speeds up
# or slows down during the run touches every path alike; each path's figure is its median
# round. Prints each wrk summary, then a table of requests/s with ratios against nginx
# proxy_pass and HAProxy: the README's table comes from it. Installs wrk, nginx-light and
# haproxy with apt-get when missing. Everything listens on 127.0.0.1 and is stopped by
# PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
rounds=${3:-3}

. scripts/lib.sh
apt_install wrk:wrk nginx:nginx-light haproxy:haproxy
for tool in openssl python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

cargo build -q --release --locked -p tollgate-cli
cargo build -q --locked -p tollgate-wasm-module --target wasm32-unknown-unknown --profile wasm-speed
tollgate=target/release/tollgate

scratch

# --- the RS256 key, its JWK and a token for user `load`, valid for a day ---------------
openssl genrsa -out "$work/key.pem" 2048 2>/dev/null
openssl rsa -in "$work/key.pem" -pubout -out "$work/pub.pem" 2>/dev/null
modulus=$(openssl rsa -in "$work/key.pem" -noout -modulus | cut -d= -f2)
b64url() { python3 -c 'import base64,sys; print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())'; }
n=$(printf %s "$modulus" | xxd -r -p | b64url)
header=$(printf '{"alg":"RS256","kid":"load","typ":"JWT"}' | b64url)
exp=$(( $(date +%s) + 86400 ))
claims=$(printf '{"iss":"https://idp.load.test","aud":"gogs","sub":"load","exp":%d}' "$exp" | b64url)
signature=$(printf %s "$header.$claims" | openssl dgst -sha256 -sign "$work/key.pem" | b64url)
token="$header.$claims.$signature"

cat > "$work/policy.toml" <<POLICY
[[issuer]]
name = "load"
issuer = "https://idp.load.test"
audiences = ["gogs"]
algorithms = ["RS256"]
jwks = '{"keys":[{"kty":"RSA","kid":"load","e":"AQAB","n":"$n"}]}'

[[grant]]
who = "user:load"
repos = "acme/*"
access = "read"
POLICY
echo '{"gogs-token/load": "origin-token"}' > "$work/secrets.json"
$tollgate check "$work/policy.toml" >/dev/null

# --- origin, and nginx proxy_pass in front of it -----------------------------------------
origin_port=$(free_port)
nginx_proxy_port=$(free_port)
mkdir -p "$work/www/acme/app.git/info" "$work/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/acme/app.git/info/refs"
# nginx's workers drop root for an unprivileged user, which must read the files.
chmod -R a+rX "$work"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    keepalive_requests 1000000;
    upstream origin { server 127.0.0.1:$origin_port; keepalive 64; }
    server { listen 127.0.0.1:$origin_port; root $work/www; }
    server {
        listen 127.0.0.1:$nginx_proxy_port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$origin_port"
wait_port "$nginx_proxy_port"

# --- HAProxy verifying the same token on every request -----------------------------------
haproxy_port=$(free_port)
cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 2
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend gate
    bind 127.0.0.1:$haproxy_port
    http-request deny unless { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny unless { var(txn.alg) -m str RS256 }
    http-request deny unless { var(txn.bearer),jwt_verify(txn.alg,"$work/pub.pem") -m int 1 }
    http-request deny unless { path_beg /acme/ }
    default_backend origin
backend origin
    http-reuse always
    server origin 127.0.0.1:$origin_port
CONF
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!)
wait_port "$haproxy_port"

# --- tollgate serve, three ways -----------------------------------------------------------
start_tollgate() { # port extra-args...
    local port=$1; shift
    $tollgate serve --policy "$work/policy.toml" --origin "http://127.0.0.1:$origin_port" \
        --listen "127.0.0.1:$port" --secrets "$work/secrets.json" --audit-log /dev/null "$@" \
        2>/dev/null & pids+=($!)
    wait_port "$port"
}
cached_port=$(free_port); start_tollgate "$cached_port"
uncached_port=$(free_port); start_tollgate "$uncached_port" --token-cache-entries 0
wasm_port=$(free_port); start_tollgate "$wasm_port" --wasm

# Every path must actually pass the token through to the origin before it is timed.
path=/acme/app.git/info/refs
for port in "$origin_port" "$nginx_proxy_port" "$haproxy_port" "$cached_port" "$uncached_port" "$wasm_port"; do
    status=$(curl -s -o "$work/answer" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path")
    [ "$status" = 200 ] || { echo "error: port $port answered $status, not 200: $(head -c 300 "$work/answer")" >&2; exit 1; }
done
# ... and a bad signature must be refused by the gateways. The forgery changes a character
# well inside the signature: the last one may carry only padding bits, which a lenient
# base64 decoder ignores.
keep=$(( ${#token} - 10 ))
changed=$([ "${token:$keep:1}" = A ] && echo B || echo A)
forged="${token:0:$keep}$changed${token:$((keep + 1))}"
for port in "$haproxy_port" "$cached_port" "$uncached_port" "$wasm_port"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $forged" "http://127.0.0.1:$port$path")
    [ "$status" != 200 ] || { echo "error: port $port let a forged token through" >&2; exit 1; }
done

declare -A rounds_rps
run() { # key label port
    echo "== $2"
    wrk -t2 -c"$connections" -d2s -H "Authorization: Bearer $token" "http://127.0.0.1:$3$path" >/dev/null
    local out
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" -H "Authorization: Bearer $token" "http://127.0.0.1:$3$path")
    echo "$out" | grep -E "Requests/sec|Latency|requests in|Non-2xx" || true
    if echo "$out" | grep -q "Non-2xx"; then echo "error: $2 answered non-2xx under load" >&2; exit 1; fi
    rounds_rps[$1]+=" $(echo "$out" | awk '/Requests\/sec/ { print $2 }')"
}
for round in $(seq "$rounds"); do
    echo "## round $round of $rounds"
    run origin "origin directly" "$origin_port"
    run nginx "nginx proxy_pass, no auth" "$nginx_proxy_port"
    run haproxy "HAProxy jwt_verify RS256 + path ACL" "$haproxy_port"
    run cached "tollgate serve, token cache on" "$cached_port"
    run uncached "tollgate serve, token cache off" "$uncached_port"
    run wasm "tollgate serve --wasm" "$wasm_port"
done
declare -A rps
for key in "${!rounds_rps[@]}"; do
    # shellcheck disable=SC2086 # the rounds' figures are meant to split into arguments
    rps[$key]=$(median ${rounds_rps[$key]})
done

echo
echo "wrk -t2 -c$connections -d${seconds}s, median of $rounds rounds, 1 KiB response, RS256 bearer token; $(nproc) cores"
echo
echo "| path | requests/s | vs nginx proxy_pass | vs HAProxy |"
echo "| --- | ---: | ---: | ---: |"
row() { # key label
    python3 -c 'import sys; v, n, h = map(float, sys.argv[1:4]); print(f"| {sys.argv[4]} | {v:,.0f} | {v/n:.2f} | {v/h:.2f} |")' \
        "${rps[$1]}" "${rps[nginx]}" "${rps[haproxy]}" "$2"
}
row origin "origin directly"
row nginx "nginx proxy_pass, no auth"
row haproxy "HAProxy 2.6 jwt_verify RS256 + path ACL"
row cached "tollgate serve, token cache on"
row uncached "tollgate serve, token cache off"
row wasm "tollgate serve --wasm (module's token cache)"
python3 -c 'import sys; w, c = map(float, sys.argv[1:]); print(f"\nserve --wasm / native serve: {w/c:.2f}")' "${rps[wasm]}" "${rps[cached]}"
