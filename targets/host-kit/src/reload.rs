//! Vetting a policy before it replaces the one deciding: it must compile, and its own
//! `[[test]]` cases must pass with the keys its issuers have, exactly as `tollgate test`
//! would run them. The host swaps in what passes and keeps serving the old policy
//! otherwise.

use std::fmt;
use std::future::Future;

use policy_core::policy::Policy;
use policy_core::{JwksTimings, PlaceholderSecrets, PolicyError, UnixTime};

use crate::keys::{FetchReport, Fetched, KeyRing};

/// A policy that compiled and passed its own test cases, with the key ring for its
/// issuers (carried over from the live ring where an issuer's URL is unchanged).
#[derive(Debug)]
pub struct Vetted {
    pub policy: Policy,
    pub keys: KeyRing,
    /// Key fetches made for issuers the live ring did not have.
    pub fetches: Vec<FetchReport>,
}

/// Why a policy was not put in place.
#[derive(Debug)]
pub enum Rejected {
    /// It does not compile.
    Invalid(PolicyError),
    /// Some of its own test cases fail: `failures` names each and how.
    Failing { failures: Vec<String>, total: usize },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Invalid(e) => write!(f, "{e}"),
            Rejected::Failing { failures, total } => {
                write!(f, "{} of {total} test cases fail", failures.len())?;
                for failure in failures {
                    write!(f, "\n  {failure}")?;
                }
                Ok(())
            }
        }
    }
}

/// Compiles `source` (`file` labels error positions), brings its issuers' keys up to
/// date at `now` (taking over `live`'s, fetching the rest with `fetch`), and runs its
/// test cases.
pub async fn vet<F, Fut>(
    source: &str,
    file: &str,
    live: &KeyRing,
    timings: JwksTimings,
    now: UnixTime,
    fetch: F,
) -> Result<Vetted, Rejected>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Fetched>,
{
    let policy = Policy::parse(source, file).map_err(Rejected::Invalid)?;
    let keys = KeyRing::for_engine(&policy.engine, timings);
    keys.carry_over(live);
    let fetches = keys.refresh_due(now, fetch).await;
    let results = policy.run_tests(&keys.keys(now), &PlaceholderSecrets);
    let failures: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "{} ({file}:{}): {}",
                r.case.name,
                r.case.position.line,
                r.mismatches.join("; ")
            )
        })
        .collect();
    if !failures.is_empty() {
        return Err(Rejected::Failing {
            failures,
            total: results.len(),
        });
    }
    Ok(Vetted {
        policy,
        keys,
        fetches,
    })
}
