//! Replacing the policy while serving. A reload reads the policy file again, has the host
//! kit vet it (it compiles, its own `[[test]]` cases pass with the keys its issuers have),
//! and swaps in a new [`Gate`] in one step: requests already deciding finish with the gate
//! they loaded, the next ones get the new one. Rate state lives outside the gate, and the
//! keys of issuers whose URL is unchanged are carried over, so neither restarts. A policy
//! that fails keeps the old one deciding; the error is logged and counted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use policy_core::{Engine, JwksTimings, SecretStore};
use tollgate_host_kit::{Decider, Gate, NativeDecider, ReloadState, SharedTokenCache};
use tollgate_wasmtime::{CompiledModule, ModulePool};

use crate::proxy::{self, Shared};

/// A decider as serve holds it: native or the policy module, behind one interface.
pub type BoxedDecider = Box<dyn Decider + Send + Sync>;

/// What serve needs to make a decider for a policy: at start, and for every reload.
pub struct DeciderMaker {
    pub secrets: HashMap<String, String>,
    /// `(entries, max age in seconds)` of each native decider's token cache; `None`: off.
    pub token_cache: Option<(usize, u64)>,
    /// `Some`: decide in this module under wasmtime.
    pub module: Option<CompiledModule>,
}

impl DeciderMaker {
    /// A decider for `engine`, compiled from `source` (`file` labels the module's errors).
    pub fn make(&self, engine: Engine, source: &str, file: &str) -> Result<BoxedDecider, String> {
        match &self.module {
            None => {
                // A cache of tokens verified under one policy serves that policy only.
                let tokens = self
                    .token_cache
                    .map(|(entries, max_age)| SharedTokenCache::new(entries, max_age));
                let secrets = SecretMap(self.secrets.clone());
                // Native: aws-lc verifies signatures (same answers as RustCrypto, faster).
                let engine = engine.with_crypto(&tollgate_host_kit::AWS_LC);
                Ok(Box::new(NativeDecider::new(engine, secrets, tokens)))
            }
            Some(module) => {
                let secrets: BTreeMap<String, String> = self.secrets.clone().into_iter().collect();
                let pool = ModulePool::new(
                    module.clone(),
                    source.to_owned(),
                    file.to_owned(),
                    Some(secrets),
                )
                .map_err(|e| e.to_string())?;
                Ok(Box::new(pool))
            }
        }
    }
}

/// The origin secrets, as the engine reads them.
pub struct SecretMap(pub HashMap<String, String>);

impl SecretStore for SecretMap {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.0
            .get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    }
}

/// Reloads of one policy file.
pub struct Reloader {
    path: PathBuf,
    maker: DeciderMaker,
    timings: JwksTimings,
    /// Held for the whole of a reload, so two never interleave.
    state: tokio::sync::Mutex<ReloadState>,
}

/// What started a reload, for the log.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    Signal,
    Watch,
    Admin,
    /// A new policy at `--policy-url`.
    Pull,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Watch => "file change",
            Trigger::Admin => "POST /reload",
            Trigger::Pull => "--policy-url",
        }
    }
}

/// Where a reload's policy text comes from.
enum Offered {
    /// The policy file; `only_if_changed`: skip a text already read.
    File { only_if_changed: bool },
    /// A text fetched elsewhere, labelled `origin` in errors; once in place it is written
    /// over the policy file, which keeps the last good policy for the next start.
    Text { text: String, origin: String },
}

/// A reload that did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The new policy decides from now on.
    Replaced { revision: String },
    /// The file holds the policy already deciding (or, for the watch, has not changed).
    Unchanged { revision: String },
}

impl Reloader {
    /// Reloads of `path`, whose text `text` (of revision `revision`) is deciding.
    pub fn new(
        path: PathBuf,
        text: String,
        revision: String,
        maker: DeciderMaker,
        timings: JwksTimings,
    ) -> Self {
        Reloader {
            path,
            maker,
            timings,
            state: tokio::sync::Mutex::new(ReloadState::new(text, revision)),
        }
    }
}

impl Shared {
    /// Reads the policy file again and puts it in place if it passes. The watch passes
    /// `only_if_changed`, so an unchanged file costs one read. `Err` says why the policy
    /// deciding stays; it is also logged and counted.
    pub async fn reload(
        &self,
        trigger: Trigger,
        only_if_changed: bool,
    ) -> Result<Reloaded, String> {
        self.replace(trigger, Offered::File { only_if_changed })
            .await
    }

    /// Puts `text` (fetched from `origin`) in place if it passes, and keeps it in the
    /// policy file. Errors are logged and counted as for [`Shared::reload`].
    pub async fn offer(&self, text: String, origin: String) -> Result<Reloaded, String> {
        self.replace(Trigger::Pull, Offered::Text { text, origin })
            .await
    }

    async fn replace(&self, trigger: Trigger, offered: Offered) -> Result<Reloaded, String> {
        let Some(reloader) = &self.reloader else {
            return Err(
                "the policy was not read from a file, so there is nothing to reload".into(),
            );
        };
        let mut seen = reloader.state.lock().await;
        let result = self.try_reload(reloader, &mut seen, offered).await;
        match &result {
            Ok(Reloaded::Replaced { revision }) => {
                self.metrics.policy_replaced(revision);
                eprintln!(
                    "tollgate: policy reloaded ({}): {} now deciding",
                    trigger.as_str(),
                    revision
                );
            }
            Ok(Reloaded::Unchanged { .. }) => {}
            Err(e) => {
                self.metrics.reload_refused();
                eprintln!(
                    "tollgate: policy reload ({}) refused; {} keeps deciding: {e}",
                    trigger.as_str(),
                    seen.revision()
                );
            }
        }
        result
    }

    async fn try_reload(
        &self,
        reloader: &Reloader,
        seen: &mut ReloadState,
        offered: Offered,
    ) -> Result<Reloaded, String> {
        let unchanged = |seen: &ReloadState| Reloaded::Unchanged {
            revision: seen.revision().to_owned(),
        };
        let (text, file, fetched) = match offered {
            Offered::File { only_if_changed } => {
                let file = reloader.path.display().to_string();
                // A policy file is small: reading it on the runtime thread is a moment's work.
                let text =
                    std::fs::read_to_string(&reloader.path).map_err(|e| format!("{file}: {e}"))?;
                if only_if_changed && !seen.is_new_text(&text) {
                    return Ok(unchanged(seen));
                }
                (text, file, false)
            }
            Offered::Text { text, origin } => (text, origin, true),
        };
        let live = self.gate.load_full();
        let vetted = seen
            .vet(
                &text,
                &file,
                &live.keys,
                reloader.timings,
                proxy::now(),
                |url| self.fetch_jwks(url),
            )
            .await?;
        let Some(vetted) = vetted else {
            return Ok(unchanged(seen));
        };
        self.report_fetches(&vetted.fetches);
        let revision = vetted.policy.engine.revision().to_owned();
        let engine = vetted.policy.engine;
        let decider = reloader.maker.make(engine.clone(), &text, &file)?;
        let keys = vetted.keys.refreshed_in_background();
        self.gate.store(Arc::new(Gate::new(decider, keys)));
        self.webhooks.engine.store(Arc::new(engine));
        seen.went_live(&revision);
        if fetched {
            // The watch compares the file with the text last read, so this write is no change.
            if let Err(e) = write_over(&reloader.path, &text) {
                eprintln!(
                    "tollgate: cannot keep the fetched policy in {}: {e}",
                    reloader.path.display()
                );
            }
        }
        Ok(Reloaded::Replaced { revision })
    }
}

/// Writes `text` beside `path` and renames it over, so no reader sees half a file.
pub fn write_over(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}
