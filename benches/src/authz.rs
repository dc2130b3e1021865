//! The authorization step three ways over one scope policy: Tollgate's grants
//! (benches/peers/scope.toml), the same grants in Rego run by regorus (scope.rego) and in
//! Cedar run by cedar-policy (scope.cedar). Each starts from the same plain facts, an
//! already verified caller and the repository and level a request needs, and builds its
//! own input from them, as a gateway would per request. The test below checks that all
//! three give the same answer on every [`queries`] entry before any number is taken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression,
};
use policy_core::{Access, Algorithm, Engine, Identity, RepoName, Via};

/// Who is asking, after their credential was verified.
#[derive(Clone, Copy, Debug)]
pub enum Caller {
    Anonymous,
    User {
        name: &'static str,
        groups: &'static [&'static str],
    },
    /// An API key and the Gogs user it acts as.
    Key {
        name: &'static str,
        user: &'static str,
    },
}

/// One authorization question.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub caller: Caller,
    /// `owner/name`, lowercase.
    pub repo: &'static str,
    pub access: Access,
}

const CALLERS: [Caller; 7] = [
    Caller::User {
        name: "alice",
        groups: &["developers"],
    },
    Caller::User {
        name: "bob",
        groups: &["developers", "ops"],
    },
    Caller::User {
        name: "carol",
        groups: &["contractors"],
    },
    Caller::User {
        name: "dave",
        groups: &[],
    },
    Caller::Key {
        name: "ci-bot",
        user: "ci-bot",
    },
    Caller::Key {
        name: "release",
        user: "release-bot",
    },
    Caller::Anonymous,
];

const REPOS: [&str; 8] = [
    "acme/app",
    "acme/docs",
    "acme/web",
    "acme/infra-prod",
    "acme/secrets",
    "public/lib",
    "public/secrets",
    "other/tool",
];

/// Every caller, repository and level: 168 questions.
pub fn queries() -> Vec<Query> {
    let mut all = Vec::new();
    for caller in CALLERS {
        for repo in REPOS {
            for access in [Access::Read, Access::Write, Access::Admin] {
                all.push(Query {
                    caller,
                    repo,
                    access,
                });
            }
        }
    }
    all
}

fn peer_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Tollgate: [`Engine::access`] over the compiled grants.
#[derive(Debug)]
pub struct TollgateScope {
    engine: Engine,
}

impl TollgateScope {
    pub fn load() -> Self {
        let engine = Engine::from_toml(&peer_file("scope.toml"), "benches/peers/scope.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        TollgateScope { engine }
    }

    pub fn allows(&self, query: &Query) -> bool {
        let identity = match query.caller {
            Caller::Anonymous => None,
            Caller::User { name, groups } => Some(Identity {
                user: name.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                via: Via::Jwt {
                    issuer: "idp".to_owned(),
                    alg: Algorithm::ES256,
                    kid: None,
                    binding: None,
                    claims: Default::default(),
                },
            }),
            Caller::Key { name, user } => Some(Identity {
                user: user.to_owned(),
                groups: Vec::new(),
                via: Via::ApiKey {
                    key: name.to_owned(),
                },
            }),
        };
        let Some(repo) = RepoName::parse(query.repo) else {
            return false;
        };
        self.engine
            .access(identity.as_ref(), &repo)
            .is_some_and(|granted| granted >= query.access)
    }
}

/// regorus: `data.tollgate.allow` with the query as `input`.
#[derive(Debug)]
pub struct RegoScope {
    engine: regorus::Engine,
}

impl RegoScope {
    pub fn load() -> Self {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("scope.rego".to_owned(), peer_file("scope.rego"))
            .unwrap_or_else(|e| panic!("scope.rego: {e}"));
        RegoScope { engine }
    }

    pub fn allows(&mut self, query: &Query) -> bool {
        use regorus::Value;
        let text = |s: &str| Value::from(s);
        let mut input = BTreeMap::new();
        match query.caller {
            Caller::Anonymous => {}
            Caller::User { name, groups } => {
                let principal = BTreeMap::from([
                    (text("user"), text(name)),
                    (
                        text("groups"),
                        Value::from(groups.iter().map(|g| text(g)).collect::<Vec<_>>()),
                    ),
                ]);
                input.insert(text("principal"), Value::from(principal));
            }
            Caller::Key { name, user } => {
                let principal = BTreeMap::from([
                    (text("user"), text(user)),
                    (text("groups"), Value::from(Vec::<Value>::new())),
                    (text("key"), text(name)),
                ]);
                input.insert(text("principal"), Value::from(principal));
            }
        }
        input.insert(text("repo"), text(query.repo));
        input.insert(text("access"), text(query.access.as_str()));
        self.engine.set_input(Value::from(input));
        match self.engine.eval_rule("data.tollgate.allow".to_owned()) {
            Ok(value) => value == Value::from(true),
            Err(e) => panic!("regorus: {e}"),
        }
    }
}

/// cedar-policy: `is_authorized` with the caller and repository as entities.
#[derive(Debug)]
pub struct CedarScope {
    authorizer: Authorizer,
    policies: PolicySet,
    actions: [EntityUid; 3],
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_str(&format!("{kind}::{id:?}")).unwrap_or_else(|e| panic!("{e}"))
}

impl CedarScope {
    pub fn load() -> Self {
        let policies =
            PolicySet::from_str(&peer_file("scope.cedar")).unwrap_or_else(|e| panic!("{e}"));
        CedarScope {
            authorizer: Authorizer::new(),
            policies,
            actions: [
                uid("Action", "read"),
                uid("Action", "write"),
                uid("Action", "admin"),
            ],
        }
    }

    pub fn allows(&self, query: &Query) -> bool {
        let principal = match query.caller {
            Caller::Anonymous => Entity::with_uid(uid("Anonymous", "")),
            Caller::User { name, groups } => Entity::new_no_attrs(
                uid("User", name),
                groups.iter().map(|g| uid("Group", g)).collect(),
            ),
            Caller::Key { name, .. } => Entity::with_uid(uid("ApiKey", name)),
        };
        let (owner, name) = query.repo.split_once('/').unwrap_or((query.repo, ""));
        let resource = Entity::new(
            uid("Repo", query.repo),
            HashMap::from([
                (
                    "owner".to_owned(),
                    RestrictedExpression::new_string(owner.to_owned()),
                ),
                (
                    "name".to_owned(),
                    RestrictedExpression::new_string(name.to_owned()),
                ),
            ]),
            HashSet::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let action = match query.access {
            Access::Read => &self.actions[0],
            Access::Write => &self.actions[1],
            Access::Admin => &self.actions[2],
            Access::Owner => panic!(
                "the peer policies model read, write and admin; `queries` never asks for owner"
            ),
        };
        let request = Request::new(
            principal.uid(),
            action.clone(),
            resource.uid(),
            Context::empty(),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let entities =
            Entities::from_entities([principal, resource], None).unwrap_or_else(|e| panic!("{e}"));
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        response.decision() == cedar_policy::Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tollgate_rego_and_cedar_agree_on_every_query() {
        let tollgate = TollgateScope::load();
        let mut rego = RegoScope::load();
        let cedar = CedarScope::load();
        let mut allowed = 0;
        for query in queries() {
            let ours = tollgate.allows(&query);
            assert_eq!(rego.allows(&query), ours, "regorus differs on {query:?}");
            assert_eq!(cedar.allows(&query), ours, "cedar differs on {query:?}");
            allowed += usize::from(ours);
        }
        // Counted by hand from the grants (alice 9, bob 8, carol 3, dave 1, ci-bot 5,
        // release 5, anonymous 2), so the agreement above is not agreement on nothing.
        assert_eq!(allowed, 33, "allowed answers out of {}", queries().len());
    }

    #[test]
    fn the_matrix_holds_the_answers_the_grants_promise() {
        let tollgate = TollgateScope::load();
        let ask = |caller, repo, access| {
            tollgate.allows(&Query {
                caller,
                repo,
                access,
            })
        };
        let [alice, _, carol, dave, ci, release, anonymous] = CALLERS;
        assert!(ask(alice, "acme/app", Access::Admin));
        assert!(!ask(alice, "acme/web", Access::Admin));
        assert!(ask(alice, "acme/infra-prod", Access::Read));
        assert!(!ask(alice, "acme/infra-prod", Access::Write));
        assert!(!ask(alice, "acme/secrets", Access::Read));
        assert!(ask(carol, "acme/docs", Access::Read));
        assert!(!ask(carol, "acme/web", Access::Read));
        assert!(ask(dave, "public/lib", Access::Read));
        assert!(!ask(dave, "public/secrets", Access::Read));
        assert!(ask(ci, "acme/web", Access::Read));
        assert!(!ask(ci, "acme/web", Access::Write));
        assert!(ask(release, "acme/web", Access::Write));
        assert!(ask(anonymous, "acme/docs", Access::Read));
        assert!(!ask(anonymous, "acme/app", Access::Read));
    }
}
