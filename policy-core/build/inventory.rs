//! Reading a route inventory (`policy-core/gogs/NAME.routes`, written by
//! scripts/gogs-routes; the format is in policy-core/gogs/README.md).

use std::collections::BTreeMap;

pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Router {
    Macaron,
    Flamego,
}

pub struct Route {
    pub router: Router,
    pub method: usize,
    pub pattern: String,
    pub handlers: Vec<String>,
    pub source: String,
}

/// A path prefix answered before (or instead of) routing: static files, middleware. Both
/// routers' prefixes count: a request can reach flamego through a dispatching route.
pub struct Prefix {
    pub method: usize,
    pub segment: String,
    pub what: &'static str,
}

pub struct Inventory {
    pub name: String,
    pub source: String,
    pub reserved: Vec<String>,
    pub reserved_patterns: Vec<String>,
    pub prefixes: Vec<Prefix>,
    pub defs: BTreeMap<String, String>,
    pub routes: Vec<Route>,
}

pub fn parse(name: &str, text: &str) -> Result<Inventory, String> {
    let mut inv = Inventory {
        name: name.to_owned(),
        source: String::new(),
        reserved: Vec::new(),
        reserved_patterns: Vec::new(),
        prefixes: Vec::new(),
        defs: BTreeMap::new(),
        routes: Vec::new(),
    };
    for (number, line) in text.lines().enumerate() {
        let at = |message: String| format!("{name}.routes:{}: {message}", number + 1);
        if let Some(comment) = line.strip_prefix("# Gogs route inventory: ") {
            inv.source = comment.trim_end_matches('.').to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let method = |m: &str| {
            METHODS
                .iter()
                .position(|x| *x == m)
                .ok_or_else(|| at(format!("unknown method `{m}`")))
        };
        let router = |r: &str| match r {
            "macaron" => Ok(Router::Macaron),
            "flamego" => Ok(Router::Flamego),
            other => Err(at(format!("unknown router `{other}`"))),
        };
        let prefix_segment = |p: &str| {
            p.strip_prefix('/')
                .and_then(|p| p.strip_suffix("/*"))
                .filter(|s| !s.is_empty() && !s.contains('/'))
                .map(str::to_owned)
                .ok_or_else(|| at(format!("prefix `{p}` is not `/SEGMENT/*`")))
        };
        match fields.as_slice() {
            // `Version::is_reserved` compares ignoring ASCII case, as Gogs lowercases.
            ["reserved-user" | "reserved-user-pattern", n]
                if n.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) =>
            {
                return Err(at(format!("reserved name `{n}` is not lowercase ASCII")));
            }
            ["reserved-user", n] => inv.reserved.push((*n).to_owned()),
            ["reserved-user-pattern", p] => inv.reserved_patterns.push((*p).to_owned()),
            ["def", n, definition, _source] => {
                inv.defs.insert((*n).to_owned(), (*definition).to_owned());
            }
            ["static", m, prefix, _source] => inv.prefixes.push(Prefix {
                method: method(m)?,
                segment: prefix_segment(prefix)?,
                what: "static",
            }),
            ["middleware", r, m, prefix, _name, _source] => inv.prefixes.push(Prefix {
                // Answered before routing by whichever router sees the request first.
                method: {
                    router(r)?;
                    method(m)?
                },
                segment: prefix_segment(prefix)?,
                what: "middleware",
            }),
            ["route", r, m, pattern, handlers, source] => inv.routes.push(Route {
                router: router(r)?,
                method: method(m)?,
                pattern: (*pattern).to_owned(),
                handlers: handlers.split(" ; ").map(str::to_owned).collect(),
                source: (*source).to_owned(),
            }),
            _ => return Err(at(format!("cannot read `{line}`"))),
        }
    }
    if inv.source.is_empty() || inv.routes.is_empty() || inv.reserved.is_empty() {
        return Err(format!(
            "{name}.routes: header, reserved names or routes missing"
        ));
    }
    Ok(inv)
}
