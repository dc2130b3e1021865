//! `tollgate`: check, evaluate and test Tollgate policies on the command line.
//!
//! This is a thin host: it reads files and stdin, reads the clock, and hands everything to
//! `policy-core`, which makes every decision.

mod host;
mod report;
mod run_tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use policy_core::{api_key_hash_hex, policy::Policy, OwnedRequest, UnixTime};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Edge policy for Gogs: check, evaluate and test policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy file; exit 1 with a positioned error if it is not valid.
    Check { policy: PathBuf },
    /// Decide one request, read as JSON from stdin, and print the decision as JSON.
    Eval {
        #[arg(long)]
        policy: PathBuf,
        /// Unix time (seconds) to decide at; defaults to the system clock.
        #[arg(long)]
        now: Option<u64>,
        /// JWKS for issuers configured with `jwks_url`: `FILE` for all of them, or `NAME=FILE`.
        #[arg(long, value_name = "[NAME=]FILE")]
        jwks: Vec<String>,
        /// JSON object of origin secrets (name -> Gogs token). Without it, placeholders are
        /// used: the output names which secret would be sent, never a value.
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// JSON file of rate-limit state, read before and written after the decision.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Include the rules considered and their outcomes.
        #[arg(long)]
        explain: bool,
        /// Also print the audit record, as JSON, on stderr.
        #[arg(long)]
        audit: bool,
    },
    /// Run the `[[test]]` cases in a policy file; prints `N passed, N failed`.
    Test {
        policy: PathBuf,
        /// JWKS for issuers configured with `jwks_url` (as for `eval`).
        #[arg(long, value_name = "[NAME=]FILE")]
        jwks: Vec<String>,
        /// Show the explanation of failing cases.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print the SHA-256 to put in an `[[api_key]]` for a key read from stdin.
    HashKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { policy } => check(&policy),
        Command::Eval {
            policy,
            now,
            jwks,
            secrets,
            state,
            explain,
            audit,
        } => eval(
            &policy,
            now,
            &jwks,
            secrets.as_deref(),
            state.as_deref(),
            explain,
            audit,
        ),
        Command::Test {
            policy,
            jwks,
            verbose,
        } => load_policy(&policy).and_then(|(p, _)| {
            let keys = host::JwksFiles::load(&jwks)?;
            Ok(run_tests::run(&p, &policy, &keys, verbose))
        }),
        Command::HashKey => hash_key(),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and compiles a policy; the error text carries file:line:column and an excerpt.
fn load_policy(path: &Path) -> Result<(Policy, String), String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = Policy::parse(&source, &path.display().to_string())
        .map_err(|e| report::policy_error(&e, &source))?;
    Ok((policy, source))
}

fn check(path: &Path) -> Result<ExitCode, String> {
    let (policy, _) = load_policy(path)?;
    println!(
        "{}: ok ({} test case{})",
        path.display(),
        policy.tests.len(),
        if policy.tests.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(
    path: &Path,
    now: Option<u64>,
    jwks: &[String],
    secrets: Option<&Path>,
    state_path: Option<&Path>,
    explain: bool,
    audit: bool,
) -> Result<ExitCode, String> {
    let (policy, _) = load_policy(path)?;
    let keys = host::JwksFiles::load(jwks)?;
    let secrets = host::Secrets::load(secrets)?;
    let mut state = host::RateFile::load(state_path)?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("stdin: {e}"))?;
    let request: OwnedRequest = serde_json::from_str(&input).map_err(|e| format!("stdin: {e}"))?;
    let now = match now {
        Some(secs) => UnixTime::from_secs(secs),
        None => host::system_now(),
    };
    let pairs = request.header_pairs();
    let facts = request.facts(&pairs);
    let mut decision =
        policy
            .engine
            .decide_with_state(&facts, now, &keys, &secrets, &mut |key, update| {
                state.access(key, update)
            });
    if let Some(path) = state_path {
        state.save(path)?;
    }
    if audit {
        eprintln!("{}", decision.audit(&facts, now).to_json());
    }
    if !explain {
        decision.explain.clear();
    }
    println!("{}", decision.to_json());
    Ok(ExitCode::SUCCESS)
}

fn hash_key() -> Result<ExitCode, String> {
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .map_err(|e| format!("stdin: {e}"))?;
    let key = key.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        return Err("no key on stdin".into());
    }
    println!("{}", api_key_hash_hex(key));
    Ok(ExitCode::SUCCESS)
}
