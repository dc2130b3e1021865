// The playground: the web build of @tollgate/policy (scripts/js-package web) deciding in
// the page. Everything the page shows comes from the package; nothing is sent anywhere.
import init, { Policy } from "../pkg/web/tollgate_policy.js";

const $ = (id) => document.getElementById(id);
let policy = null;

/// The policy in the editor, compiled; a bad one shows its positioned error.
function compile() {
  const source = $("policy").value;
  try {
    policy = Policy.parse(source, "policy.toml");
    $("policy-error").hidden = true;
    $("status").textContent = `policy compiles: revision ${policy.revision}, ${policy.testCount} test cases`;
    $("status").className = "";
  } catch (error) {
    policy = null;
    const where = error.line ? `${error.file}:${error.line}:${error.column}` : error.file;
    const line = error.line ? source.split("\n")[error.line - 1] ?? "" : "";
    const caret = error.column ? " ".repeat(error.column - 1) + "^" : "";
    $("policy-error").textContent = `${where}: ${error.message}\n\n${line}\n${caret}`;
    $("policy-error").hidden = false;
    $("status").textContent = `policy error at ${where}`;
    $("status").className = "error";
  }
}

/// The token's header and claims, decoded (not verified: the engine does that).
function showToken() {
  const token = $("token").value.trim();
  const parts = token.split(".");
  if (parts.length !== 3) {
    $("token-view").textContent = token ? "not a JWT" : "";
    return;
  }
  const decode = (part) => {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    return JSON.stringify(JSON.parse(atob(base64)), null, 2);
  };
  try {
    $("token-view").textContent = `header ${decode(parts[0])}\nclaims ${decode(parts[1])}`;
  } catch {
    $("token-view").textContent = "not a JWT";
  }
}

function request() {
  const headers = {};
  for (const line of $("headers").value.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const ip = $("client-ip").value.trim();
  return {
    method: $("method").value,
    path: $("path").value,
    query: $("query").value,
    headers,
    ...(ip ? { client_ip: ip } : {}),
  };
}

/// Decides the request; rate limits are checked against empty state (a first request).
function decide(event) {
  event?.preventDefault();
  showToken();
  if (!policy) return;
  try {
    const verdict = policy.decide(request(), { now: Number($("now").value), explain: true });
    const decision = verdict.decision ?? verdict.resolve(verdict.checks.map(() => null)).decision;
    $("verdict").textContent = `${decision.allow ? "allowed" : "denied"}: ${decision.status} ${decision.reason} (${decision.message})`;
    $("verdict").className = decision.allow ? "allow" : "deny";
    $("explain").replaceChildren(...(decision.explain ?? []).map((step) => {
      const item = document.createElement("li");
      item.textContent = `${step.rule}: ${step.outcome}`;
      return item;
    }));
    const { explain, ...shown } = decision;
    $("decision").textContent = JSON.stringify(shown, null, 2);
  } catch (error) {
    $("verdict").textContent = `request error: ${error}`;
    $("verdict").className = "deny";
  }
}

await init();
const [example, clone] = await Promise.all([
  fetch("../../../examples/policy.toml").then((r) => r.text()),
  fetch("../../../examples/requests/alice-clone.json").then((r) => r.json()),
]);
$("policy").value = example;
$("token").value = clone.headers.Authorization.replace(/^Bearer /, "");
$("policy").addEventListener("input", () => { compile(); decide(); });
$("token").addEventListener("input", showToken);
$("request").addEventListener("submit", decide);
compile();
showToken();
decide();
document.body.dataset.ready = "true";
