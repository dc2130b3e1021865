//! What a route's handler chain means to the edge, from policy-core/gogs/semantics.toml
//! (whose header documents every field).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::inventory::{Inventory, Route, Router, METHODS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Semantics {
    middleware: BTreeMap<String, Meaning>,
    handlers: BTreeMap<String, Meaning>,
    site: SiteHandlers,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteHandlers {
    handlers: Vec<String>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meaning {
    target: Option<String>,
    access: Option<String>,
    class: Option<String>,
    refine: Option<String>,
    defined_as: Option<String>,
    #[allow(dead_code)] // documentation for reviewers
    why: Option<String>,
}

/// A route's meaning, as the runtime table holds it (field values are Rust paths).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Spec {
    pub pattern: String,
    pub target: &'static str,
    pub dispatch: bool,
    pub access: &'static str,
    pub class: &'static str,
    pub refine: &'static str,
    pub owner_param: String,
    pub repo_param: String,
}

const TARGETS: [(&str, &str); 8] = [
    ("repo", "Repo"),
    ("site", "Site"),
    ("cross-repo", "CrossRepo"),
    ("by-id", "ById"),
    ("operator", "Operator"),
    ("shell", "Shell"),
    ("not-found", "NotFound"),
    ("dispatch", "Dispatch"),
];
const ACCESS: [(&str, &str); 4] = [
    ("read", "Read"),
    ("write", "Write"),
    ("admin", "Admin"),
    ("owner", "Owner"),
];
const CLASSES: [(&str, &str); 3] = [("api", "Api"), ("git", "Git"), ("lfs", "Lfs")];
const REFINES: [(&str, &str); 3] = [
    ("git-service", "GitService"),
    ("lfs-batch", "LfsBatch"),
    ("repo-action", "RepoAction"),
];

fn lookup(table: &[(&str, &'static str)], value: &str, what: &str) -> Result<&'static str, String> {
    table
        .iter()
        .find(|(k, _)| *k == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("semantics.toml: unknown {what} `{value}`"))
}

impl Semantics {
    /// Every name the file lists must be used by some inventory: stale entries would hide
    /// that a handler's meaning is no longer checked.
    pub fn check_all_used(&self, inventories: &[Inventory]) -> Result<(), String> {
        let mut used = BTreeSet::new();
        for route in inventories.iter().flat_map(|i| &i.routes) {
            used.extend(route.handlers.iter().cloned());
        }
        let listed = self
            .middleware
            .keys()
            .chain(self.handlers.keys())
            .chain(&self.site.handlers);
        for name in listed {
            if !used.contains(name) {
                return Err(format!(
                    "semantics.toml lists `{name}`, which no route inventory uses"
                ));
            }
        }
        Ok(())
    }

    pub fn spec(&self, inventory: &Inventory, route: &Route) -> Result<Spec, String> {
        let at = format!(
            "{} route {} {} ({})",
            inventory.name, METHODS[route.method], route.pattern, route.source
        );
        let (last, middleware) = route
            .handlers
            .split_last()
            .ok_or_else(|| format!("{at}: no handler"))?;
        let mut meanings = Vec::new();
        for name in middleware {
            let meaning = self.middleware.get(name).ok_or_else(|| {
                format!("{at}: middleware `{name}` is not in policy-core/gogs/semantics.toml [middleware]; decide what it means to the edge and add it")
            })?;
            if let Some(defined) = inventory.defs.get(name) {
                if meaning.defined_as.as_deref() != Some(defined.as_str()) {
                    return Err(format!("{at}: `{name}` is now defined as `{defined}`; semantics.toml says {:?}: review its meaning", meaning.defined_as));
                }
            }
            meanings.push(meaning.clone());
        }
        let establishes_repo = meanings.iter().any(|m| m.target.as_deref() == Some("repo"));
        if let Some(meaning) = self.handlers.get(last) {
            meanings.push(meaning.clone());
        } else if self.site.handlers.contains(last) {
            // Shared handlers (webhook pages serve repositories and organisations) are
            // site pages only where no repository is loaded.
            if !establishes_repo {
                meanings.push(Meaning {
                    target: Some("site".into()),
                    ..Meaning::default()
                });
            }
        } else if !establishes_repo {
            return Err(format!("{at}: handler `{last}` runs outside any repository and is not classified in policy-core/gogs/semantics.toml ([site] handlers, or [handlers] with a target)"));
        }
        self.combine(&at, route, &meanings)
    }

    fn combine(&self, at: &str, route: &Route, meanings: &[Meaning]) -> Result<Spec, String> {
        let mut target: Option<&str> = None;
        let mut dispatch = false;
        let mut access: Option<&str> = None;
        let mut class: Option<&str> = None;
        let mut refine: Option<&str> = None;
        for m in meanings {
            match m.target.as_deref() {
                None => {}
                Some("dispatch") => dispatch = true,
                Some(t) if target.is_none_or(|have| have == t) => target = Some(t),
                Some(t) => {
                    return Err(format!(
                        "{at}: handlers give two targets, `{}` and `{t}`",
                        target.unwrap_or_default()
                    ))
                }
            }
            if let Some(a) = m.access.as_deref() {
                let rank = |x: &str| ACCESS.iter().position(|(k, _)| *k == x);
                lookup(&ACCESS, a, "access")?;
                if access.is_none_or(|have| rank(a) > rank(have)) {
                    access = Some(a);
                }
            }
            for (slot, value, what) in [
                (&mut class, &m.class, "class"),
                (&mut refine, &m.refine, "refine"),
            ] {
                if let Some(v) = value.as_deref() {
                    if slot.is_some_and(|have| have != v) {
                        return Err(format!("{at}: handlers give two {what}s"));
                    }
                    *slot = Some(v);
                }
            }
        }
        let target_name = match (target, dispatch) {
            (Some(t), _) => t,
            (None, true) => "dispatch",
            (None, false) => return Err(format!("{at}: no handler says what the route is for")),
        };
        if access.is_some() && target_name != "repo" {
            return Err(format!("{at}: an access level without a repository"));
        }
        let (owner_param, repo_param) = if target_name == "repo" {
            let (owner, repo) = match route.router {
                Router::Macaron => (":username", ":reponame"),
                Router::Flamego => ("owner", "repo"),
            };
            let holder = |name: &str| match route.router {
                Router::Macaron => format!("/{name}"),
                Router::Flamego => format!("/{{{name}}}"),
            };
            let path = format!("{}/", route.pattern);
            if !path.contains(&format!("{}/", holder(owner)))
                || !path.contains(&format!("{}/", holder(repo)))
            {
                return Err(format!(
                    "{at}: a repository route without `{owner}` and `{repo}` segments"
                ));
            }
            (owner.to_owned(), repo.to_owned())
        } else {
            (String::new(), String::new())
        };
        Ok(Spec {
            pattern: route.pattern.clone(),
            target: lookup(&TARGETS, target_name, "target")?,
            dispatch,
            access: lookup(&ACCESS, access.unwrap_or("read"), "access")?,
            class: match class {
                Some(c) => lookup(&CLASSES, c, "class")?,
                None => "Web",
            },
            refine: match refine {
                Some(r) => lookup(&REFINES, r, "refine")?,
                None => "None",
            },
            owner_param,
            repo_param,
        })
    }
}
