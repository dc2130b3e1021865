//! Replacing the policy while the handler runs, when it was read from a file
//! (`TOLLGATE_POLICY_FILE`): the file is checked every `TOLLGATE_POLICY_WATCH_SECS`
//! seconds (default 2, `0` for never) and read again on SIGHUP. As in `tollgate serve`, the
//! host kit vets the new policy (it compiles, its own `[[test]]` cases pass) and the gate
//! is swapped in one step; a refused policy is logged and the old one keeps deciding. A
//! policy whose `origin.user_header` the APIM policy XML cannot handle is refused too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use policy_core::JwksTimings;
use tollgate_host_kit::{complete_now, Gate, ReloadState};
use tollgate_wasmtime::{CompiledModule, ModulePool};

use crate::{answer, now, Handler};

/// The policy file and what a new pool for it needs.
pub struct PolicyFile {
    pub path: PathBuf,
    pub module: CompiledModule,
    pub secrets: BTreeMap<String, String>,
    /// Held for the whole of a reload, so two never interleave.
    pub seen: Mutex<ReloadState>,
}

impl Handler {
    /// Reads the policy file again and puts it in place if it passes; `only_if_changed`
    /// (the watch) skips a file whose text was already read.
    pub fn reload(&self, trigger: &str, only_if_changed: bool) {
        let Some(file) = &self.policy_file else {
            return;
        };
        let mut seen = file.seen.lock().unwrap_or_else(|p| p.into_inner());
        match self.try_reload(file, &mut seen, only_if_changed) {
            Ok(Some(revision)) => {
                eprintln!(
                    "tollgate-azure-handler: policy reloaded ({trigger}): {revision} now deciding"
                );
            }
            Ok(None) => {}
            Err(e) => eprintln!(
                "tollgate-azure-handler: policy reload ({trigger}) refused; {} keeps deciding: {e}",
                seen.revision()
            ),
        }
    }

    /// `Some(revision)` when a new policy was put in place.
    fn try_reload(
        &self,
        file: &PolicyFile,
        seen: &mut ReloadState,
        only_if_changed: bool,
    ) -> Result<Option<String>, String> {
        let name = file.path.display().to_string();
        let text = std::fs::read_to_string(&file.path).map_err(|e| format!("{name}: {e}"))?;
        if only_if_changed && !seen.is_new_text(&text) {
            return Ok(None);
        }
        let live = self.gate.load_full();
        let fetch = |url: String| std::future::ready(self.fetch_jwks(&url));
        // Every fetch is blocking, so the future is complete when polled once.
        let vetted = complete_now(seen.vet(
            &text,
            &name,
            &live.keys,
            JwksTimings::default(),
            now(),
            fetch,
        ))
        .ok_or("vetting did not complete")??;
        let Some(vetted) = vetted else {
            return Ok(None);
        };
        answer::check_user_header(vetted.policy.engine.user_header())?;
        let revision = vetted.policy.engine.revision().to_owned();
        let pool = ModulePool::new(file.module.clone(), text, name, Some(file.secrets.clone()))
            .map_err(|e| e.to_string())?;
        self.gate.store(Arc::new(Gate::new(pool, vetted.keys)));
        self.webhooks.engine.store(Arc::new(vetted.policy.engine));
        seen.went_live(&revision);
        Ok(Some(revision))
    }
}

/// Checks the policy file every `every` for as long as the handler runs.
pub fn watch(handler: Arc<Handler>, every: Duration) {
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        handler.reload("file change", true);
    });
}

/// Reloads the policy file on every SIGHUP for as long as the handler runs.
pub fn on_hangup(handler: Arc<Handler>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    let mut hangups = runtime
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .map_err(|e| format!("SIGHUP: {e}"))?;
    std::thread::spawn(move || {
        while runtime.block_on(hangups.recv()).is_some() {
            handler.reload("SIGHUP", false);
        }
    });
    Ok(())
}
