# Shell helpers the test command and the benchmarks share; source it (it only defines
# functions).

# apt_install COMMAND:PACKAGE ...: installs with apt-get the package of every command that
# is missing, refreshing the package index once if the first attempt fails.
apt_install() {
    local missing=() pair sudo=""
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
}

# scratch: a work folder in $work and a list $pids of processes to stop; on exit every one
# of them is stopped and the folder removed.
scratch() {
    work=$(mktemp -d)
    pids=()
    trap stop_scratch EXIT
}
stop_scratch() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}

# free_port: a port free a moment ago, below the kernel's ephemeral range (as the Rust
# tests' free_port), so no outgoing connection takes it before the server binds it.
free_port() {
    python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = list(range(10000, low)) if low >= 11000 else []
random.shuffle(ports)
for port in ports + [0]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "port $1 never opened" >&2
    exit 1
}

# median NUMBER ...
median() { python3 -c 'import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
