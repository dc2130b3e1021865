// The npm package under Node as a conformance host: one JSON request per line on stdin,
// one JSON answer per line on stdout. It uses only the package's public API, keeping
// rate-limit state the way an application would (a Map of key to state string).
//
//   node conformance-host.cjs PACKAGE_DIR
//   {"op": "load", "source": "...", "file": "..."}     -> {"ok": true} | {"error": {...}}
//   {"op": "reset"}                                     -> {"ok": true}
//   {"op": "decide", "request": {...}, "options": {now, keys, secrets, explain},
//    "exchange": {status, body} | {failed: true} | null}
//                                                       -> {"decision": "<decision JSON>",
//                                                           "origin_headers": [[name, value], ...]}
//     (a sign-in callback: the decision completing it with `exchange`, or without one
//      "{\"token_request\": ...}")
//   {"op": "run_tests", "options": {keys, secrets}}     -> {"outcomes": [{name, line, passed, mismatches}]}
"use strict";
const readline = require("node:readline");
const { Policy } = require(require("node:path").resolve(process.argv[2]));

let policy = null;
const state = new Map();

function answer(op) {
  switch (op.op) {
    case "load":
      try {
        policy = Policy.parse(op.source, op.file);
        return { ok: true, revision: policy.revision };
      } catch (error) {
        return { error };
      }
    case "reset":
      state.clear();
      return { ok: true };
    case "decide": {
      const verdict = policy.decide(op.request, op.options);
      if (verdict.tokenRequest !== undefined) {
        if (op.exchange == null) {
          return { decision: JSON.stringify({ token_request: verdict.tokenRequest }), origin_headers: [] };
        }
        const decision = policy.completeSignIn(op.request, op.exchange, op.options);
        return { decision: JSON.stringify(decision), origin_headers: [] };
      }
      let decision = verdict.decision;
      if (decision === undefined) {
        const priors = verdict.checks.map((check) => state.get(check.key) ?? null);
        const resolved = verdict.resolve(priors);
        for (const update of resolved.updates) {
          state.set(update.key, update.state);
        }
        decision = resolved.decision;
      }
      // The headers a host sets on the forwarded request, secrets and all.
      const origin_headers = decision.allow ? verdict.originHeaders() : [];
      return { decision: JSON.stringify(decision), origin_headers };
    }
    case "run_tests":
      return { outcomes: policy.runTests(op.options) };
    default:
      return { error: `unknown op ${op.op}` };
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let reply;
  try {
    reply = answer(JSON.parse(line));
  } catch (error) {
    reply = { error: String(error) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
