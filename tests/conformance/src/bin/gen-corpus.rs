//! Regenerates `tests/corpus/*.toml` from `tests/conformance/corpus-src/*.toml`, filling
//! `{{jwks:NAME}}` with public key sets and `{{token:NAME}}` with tokens signed here.
//!
//! Keys come from fixed seeds, and every signature scheme used is deterministic given its
//! RNG (RFC 6979 ECDSA, Ed25519, PKCS#1 v1.5, PSS with a seeded salt RNG), so the output
//! is byte-for-byte reproducible:
//!
//!     cargo run -p tollgate-conformance --bin gen-corpus
//!
//! These keys are public test fixtures. Never trust them anywhere.

use std::collections::BTreeMap;
use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rsa::pkcs1v15;
use rsa::pss;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::Sha256;

const HMAC_SECRET: &[u8] = b"conformance-corpus-hmac-secret-0123456789";
/// The corpus' `[sso]` session key: tests/corpus/secrets.json's `sso-session`, the same
/// stand-in `tollgate test` uses for every secret.
const SSO_SESSION_KEY: &str = policy_core::PLACEHOLDER;
const SSO_OTHER_KEY: &str = "another-key-that-is-at-least-32-bytes-long";
const DEFAULT_NOW: i64 = 1_767_225_600;
const SSO_LIFETIME: i64 = 3600;
const FAR_FUTURE: i64 = 4_102_444_800; // 2100-01-01
const PAST: i64 = 1_700_000_000; // 2023-11-14

struct Keys {
    es: p256::ecdsa::SigningKey,
    ed: ed25519_dalek::SigningKey,
    rsa: rsa::RsaPrivateKey,
    other_es: p256::ecdsa::SigningKey,
}

impl Keys {
    fn new() -> Self {
        let es =
            p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("fixed P-256 scalar");
        let other_es =
            p256::ecdsa::SigningKey::from_bytes(&[9u8; 32].into()).expect("fixed P-256 scalar");
        let ed = ed25519_dalek::SigningKey::from_bytes(&[11u8; 32]);
        let rsa = rsa::RsaPrivateKey::new(&mut ChaCha20Rng::seed_from_u64(2048), 2048)
            .expect("RSA keygen");
        Keys {
            es,
            ed,
            rsa,
            other_es,
        }
    }

    fn jwk(&self, which: &str) -> Value {
        let b64 = |b: &[u8]| Base64UrlUnpadded::encode_string(b);
        match which {
            "es1" => {
                let point = self.es.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256", "kid": "es1", "use": "sig",
                       "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
            }
            "ed1" => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(self.ed.verifying_key().as_bytes())})
            }
            "rs1" => {
                let public = self.rsa.to_public_key();
                json!({"kty": "RSA", "kid": "rs1", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
            }
            "hs1" => json!({"kty": "oct", "kid": "hs1", "alg": "HS256", "k": b64(HMAC_SECRET)}),
            // Published next to signing keys by real IdPs; must be skipped, not fail the set.
            "enc" => json!({"kty": "RSA", "kid": "enc1", "use": "enc", "n": "AQAB", "e": "AQAB"}),
            "p384" => json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}),
            other => panic!("unknown key `{other}`"),
        }
    }

    /// Signs `header.claims` with `alg` using key `key`, returning the signature bytes.
    fn sign(&self, alg: &str, key: &str, input: &[u8]) -> Vec<u8> {
        match (alg, key) {
            ("ES256", "es1") => sig_es(&self.es, input),
            ("ES256", "other") => sig_es(&self.other_es, input),
            ("EdDSA", _) => self.ed.sign(input).to_bytes().to_vec(),
            ("RS256", _) => pkcs1v15::SigningKey::<Sha256>::new(self.rsa.clone())
                .sign(input)
                .to_vec(),
            ("PS256", _) => pss::BlindedSigningKey::<Sha256>::new(self.rsa.clone())
                .sign_with_rng(&mut ChaCha20Rng::seed_from_u64(input.len() as u64), input)
                .to_vec(),
            ("HS256", "hs1") => hmac(HMAC_SECRET, input),
            // Algorithm confusion: HMAC keyed with the RSA public key's JWK modulus bytes.
            ("HS256", "rsa-public") => hmac(&self.rsa.to_public_key().n().to_bytes_be(), input),
            ("none", _) => Vec::new(),
            other => panic!("cannot sign {other:?}"),
        }
    }
}

fn sig_es(key: &p256::ecdsa::SigningKey, input: &[u8]) -> Vec<u8> {
    let sig: p256::ecdsa::Signature = key.sign(input);
    sig.to_bytes().to_vec()
}

fn hmac(key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// One token: the header's alg/kid/extra fields, the signing key, and claim overrides
/// (`null` removes a claim).
struct Spec {
    alg: &'static str,
    kid: Option<&'static str>,
    key: &'static str,
    header_extra: Value,
    claims: Value,
}

fn base_claims(sub: &str, groups: &[&str]) -> Value {
    json!({"iss": "https://idp.conformance.test", "aud": "gogs", "sub": sub, "groups": groups,
           "exp": FAR_FUTURE, "iat": PAST})
}

fn spec(alg: &'static str, kid: &'static str, key: &'static str, claims: Value) -> Spec {
    Spec {
        alg,
        kid: Some(kid),
        key,
        header_extra: json!({}),
        claims,
    }
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("object").clone() {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(&k);
        } else {
            claims[k] = v;
        }
    }
    claims
}

/// CI job and workload tokens shaped as GitLab CI, GitHub Actions and Entra ID issue them.
fn machine_specs(s: &mut BTreeMap<&'static str, Spec>) {
    let gitlab = |project: &str, id: &str, git_ref: &str, protected: &str, source: &str| {
        json!({"iss": "https://gitlab.example.test", "aud": "https://gogs.example.test",
               "sub": format!("project_path:{project}:ref_type:branch:ref:{git_ref}"),
               "project_path": project, "project_id": id,
               "namespace_path": project.split('/').next().expect("namespace"),
               "ref": git_ref, "ref_type": "branch", "ref_protected": protected,
               "pipeline_source": source, "environment": "production", "user_login": "alice",
               "sha": "0123456789abcdef0123456789abcdef01234567",
               "exp": FAR_FUTURE, "iat": PAST})
    };
    s.insert(
        "gitlab-release-protected",
        spec(
            "RS256",
            "rs1",
            "rs1",
            gitlab("acme/app", "42", "release/1.4", "true", "push"),
        ),
    );
    s.insert(
        "gitlab-release-unprotected",
        spec(
            "RS256",
            "rs1",
            "rs1",
            gitlab("acme/app", "42", "release/1.4", "false", "push"),
        ),
    );
    // A merge request from a fork runs in the fork's project: its project_* claims name the
    // fork, whatever the target project.
    s.insert(
        "gitlab-fork-merge-request",
        spec(
            "RS256",
            "rs1",
            "rs1",
            gitlab(
                "mallory/app",
                "99",
                "release/1.4",
                "true",
                "merge_request_event",
            ),
        ),
    );
    s.insert(
        "gitlab-main-boolean",
        spec(
            "RS256",
            "rs1",
            "rs1",
            with(
                gitlab("acme/app", "42", "main", "true", "push"),
                json!({"ref_protected": true, "project_id": 42}),
            ),
        ),
    );
    let github = |git_ref: &str, event: &str| {
        json!({"iss": "https://token.actions.githubusercontent.com",
               "aud": "https://gogs.example.test",
               "sub": format!("repo:acme/app:ref:{git_ref}"),
               "repository": "acme/app", "repository_id": "123456", "repository_owner": "acme",
               "ref": git_ref, "event_name": event, "environment": "prod",
               "job_workflow_ref": format!("acme/app/.github/workflows/deploy.yml@{git_ref}"),
               "actor": "alice", "exp": FAR_FUTURE, "iat": PAST})
    };
    s.insert(
        "github-deploy-main",
        spec("ES256", "es1", "es1", github("refs/heads/main", "push")),
    );
    s.insert(
        "github-pull-request",
        spec(
            "ES256",
            "es1",
            "es1",
            github("refs/pull/7/merge", "pull_request"),
        ),
    );
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const READER: &str = "6f1f7a0e-4b1d-4c8e-9a3b-0d2f5e7c9a11";
    let entra_v2 = |oid: &str| {
        json!({"iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
               "aud": "api://gogs", "sub": oid, "oid": oid, "tid": TENANT,
               "azp": "0b5a3d42-1c6e-4f7a-8d9b-2e4c6a8f0b13", "roles": ["Config.Read"],
               "ver": "2.0", "exp": FAR_FUTURE, "iat": PAST})
    };
    s.insert(
        "entra-v2-reader",
        spec("RS256", "rs1", "rs1", entra_v2(READER)),
    );
    s.insert(
        "entra-v2-other",
        spec(
            "RS256",
            "rs1",
            "rs1",
            entra_v2("0c9e8d7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f"),
        ),
    );
    s.insert(
        "entra-v1-reader",
        spec(
            "RS256",
            "rs1",
            "rs1",
            json!({"iss": format!("https://sts.windows.net/{TENANT}/"),
                   "aud": "api://gogs", "sub": READER, "oid": READER, "tid": TENANT,
                   "appid": "0b5a3d42-1c6e-4f7a-8d9b-2e4c6a8f0b13", "ver": "1.0",
                   "exp": FAR_FUTURE, "iat": PAST}),
        ),
    );
    // The same user name from two issuers.
    s.insert(
        "partner-alice",
        spec(
            "ES256",
            "es1",
            "es1",
            with(
                base_claims("alice", &["developers"]),
                json!({"iss": "https://partners.example.test"}),
            ),
        ),
    );
}

fn specs() -> BTreeMap<&'static str, Spec> {
    let alice = || base_claims("alice", &["developers"]);
    let mut s = BTreeMap::new();
    machine_specs(&mut s);
    s.insert("es256-alice", spec("ES256", "es1", "es1", alice()));
    s.insert(
        "rs256-bob",
        spec("RS256", "rs1", "rs1", base_claims("Bob", &["contractors"])),
    );
    s.insert(
        "ps256-carol",
        spec("PS256", "rs1", "rs1", base_claims("carol", &["developers"])),
    );
    s.insert(
        "eddsa-dave",
        spec("EdDSA", "ed1", "ed1", base_claims("dave", &["developers"])),
    );
    s.insert(
        "hs256-erin",
        spec(
            "HS256",
            "hs1",
            "hs1",
            with(
                base_claims("erin", &["ops"]),
                json!({"iss": "https://ci.conformance.test"}),
            ),
        ),
    );
    s.insert(
        "es256-no-kid",
        Spec {
            alg: "ES256",
            kid: None,
            key: "es1",
            header_extra: json!({}),
            claims: alice(),
        },
    );
    s.insert(
        "expired",
        spec("ES256", "es1", "es1", with(alice(), json!({"exp": PAST}))),
    );
    s.insert(
        "expired-within-leeway",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"exp": 1_767_225_590})),
        ),
    );
    s.insert(
        "not-yet-valid",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"nbf": FAR_FUTURE - 10})),
        ),
    );
    s.insert(
        "nbf-past",
        spec("ES256", "es1", "es1", with(alice(), json!({"nbf": PAST}))),
    );
    s.insert(
        "no-exp",
        spec("ES256", "es1", "es1", with(alice(), json!({"exp": null}))),
    );
    s.insert(
        "wrong-aud",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"aud": "jenkins"})),
        ),
    );
    s.insert(
        "aud-list",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"aud": ["jenkins", "gogs"]})),
        ),
    );
    s.insert(
        "no-aud",
        spec("ES256", "es1", "es1", with(alice(), json!({"aud": null}))),
    );
    s.insert(
        "wrong-iss",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"iss": "https://evil.test"})),
        ),
    );
    s.insert("other-key", spec("ES256", "es1", "other", alice()));
    s.insert(
        "alg-none",
        Spec {
            alg: "none",
            kid: Some("es1"),
            key: "none",
            header_extra: json!({}),
            claims: alice(),
        },
    );
    s.insert(
        "hs256-rsa-confusion",
        spec(
            "HS256",
            "rs1",
            "rsa-public",
            with(alice(), json!({"iss": "https://mixed.conformance.test"})),
        ),
    );
    s.insert("hs256-not-allowed", spec("HS256", "hs1", "hs1", alice()));
    s.insert("unknown-kid", spec("ES256", "es9", "es1", alice()));
    s.insert("es256-header-ed-key", spec("ES256", "ed1", "es1", alice()));
    s.insert(
        "crit",
        Spec {
            alg: "ES256",
            kid: Some("es1"),
            key: "es1",
            header_extra: json!({"crit": ["exp"]}),
            claims: alice(),
        },
    );
    s.insert(
        "at-jwt",
        Spec {
            alg: "ES256",
            kid: Some("es1"),
            key: "es1",
            header_extra: json!({"typ": "at+jwt"}),
            claims: with(alice(), json!({"iss": "https://at.conformance.test"})),
        },
    );
    s.insert(
        "at-wrong-typ",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"iss": "https://at.conformance.test"})),
        ),
    );
    s.insert(
        "bad-user",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"sub": "../admin"})),
        ),
    );
    s.insert(
        "no-sub",
        spec("ES256", "es1", "es1", with(alice(), json!({"sub": null}))),
    );
    s.insert(
        "groups-string",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"groups": "developers"})),
        ),
    );
    s.insert(
        "groups-bad",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"groups": [1, 2]})),
        ),
    );
    s.insert(
        "oversized",
        spec(
            "ES256",
            "es1",
            "es1",
            with(alice(), json!({"padding": "x".repeat(9000)})),
        ),
    );
    s
}

fn mint(keys: &Keys, spec: &Spec) -> String {
    let mut header = json!({"alg": spec.alg, "typ": "JWT"});
    if let Some(kid) = spec.kid {
        header["kid"] = json!(kid);
    }
    for (k, v) in spec.header_extra.as_object().expect("object") {
        header[k] = v.clone();
    }
    let b64 = |v: &Value| {
        Base64UrlUnpadded::encode_string(serde_json::to_string(v).expect("json").as_bytes())
    };
    let input = format!("{}.{}", b64(&header), b64(&spec.claims));
    let sig = keys.sign(spec.alg, spec.key, input.as_bytes());
    format!("{input}.{}", Base64UrlUnpadded::encode_string(&sig))
}

/// A token over header and claims given as JSON text, so they can repeat a member
/// (which a `serde_json::Value` cannot hold).
fn mint_text(keys: &Keys, alg: &str, key: &str, header: &str, claims: &str) -> String {
    let b64 = |t: &str| Base64UrlUnpadded::encode_string(t.as_bytes());
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = keys.sign(alg, key, input.as_bytes());
    format!("{input}.{}", Base64UrlUnpadded::encode_string(&sig))
}

fn tamper(token: &str) -> String {
    // Flip one bit in the middle of the signature: still valid base64url, wrong signature.
    let (head, sig) = token.rsplit_once('.').expect("three parts");
    let mut bytes = Base64UrlUnpadded::decode_vec(sig).expect("base64url signature");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    format!("{head}.{}", Base64UrlUnpadded::encode_string(&bytes))
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let keys = Keys::new();
    let mut tokens: BTreeMap<String, String> = specs()
        .iter()
        .map(|(k, s)| ((*k).to_owned(), mint(&keys, s)))
        .collect();
    let alice = tokens["es256-alice"].clone();
    tokens.insert("bad-signature".into(), tamper(&alice));
    tokens.insert(
        "truncated-signature".into(),
        alice[..alice.len() - 10].to_owned(),
    );
    tokens.insert("malformed-base64".into(), alice.replacen('.', "!.", 1));
    tokens.insert(
        "two-parts".into(),
        alice.rsplit_once('.').expect("parts").0.to_owned(),
    );

    // Repeated members: serde_json keeps the last `sub`, other parsers the first.
    let claims = serde_json::to_string(&base_claims("alice", &["developers"])).expect("json");
    let repeated_sub = claims.replacen('{', r#"{"sub":"admin","#, 1);
    let header = r#"{"alg":"ES256","kid":"es1","typ":"JWT"}"#;
    tokens.insert(
        "repeated-claim".into(),
        mint_text(&keys, "ES256", "es1", header, &repeated_sub),
    );
    tokens.insert(
        "repeated-header".into(),
        mint_text(
            &keys,
            "ES256",
            "es1",
            r#"{"alg":"ES256","kid":"es1","kid":"es1","typ":"JWT"}"#,
            &claims,
        ),
    );
    tokens.insert(
        "repeated-nested".into(),
        mint_text(
            &keys,
            "ES256",
            "es1",
            header,
            &claims.replacen('{', r#"{"ext":{"a":1,"a":2},"#, 1),
        ),
    );

    // ID tokens for `[sso]`: issued to the client `tollgate-web` for the sign-in the
    // default test randomness starts.
    let nonce = Sso::of(policy_core::cases::DEFAULT_TEST_ENTROPY).nonce;
    let id = |changes: Value| {
        let claims = with(
            base_claims("alice", &["developers"]),
            json!({"aud": "tollgate-web", "nonce": nonce}),
        );
        mint(&keys, &spec("ES256", "es1", "es1", with(claims, changes)))
    };
    tokens.insert("id-alice".into(), id(json!({})));
    tokens.insert(
        "id-wrong-nonce".into(),
        id(json!({"nonce": "another-sign-in"})),
    );
    tokens.insert("id-gogs-audience".into(), id(json!({"aud": "gogs"})));
    tokens.insert("id-other-azp".into(), id(json!({"azp": "another-client"})));
    tokens.insert("id-expired".into(), id(json!({"exp": PAST})));
    tokens.insert("id-bad-signature".into(), tamper(&id(json!({}))));

    let src = root.join("tests/conformance/corpus-src");
    let out_dir = root.join("tests/corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&src)
        .expect("corpus-src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let text = std::fs::read_to_string(&path).expect("read template");
        let filled = fill(&text, &keys, &tokens, &path);
        let out = out_dir.join(path.file_name().expect("file name"));
        let banner = "# GENERATED by `cargo run -p tollgate-conformance --bin gen-corpus` from\n# tests/conformance/corpus-src/; edit the template, not this file.\n";
        std::fs::write(&out, format!("{banner}{filled}")).expect("write corpus");
        println!("wrote {}", out.display());
    }
}

fn fill(text: &str, keys: &Keys, tokens: &BTreeMap<String, String>, path: &Path) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("{}: unclosed {{{{", path.display()));
        let placeholder = &rest[start + 2..end];
        let value = match placeholder.split_once(':') {
            Some(("token", name)) => tokens
                .get(name)
                .unwrap_or_else(|| panic!("{}: unknown token `{name}`", path.display()))
                .clone(),
            Some(("jwks", names)) => {
                let keys: Vec<Value> = names.split(',').map(|n| keys.jwk(n)).collect();
                serde_json::to_string(&json!({ "keys": keys })).expect("json")
            }
            Some(("sso", what)) => sso_value(what),
            Some(("basic", spec)) => {
                // {{basic:USER:PASSWORD}}: each part a token name or a literal.
                let (user, password) = spec.split_once(':').expect("basic:USER:PASSWORD");
                let part = |p: &'_ str| tokens.get(p).cloned().unwrap_or_else(|| p.to_owned());
                let pair = format!("{}:{}", part(user), part(password));
                format!("Basic {}", base64ct::Base64::encode_string(pair.as_bytes()))
            }
            _ => panic!("{}: unknown placeholder `{placeholder}`", path.display()),
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The values a sign-in started with `entropy` carries, derived as the edge derives them:
/// SHA-256 of a label and the randomness; state and nonce its first 16 bytes, the PKCE
/// verifier all 32, base64url; the challenge the SHA-256 of the verifier (RFC 7636 S256).
struct Sso {
    state: String,
    nonce: String,
    verifier: String,
    challenge: String,
}

impl Sso {
    fn of(entropy: [u8; 32]) -> Sso {
        use sha2::Digest;
        let derive = |label: &str| -> Vec<u8> {
            let mut hash = Sha256::new();
            hash.update(label.as_bytes());
            hash.update(entropy);
            hash.finalize().to_vec()
        };
        let b64 = |b: &[u8]| Base64UrlUnpadded::encode_string(b);
        let verifier = b64(&derive("tollgate sso verifier"));
        Sso {
            state: b64(&derive("tollgate sso state")[..16]),
            nonce: b64(&derive("tollgate sso nonce")[..16]),
            challenge: b64(&Sha256::digest(verifier.as_bytes())),
            verifier,
        }
    }
}

/// `{{sso:...}}`: `state`, `nonce`, `challenge`, `verifier` (each `:ff` for randomness of
/// all 0xff bytes), `login:PATH[:ff]` (the login cookie a sign-in returning to PATH sets),
/// `session:USER` (the session cookie signing in as USER sets), each optionally prefixed
/// by `tampered:` (one payload character changed) or `other-key:` (signed with another key).
fn sso_value(what: &str) -> String {
    let (what, key) = match what.strip_prefix("other-key:") {
        Some(rest) => (rest, SSO_OTHER_KEY),
        None => (what, SSO_SESSION_KEY),
    };
    let (what, tampered) = match what.strip_prefix("tampered:") {
        Some(rest) => (rest, true),
        None => (what, false),
    };
    let (what, entropy) = match what.strip_suffix(":ff") {
        Some(rest) => (rest, [0xff; 32]),
        None => (what, policy_core::cases::DEFAULT_TEST_ENTROPY),
    };
    let sso = Sso::of(entropy);
    let text = |s: &str| serde_json::to_string(s).expect("json string");
    let sealed = match what.split_once(':') {
        None => {
            return match what {
                "state" => sso.state,
                "nonce" => sso.nonce,
                "challenge" => sso.challenge,
                "verifier" => sso.verifier,
                other => panic!("unknown sso value `{other}`"),
            }
        }
        Some(("login", to)) => seal(
            "l1",
            &format!(
                r#"{{"state":{},"nonce":{},"verifier":{},"to":{},"exp":{}}}"#,
                text(&sso.state),
                text(&sso.nonce),
                text(&sso.verifier),
                text(to),
                DEFAULT_NOW + 600
            ),
            key,
        ),
        Some(("session", "alice")) => seal(
            "s1",
            &format!(
                r#"{{"user":"alice","groups":["developers"],"issuer":"corp","exp":{}}}"#,
                DEFAULT_NOW + SSO_LIFETIME
            ),
            key,
        ),
        Some(other) => panic!("unknown sso value `{other:?}`"),
    };
    if !tampered {
        return sealed;
    }
    // One character of the payload changed: still base64url, no longer what was signed.
    let (kind, rest) = sealed.split_once('.').expect("kind.payload.mac");
    let mut payload: Vec<char> = rest.chars().collect();
    payload[4] = if payload[4] == 'A' { 'B' } else { 'A' };
    format!("{kind}.{}", payload.into_iter().collect::<String>())
}

/// A cookie value as the edge seals it: `kind.payload.mac`, base64url, the HMAC-SHA256
/// (keyed by the session key) over `kind.payload`.
fn seal(kind: &str, json: &str, key: &str) -> String {
    let signed = format!(
        "{kind}.{}",
        Base64UrlUnpadded::encode_string(json.as_bytes())
    );
    let mac = hmac(key.as_bytes(), signed.as_bytes());
    format!("{signed}.{}", Base64UrlUnpadded::encode_string(&mac))
}
