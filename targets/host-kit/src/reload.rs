//! Vetting a policy before it replaces the one deciding: it must compile, and its own
//! `[[test]]` cases must pass with the keys its issuers have, exactly as `tollgate test`
//! would run them. The host swaps in what passes and keeps serving the old policy
//! otherwise. [`ReloadState`] holds what every host's reloads share: which text was last
//! read and which revision decides, so that an unchanged file or an unchanged policy is
//! not swapped in again.

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

/// What one host's reloads of its policy saw last. A reload reads the policy text, asks
/// [`ReloadState::is_new_text`] (the periodic watch skips a text it already read, even one
/// that was refused, until it is edited), then [`ReloadState::vet`]; the host makes its
/// decider from what passed, swaps it in, and calls [`ReloadState::went_live`]. Hold it
/// under a lock for a whole reload, so that two never interleave.
#[derive(Debug)]
pub struct ReloadState {
    /// The text last read, whether or not it went live.
    text: String,
    /// The revision deciding.
    revision: String,
}

impl ReloadState {
    /// The state of a host deciding with `text`, of revision `revision`.
    pub fn new(text: String, revision: String) -> Self {
        ReloadState { text, revision }
    }

    /// The revision deciding.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Whether `text` differs from the text last read.
    pub fn is_new_text(&self, text: &str) -> bool {
        text != self.text
    }

    /// Vets `text` (as [`vet`] does, `file` labelling its errors) against the `live` key
    /// ring at `now`; `Ok(None)` when it is the policy already deciding. `Err` says why the
    /// deciding policy stays.
    pub async fn vet<F, Fut>(
        &mut self,
        text: &str,
        file: &str,
        live: &KeyRing,
        timings: JwksTimings,
        now: UnixTime,
        fetch: F,
    ) -> Result<Option<Vetted>, String>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Fetched>,
    {
        self.text.clear();
        self.text.push_str(text);
        let vetted = vet(text, file, live, timings, now, fetch)
            .await
            .map_err(|rejected| rejected.to_string())?;
        if vetted.policy.engine.revision() == self.revision {
            return Ok(None);
        }
        Ok(Some(vetted))
    }

    /// Records that `revision` now decides.
    pub fn went_live(&mut self, revision: &str) {
        self.revision.clear();
        self.revision.push_str(revision);
    }
}
