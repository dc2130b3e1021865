# scope.toml's grants in Rego, for the authorization-step peer benchmark.
# Input: {"principal": {"user", "groups", "key"?}?, "repo": "owner/name", "access": level};
# no principal means an anonymous caller.
package tollgate

import rego.v1

levels := {"read": 1, "write": 2, "admin": 3}

grants := [
	{"who": "group:developers", "repos": ["acme/*"], "access": "write", "effect": "allow"},
	{"who": "group:contractors", "repos": ["acme/app", "acme/docs"], "access": "read", "effect": "allow"},
	{"who": "key:ci-bot", "repos": ["acme/*"], "access": "read", "effect": "allow"},
	{"who": "key:release", "repos": ["acme/app", "acme/web"], "access": "write", "effect": "allow"},
	{"who": "user:alice", "repos": ["acme/app"], "access": "admin", "effect": "allow"},
	{"who": "anonymous", "repos": ["acme/docs"], "access": "read", "effect": "allow"},
	{"who": "*", "repos": ["public/*"], "access": "read", "effect": "allow"},
	{"who": "authenticated", "repos": ["acme/infra-*"], "access": "write", "effect": "deny"},
	{"who": "*", "repos": ["*/secrets"], "access": "read", "effect": "deny"},
]

default allow := false

# Some allow reaches the level asked for, and no deny takes that level away.
allow if {
	need := levels[input.access]
	some g in grants
	g.effect == "allow"
	levels[g.access] >= need
	applies(g)
	not denied(need)
}

# A deny removes its level and every level above it.
denied(need) if {
	some g in grants
	g.effect == "deny"
	levels[g.access] <= need
	applies(g)
}

applies(g) if {
	caller(g.who)
	some pattern in g.repos
	glob.match(pattern, ["/"], input.repo)
}

caller(who) if who == "*"

caller(who) if {
	who == "anonymous"
	not input.principal
}

caller(who) if {
	who == "authenticated"
	input.principal
}

caller(who) if who == concat(":", ["user", input.principal.user])

caller(who) if {
	some group in input.principal.groups
	who == concat(":", ["group", group])
}

caller(who) if who == concat(":", ["key", input.principal.key])
