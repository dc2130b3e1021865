//! The CLI's side of the core's traits: keys, secrets and rate state from local files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use std::cell::RefCell;

use policy_core::{KeySet, KeyStore, RateState, RateStore, RateStoreError, SecretStore, UnixTime};

pub fn system_now() -> UnixTime {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    UnixTime::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Key sets from `--jwks [NAME=]FILE` arguments.
#[derive(Default)]
pub struct JwksFiles {
    by_issuer: HashMap<String, KeySet>,
    for_all: Option<KeySet>,
}

impl JwksFiles {
    /// Reads `[NAME=]FILE` arguments: `(issuer name or None for all, JWKS text)`.
    pub fn read(args: &[String]) -> Result<Vec<(Option<String>, String)>, String> {
        args.iter()
            .map(|arg| {
                let (name, path) = match arg.split_once('=') {
                    Some((name, path)) => (Some(name.to_owned()), path),
                    None => (None, arg.as_str()),
                };
                let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
                Ok((name, text))
            })
            .collect()
    }

    pub fn load(args: &[String]) -> Result<Self, String> {
        let mut files = JwksFiles::default();
        for (arg, (name, text)) in args.iter().zip(Self::read(args)?) {
            let set = KeySet::from_fetched_json(&text).map_err(|e| format!("{arg}: {e}"))?;
            match name {
                Some(name) => {
                    files.by_issuer.insert(name, set);
                }
                None => files.for_all = Some(set),
            }
        }
        Ok(files)
    }
}

impl KeyStore for JwksFiles {
    fn key_set(&self, issuer_name: &str) -> Option<&KeySet> {
        self.by_issuer.get(issuer_name).or(self.for_all.as_ref())
    }
}

/// Origin secrets from a JSON file, or placeholders when none is given.
pub enum Secrets {
    File(HashMap<String, String>),
    Placeholder,
}

impl Secrets {
    /// The secrets file's contents, when one is given.
    pub fn map(&self) -> Option<BTreeMap<String, String>> {
        match self {
            Secrets::File(map) => Some(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            Secrets::Placeholder => None,
        }
    }

    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Secrets::Placeholder);
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let map = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: expected a JSON object of secret name to value: {e}",
                path.display()
            )
        })?;
        Ok(Secrets::File(map))
    }
}

impl SecretStore for Secrets {
    fn secret(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Secrets::File(map) => map
                .get(name)
                .map(|v| std::borrow::Cow::Borrowed(v.as_str())),
            Secrets::Placeholder => policy_core::PlaceholderSecrets.secret(name),
        }
    }
}

/// Rate-limit state kept in memory, optionally loaded from and saved to a JSON file.
/// With a file, an exclusive lock on `FILE.lock` is held from load until the value is
/// dropped, so concurrent `tollgate eval --state` runs take turns and each one sees the
/// update of the one before it.
#[derive(Default)]
pub struct RateFile {
    states: RefCell<BTreeMap<String, RateState>>,
    _lock: Option<std::fs::File>,
}

impl RateFile {
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(RateFile::default());
        };
        let lock_path = {
            let mut p = path.as_os_str().to_owned();
            p.push(".lock");
            std::path::PathBuf::from(p)
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("{}: cannot lock: {e}", lock_path.display()))?;
        let states = if path.exists() {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{}: expected a JSON object of key to state: {e}",
                    path.display()
                )
            })?
        } else {
            BTreeMap::new()
        };
        Ok(RateFile {
            states: RefCell::new(states),
            _lock: Some(lock),
        })
    }

    /// Writes the state beside the file and renames it over, so a reader never sees half.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text =
            serde_json::to_string_pretty(&*self.states.borrow()).map_err(|e| e.to_string())?;
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = std::path::PathBuf::from(temp);
        std::fs::write(&temp, text + "\n").map_err(|e| format!("{}: {e}", temp.display()))?;
        std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// One process owns the file while it holds the lock, so load-check-store is atomic here.
impl RateStore for RateFile {
    fn measure_and_replace(
        &self,
        key: &str,
        decide: &mut dyn FnMut(Option<RateState>) -> Option<RateState>,
    ) -> Result<(), RateStoreError> {
        let mut states = self.states.borrow_mut();
        if let Some(next) = decide(states.get(key).copied()) {
            states.insert(key.to_owned(), next);
        }
        Ok(())
    }
}
