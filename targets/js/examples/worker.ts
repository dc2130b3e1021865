// A Cloudflare Worker in TypeScript in front of Gogs, using @tollgate/policy (the bundler
// flavour: `scripts/js-package bundler`, then `npm install ./targets/js/pkg/bundler`).
// The README shows it; tests/conformance/tests/node.rs type-checks it under `strict`.
import { Policy, type Decision, type Request as PolicyRequest } from "@tollgate/policy";

interface Env {
  /** The policy's TOML text. */
  POLICY: string;
  /** Where Gogs answers, e.g. `https://gogs.internal:3000`. */
  ORIGIN: string;
  /** Origin secrets by the names the policy uses (`[origin]`). */
  SECRETS: string;
}

let compiled: { source: string; policy: Policy } | undefined;
const jwks = new Map<string, string>(); // issuer name -> JWKS document
const rateStates = new Map<string, string>(); // per isolate; a Durable Object shares them

function policyOf(env: Env): Policy {
  if (compiled?.source !== env.POLICY) {
    compiled = { source: env.POLICY, policy: Policy.parse(env.POLICY, "policy.toml") };
  }
  return compiled.policy;
}

async function keysOf(policy: Policy): Promise<Record<string, string>> {
  for (const [issuer, url] of policy.jwksUrls()) {
    if (!jwks.has(issuer)) jwks.set(issuer, await (await fetch(url)).text());
  }
  return Object.fromEntries(jwks);
}

async function factsOf(request: Request): Promise<PolicyRequest> {
  const url = new URL(request.url);
  const headers: Record<string, string> = {};
  request.headers.forEach((value, name) => (headers[name] = value));
  // Only an LFS batch request's body decides anything (its `operation`).
  const body = url.pathname.endsWith("/info/lfs/objects/batch")
    ? await request.clone().text()
    : null;
  const client_ip = request.headers.get("CF-Connecting-IP");
  return { method: request.method, path: url.pathname, query: url.search.slice(1), headers, body, client_ip };
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const policy = policyOf(env);
    const secrets: Record<string, string> = JSON.parse(env.SECRETS);
    const verdict = policy.decide(await factsOf(request), { keys: await keysOf(policy), secrets });
    let decision: Decision | undefined = verdict.decision;
    if (decision === undefined) {
      // Rate limits: hand the engine each key's stored state, store what it returns.
      const resolved = verdict.resolve(verdict.checks.map((check) => rateStates.get(check.key) ?? null));
      for (const update of resolved.updates) rateStates.set(update.key, update.state);
      decision = resolved.decision;
    }
    if (!decision.allow) {
      const headers = { ...decision.headers, "content-type": "text/plain; charset=utf-8" };
      return new Response(`${decision.message}\n`, { status: decision.status, headers });
    }
    const headers = new Headers(request.headers);
    for (const name of decision.strip) headers.delete(name);
    for (const [name, value] of verdict.originHeaders()) headers.set(name, value);
    const url = new URL(request.url);
    return fetch(new URL(url.pathname + url.search, env.ORIGIN), {
      method: request.method,
      headers,
      body: request.body,
      redirect: "manual",
    });
  },
};
