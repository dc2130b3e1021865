#!/usr/bin/env python3
"""Soak: mixed git and API traffic with faults injected at random, straight to the origin
and through `tollgate serve`, side by side. Run it through benches/soak.sh, which builds
serve and passes its path:

    soak.py TOLLGATE_BINARY MINUTES WORKERS

The origin is tests/e2e/git_origin.py (the real `git http-backend`, plus Gogs' repository
API call) with one repository, acme/app, whose main branch holds a 256 KiB blob. WORKERS
threads each loop over: an API call (GET /api/v1/repos/acme/app, half the operations),
a clone of main (three in ten) and a push of a new 64 KiB commit to the worker's own
branch (two in ten). Every 4 s, half the time (seeded, so both runs get the same
schedule), the next of three faults in turn is held for 1 s: the origin resets a fetch's
pack or a push's pack 8 KiB in, or holds API answers for 30 s. Each side runs MINUTES minutes. The report
gives operations, errors by kind, p50 and p99 latency per operation, and serve's resident
memory and open descriptors sampled every 10 s, with serve's own failure and shed
counters. Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import base64
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN_TOKEN = "svc-token"
API_KEY = "soak-key"
API_TIMEOUT = 10
FAULTS = ["reset-upload-pack-response", "reset-receive-pack-request", "hang-api"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, log=None):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            said = open(log).read() if log else ""
            sys.exit(f"error: {what} exited with {proc.returncode}\n{said}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"error: {what} never listened on {port}")


def git(*args, cwd=None, auth=None, check=True):
    config = ["-c", f"http.extraHeader=Authorization: {auth}"] if auth else []
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_HTTP_LOW_SPEED_LIMIT="1000",
               GIT_HTTP_LOW_SPEED_TIME="10", GIT_AUTHOR_NAME="soak", GIT_AUTHOR_EMAIL="s@k",
               GIT_COMMITTER_NAME="soak", GIT_COMMITTER_EMAIL="s@k")
    result = subprocess.run(["git", *config, *args], cwd=cwd, env=env, capture_output=True)
    if check and result.returncode != 0:
        sys.exit(f"error: git {' '.join(args)}: {result.stderr.decode(errors='replace')}")
    return result


def seed(repos, scratch):
    bare = os.path.join(repos, "acme", "app.git")
    os.makedirs(bare)
    git("init", "-q", "--bare", "-b", "main", bare)
    work = os.path.join(scratch, "seed")
    git("clone", "-q", bare, work)
    with open(os.path.join(work, "blob.bin"), "wb") as f:
        f.write(random.Random(1).randbytes(256 << 10))
    git("add", "blob.bin", cwd=work)
    git("commit", "-q", "-m", "seed", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Run:
    """One side of the soak: WORKERS threads against BASE_URL for SECONDS."""

    def __init__(self, name, base_url, auth, seconds, workers, fault_file, scratch, watch_pid):
        self.name, self.base_url, self.auth = name, base_url, auth
        self.seconds, self.workers, self.fault_file = seconds, workers, fault_file
        self.scratch, self.watch_pid = os.path.join(scratch, name), watch_pid
        self.lock = threading.Lock()
        self.latencies = {"api": [], "clone": [], "push": []}
        self.errors = {}
        self.ops = 0
        self.samples = []
        self.faults_injected = 0

    def record(self, op, started, error):
        elapsed_ms = (time.monotonic() - started) * 1000
        with self.lock:
            self.ops += 1
            self.latencies[op].append(elapsed_ms)
            if error:
                self.errors[f"{op}: {error}"] = self.errors.get(f"{op}: {error}", 0) + 1

    def api(self):
        request = urllib.request.Request(f"{self.base_url}/api/v1/repos/acme/app",
                                         headers={"Authorization": self.auth})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as answer:
                body = json.loads(answer.read())
                error = None if body.get("full_name") == "acme/app" else "wrong body"
        except urllib.error.HTTPError as e:
            error = f"status {e.code}"
        except (TimeoutError, socket.timeout):
            error = f"no answer in {API_TIMEOUT} s"
        except (urllib.error.URLError, OSError) as e:
            error = f"connection: {type(getattr(e, 'reason', e)).__name__}"
        self.record("api", started, error)

    def clone(self, n, worker):
        dest = os.path.join(self.scratch, f"clone-{worker}-{n}")
        started = time.monotonic()
        result = git("clone", "-q", "--single-branch", "--branch", "main",
                     f"{self.base_url}/acme/app.git", dest, auth=self.auth, check=False)
        error = None
        if result.returncode != 0:
            error = "failed"
        elif os.path.getsize(os.path.join(dest, "blob.bin")) != 256 << 10:
            error = "wrong content"
        self.record("clone", started, error)
        shutil.rmtree(dest, ignore_errors=True)

    def push(self, work, branch, rng):
        with open(os.path.join(work, "data.bin"), "wb") as f:
            f.write(rng.randbytes(64 << 10))
        git("add", "data.bin", cwd=work)
        git("commit", "-q", "-m", "soak", cwd=work)
        started = time.monotonic()
        result = git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work,
                     auth=self.auth, check=False)
        self.record("push", started, None if result.returncode == 0 else "failed")

    def worker(self, worker, deadline):
        rng = random.Random(1000 + worker)
        work = os.path.join(self.scratch, f"work-{worker}")
        git("clone", "-q", "--single-branch", "--branch", "main",
            f"{self.base_url}/acme/app.git", work, auth=self.auth)
        branch = f"soak-{self.name}-{worker}"
        n = 0
        while time.monotonic() < deadline:
            draw = rng.random()
            if draw < 0.5:
                self.api()
            elif draw < 0.8:
                self.clone(n, worker)
            else:
                self.push(work, branch, rng)
            n += 1

    def faults(self, deadline):
        rng = random.Random(7)
        while time.monotonic() < deadline:
            time.sleep(min(4, max(0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break
            if rng.random() < 0.5:
                with open(self.fault_file, "w") as f:
                    f.write(FAULTS[self.faults_injected % len(FAULTS)])
                self.faults_injected += 1
                time.sleep(1)
                os.remove(self.fault_file)

    def sampler(self, deadline):
        start = time.monotonic()
        while time.monotonic() < deadline:
            if self.watch_pid:
                fds = len(os.listdir(f"/proc/{self.watch_pid}/fd"))
                self.samples.append((round(time.monotonic() - start),
                                     proc_kib(self.watch_pid, "VmRSS:") // 1024, fds))
            time.sleep(10)

    def run(self):
        os.makedirs(self.scratch)
        deadline = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self.worker, args=(w, deadline))
                   for w in range(self.workers)]
        threads += [threading.Thread(target=self.faults, args=(deadline,)),
                    threading.Thread(target=self.sampler, args=(deadline,))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if os.path.exists(self.fault_file):
            os.remove(self.fault_file)
        return self


def main():
    binary, minutes, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    seconds = minutes * 60
    scratch = tempfile.mkdtemp(prefix="tollgate-soak-")
    procs = []
    try:
        repos = os.path.join(scratch, "repos")
        seed(repos, scratch)
        fault_file = os.path.join(scratch, "origin-fault")
        origin_port = free_port()
        origin = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests/e2e/git_origin.py"), str(origin_port),
             repos, json.dumps({"svc": ORIGIN_TOKEN}), os.devnull],
            env=dict(os.environ, GIT_ORIGIN_FAULTS=fault_file),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(origin)
        wait_port(origin_port, origin, "the git origin")

        key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
        policy = os.path.join(scratch, "policy.toml")
        with open(policy, "w") as f:
            f.write(f"""
[gateway]
realm = "Soak"
site_api = "deny"

[origin]
git = "service-token"
api = "service-token"
service_user = "svc"
service_token_secret = "svc-token"

[[api_key]]
name = "soak"
sha256 = "{key_hash}"
user = "soak"

[[grant]]
who = "user:soak"
repos = "acme/app"
access = "write"
""")
        secrets = os.path.join(scratch, "secrets.json")
        with open(secrets, "w") as f:
            json.dump({"svc-token": ORIGIN_TOKEN}, f)
        port, admin_port = free_port(), free_port()
        serve = subprocess.Popen(
            [binary, "serve", "--policy", policy, "--secrets", secrets,
             "--origin", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}",
             "--audit-log", os.path.join(scratch, "audit.log"),
             "--origin-header-timeout", "2", "--stream-idle-timeout", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(serve)
        wait_port(port, serve, "tollgate serve", os.path.join(scratch, "serve.stderr"))

        basic = "Basic " + base64.b64encode(f"svc:{ORIGIN_TOKEN}".encode()).decode()
        print(f"soak: {workers} workers, {minutes:g} min per side, faults every 4 s at random",
              flush=True)
        direct = Run("direct", f"http://127.0.0.1:{origin_port}", basic, seconds, workers,
                     fault_file, scratch, None).run()
        through = Run("serve", f"http://127.0.0.1:{port}", f"token {API_KEY}", seconds,
                      workers, fault_file, scratch, serve.pid).run()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics").read().decode()
        report(direct, through, metrics)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def report(direct, through, metrics):
    print(f"\n| | straight to the origin | through tollgate serve | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| operations | {direct.ops} | {through.ops} | {through.ops / max(direct.ops, 1):.2f} |")
    print(f"| faults injected | {direct.faults_injected} | {through.faults_injected} | |")
    for op in ("api", "clone", "push"):
        for p in (50, 99):
            a, b = percentile(direct.latencies[op], p), percentile(through.latencies[op], p)
            print(f"| {op} p{p} ms | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    for kind in sorted(set(direct.errors) | set(through.errors)):
        print(f"| errors, {kind} | {direct.errors.get(kind, 0)} | {through.errors.get(kind, 0)} | |")
    print("\nserve's resident memory (MiB) and open descriptors, every 10 s:")
    print("  " + ", ".join(f"{t}s: {rss} MiB/{fds} fds" for t, rss, fds in through.samples))
    counters = [line for line in metrics.splitlines()
                if line.startswith(("tollgate_exchange_failures_total", "tollgate_shed_total",
                                    "tollgate_connections_open", "tollgate_requests_in_flight"))]
    print("serve's failure, shed and open counters at the end:")
    for line in counters:
        print("  " + line)


if __name__ == "__main__":
    main()
