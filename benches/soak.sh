#!/usr/bin/env bash
# Soak: mixed git clone / push / API traffic with origin faults injected at random (resets
# mid-pack, API answers held back), straight to the origin and through `tollgate serve`,
# side by side; reports operations, errors by kind, p50/p99 latency and serve's memory and
# descriptors over time (see benches/soak.py for the traffic and the fault schedule).
#
#   benches/soak.sh [MINUTES_PER_SIDE] [WORKERS]      (default 2 minutes, 4 workers)
#
# A benchmark, not a test: nothing here fails on a number. Everything listens on
# 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-2}
workers=${2:-4}
for tool in git python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
cargo build -q --release --locked -p tollgate-cli
exec python3 benches/soak.py target/release/tollgate "$minutes" "$workers"
