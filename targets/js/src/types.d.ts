// GENERATED from the Rust types by targets/js/src/types.rs (ts-rs); do not edit.

/**
 * An owned request in the JSON shape `tollgate eval` reads and `[[test]]` cases use:
 * `{"method", "path", "query", "headers": {name: value | [values]}, "body", "client_ip"}`.
 */
export type Request = {
    /**
     * Default `GET`.
     */
    method?: string,
    path: string,
    /**
     * The query string without its `?`.
     */
    query?: string,
    /**
     * A header's value, or its values when it is repeated.
     */
    headers?: Record<string, string | string[]>,
    /**
     * The body, read only for a Git LFS batch request.
     */
    body?: string | null,
    client_ip?: string | null,
    /**
     * The host's 32 random bytes for this request, as 64 hex digits (see
     * `entropy`): given by test cases so that a sign-in redirect is the
     * same on every host. A host deciding real traffic draws its own.
     */
    entropy?: string,
};

/**
 * `decide`'s and `runTests`'s options, every one optional.
 */
export type Options = {
    /**
     * Unix seconds (default: the JavaScript clock).
     */
    now?: number | null,
    /**
     * JWKS documents (the JSON text) by issuer name, for issuers with a `jwks_url`.
     */
    keys?: { [key in string]: string },
    /**
     * Origin secrets by name; without them, placeholders (decisions show names only).
     */
    secrets?: { [key in string]: string } | null,
    /**
     * Record the steps behind the decision in its `explain`.
     */
    explain?: boolean,
};

/**
 * The engine's answer for one request. Serialized, this is `tollgate eval`'s output (see
 * the README for the schema), identical on every host.
 */
export type Decision = {
    allow: boolean,
    status: number,
    reason: Reason,
    /**
     * A sentence for the client and the logs; never contains a secret.
     */
    message: string,
    /**
     * The rule that decided (`grant:NAME`, `rate_limit:NAME`, `gateway.site_web`, ...).
     */
    rule: string | null,
    identity: Identity | null,
    class: RouteClass | null,
    /**
     * `owner/name`, lowercase.
     */
    repo: string | null,
    access: Access | null,
    /**
     * Request headers (lowercase names) the host must remove before forwarding.
     */
    strip: Array<string>,
    /**
     * Headers the host must set on the origin request.
     */
    set: Record<string, string>,
    /**
     * Headers for the host's own response when the request is denied (challenges,
     * `Retry-After`).
     */
    headers: Record<string, string>,
    /**
     * Seconds until a rate-limited request may be retried.
     */
    retry_after: number | null,
    /**
     * The revision of the policy that decided (`revision`); none (null
     * in JSON) when no policy did (the module failed).
     */
    policy_revision: string | null,
    /**
     * What the policy's shadow rules (`mode = "shadow"`) would have decided instead, when
     * that differs; shadow rules never change the decision itself.
     */
    shadow?: Shadow,
    /**
     * The steps behind the decision; empty unless it came from
     * `decide_explained`.
     */
    explain?: Array<ExplainStep>,
};

/**
 * Why a request was decided as it was: a stable code for audit logs and metrics.
 */
export type Reason =
    | "allowed"
    | "bad_path"
    | "credential_in_query"
    | "bad_credentials"
    | "missing_credential"
    | "insufficient_access"
    | "denied_by_rule"
    | "not_found"
    | "site_closed"
    | "cross_repo_closed"
    | "by_id_closed"
    | "operator_closed"
    | "no_route"
    | "rate_limited"
    | "rate_store_unavailable"
    | "origin_credential_missing"
    | "policy_module_error"
    | "published"
    | "sign_in_required"
    | "session_expired"
    | "session_invalid"
    | "signed_in"
    | "signed_out"
    | "token_too_large"
    | "token_malformed"
    | "token_duplicate_member"
    | "token_critical_header"
    | "token_unknown_issuer"
    | "token_algorithm_not_allowed"
    | "token_issuer_keys_unavailable"
    | "token_unknown_key"
    | "token_key_algorithm_mismatch"
    | "token_ambiguous_key"
    | "token_bad_signature"
    | "token_missing_exp"
    | "token_expired"
    | "token_not_yet_valid"
    | "token_wrong_audience"
    | "token_wrong_type"
    | "token_missing_user_claim"
    | "token_invalid_user"
    | "token_invalid_groups"
    | "no_binding"
    | "unknown_api_key"
    | "token_wrong_nonce"
    | "sign_in_not_started"
    | "sign_in_bad_cookie"
    | "sign_in_expired"
    | "sign_in_state_mismatch"
    | "sign_in_refused"
    | "sign_in_exchange_failed"
    | "sign_in_nonce_mismatch"
    | "sign_in_session_too_large"
    | "sign_in_unavailable";

/**
 * A caller whose credential was verified. Only `jwt`, `apikey` and
 * `sso` (a session cookie the edge signed) make these, so holding one means
 * verification happened.
 */
export type Identity = {
    /**
     * Gogs user name, lowercased (Gogs names are case-insensitive).
     */
    user: string,
    groups: Array<string>,
} & ({
    "via": "jwt",
    issuer: string,
    alg: Algorithm,
    kid?: string,
    /**
     * The `[[binding]]` that made the identity, when one did (not the user claim).
     */
    binding?: string,
    /**
     * The issuer's `audit_claims` as the token carried them, so a CI request can be
     * traced to its pipeline.
     */
    claims?: { [key in string]: string },
} | { "via": "api_key", key: string } | {
    "via": "session",
    issuer: string,
    binding?: string,
    claims?: { [key in string]: string },
});

/**
 * Signature algorithms the engine verifies. `none` is deliberately not representable.
 */
export type Algorithm = "HS256" | "RS256" | "PS256" | "ES256" | "EdDSA";

/**
 * Which Gogs surface a request is for. It selects the challenge a denial carries and the
 * origin credential an allowed request gets.
 */
export type RouteClass = "git" | "lfs" | "api" | "web";

/**
 * Repository access levels, ordered `Read < Write < Admin < Owner`, as in Gogs (its
 * `AccessModeOwner` is the repository's owner, or an owner of the organisation owning it).
 */
export type Access = "read" | "write" | "admin" | "owner";

/**
 * The decision a request would have had with the policy's shadow rules enforced, carried
 * on the real decision when the two differ (in `allow`, `status` or `reason`).
 */
export type Shadow = {
    allow: boolean,
    status: number,
    reason: Reason,
    /**
     * The rule that would have decided (`grant:NAME`, `rate_limit:NAME`, ...).
     */
    rule: string | null,
};

/**
 * One line of a decision's explanation: which rule was looked at and what came of it.
 */
export type ExplainStep = { rule: string, outcome: string };

/**
 * A rate limit a request must still pass: load `key`'s stored state.
 */
export type RateCheck = {
    key: string,
    /**
     * The `[[rate_limit]]`'s name.
     */
    limit: string,
    /**
     * A shadow limit (`mode = "shadow"`): it reports, never refuses.
     */
    shadow: boolean,
};

/**
 * A rate-limit state to store.
 */
export type RateUpdate = {
    key: string,
    /**
     * The GCRA theoretical arrival time in Unix nanoseconds, as a decimal string (a
     * JavaScript number cannot hold every u64).
     */
    state: string,
    /**
     * When the state stops mattering, in Unix seconds.
     */
    expires: number,
};

/**
 * What `resolve` answers: the final decision and the states to store.
 */
export type Resolved = { decision: Decision, updates: Array<RateUpdate> };

/**
 * The request a sign-in callback needs sent to the provider's token endpoint, as
 * `tollgate eval` shows it (the client secret redacted; `tokenRequestHeaders()` has the
 * values to send).
 */
export type TokenRequest = {
    /**
     * The token endpoint; POST to it.
     */
    url: string,
    headers: Record<string, string>,
    /**
     * `application/x-www-form-urlencoded`.
     */
    body: string,
};

/**
 * A `TokenResponse` that owns its body: what a test case or a test endpoint says the
 * provider answered (`{"status": 200, "body": "..."}`, or `{"failed": true}`).
 */
export type TokenResponse = { status: number, body: string } | { failed: true };

/**
 * One `[[test]]` case's result.
 */
export type TestOutcome = {
    name: string,
    /**
     * The case's line in the policy.
     */
    line: number,
    passed: boolean,
    /**
     * What differed from the case's `expect`, one sentence each.
     */
    mismatches: Array<string>,
};

/**
 * What `Policy.parse` throws for a bad policy. `line` and `column` (1-based) are null when
 * the error has no position.
 */
export type PolicyError = {
    file: string,
    line: number | null,
    column: number | null,
    message: string,
};
