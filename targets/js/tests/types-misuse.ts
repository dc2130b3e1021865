// What the generated declarations must refuse. Each `@ts-expect-error` fails the type check
// when its next line compiles, so a declaration that lost its type (back to `any`) or a
// Rust type that changed without the declarations is caught (tests/conformance/tests/node.rs).
import { Policy, type Decision, type PolicyError, type Reason } from "@tollgate/policy";

const policy = Policy.parse("", "policy.toml");

// @ts-expect-error: a request needs its path.
policy.decide({ method: "GET" });
// @ts-expect-error: an unknown option (the engine refuses it too: deny_unknown_fields).
policy.decide({ path: "/" }, { now: 0, explian: true });
// @ts-expect-error: header values are strings or lists of strings.
policy.decide({ path: "/", headers: { "x-n": 1 } });

const decision: Decision | undefined = policy.decide({ path: "/" }).decision;
if (decision !== undefined) {
  // @ts-expect-error: `reason` is one of the engine's codes, not any string.
  const misspelt: boolean = decision.reason === "alowed";
  // @ts-expect-error: `status` is a number.
  const status: string = decision.status;
  // @ts-expect-error: `repo` may be null.
  const owner: string = decision.repo.split("/")[0];
  // @ts-expect-error: an identity made from an API key has no issuer.
  if (decision.identity?.via === "api_key") console.log(decision.identity.issuer);
  // @ts-expect-error: access levels are read, write, admin and owner.
  const superuser = decision.access === "superuser";
  console.log(misspelt, status, owner, superuser);
}

const reason: Reason = "rate_limited";
// @ts-expect-error: not a reason the engine gives.
const unknown: Reason = "forbidden";
// @ts-expect-error: rate states are decimal strings (a JavaScript number cannot hold a u64).
policy.decide({ path: "/" }).resolve([1767225600000000000]);
try {
  Policy.parse("[gateway", "policy.toml");
} catch (error) {
  const { line, column }: PolicyError = error as PolicyError;
  // @ts-expect-error: a position may be missing.
  const where: number = line + column;
  console.log(reason, unknown, where);
}
