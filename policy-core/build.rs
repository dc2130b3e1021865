//! Compiles Gogs' route inventories (`gogs/*.routes`, extracted from Gogs' source by
//! scripts/gogs-routes) and what their handlers mean (`gogs/semantics.toml`) into the
//! classifier's route tables, `$OUT_DIR/gogs_routes.rs`. A route whose meaning is not
//! known fails the build: Tollgate never guesses what a Gogs route needs.

#[path = "build/emit.rs"]
mod emit;
#[path = "build/inventory.rs"]
mod inventory;
#[path = "build/pattern.rs"]
mod pattern;
#[path = "build/semantics.rs"]
mod semantics;
#[path = "build/tree.rs"]
mod tree;

use std::path::Path;

use inventory::Router;
use tree::{Dialect, Node};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let dir = Path::new("gogs");
    println!("cargo::rerun-if-changed=gogs");
    println!("cargo::rerun-if-changed=build");
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));

    let semantics: semantics::Semantics = toml::from_str(&read(&dir.join("semantics.toml"))?)
        .map_err(|e| format!("gogs/semantics.toml: {e}"))?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("gogs/: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "routes"))
        .collect();
    files.sort();
    let mut inventories = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        inventories.push(inventory::parse(name, &read(file)?)?);
    }
    semantics.check_all_used(&inventories)?;

    let mut emitter = emit::Emitter::default();
    let mut versions = Vec::new();
    for inventory in &inventories {
        let mut specs = Vec::new();
        let mut trees: [[Option<Node>; 7]; 2] = Default::default();
        for route in &inventory.routes {
            let spec = semantics.spec(inventory, route)?;
            let index = match specs.iter().position(|s| *s == spec) {
                Some(i) => i,
                None => {
                    specs.push(spec);
                    specs.len() - 1
                }
            };
            let (slot, dialect) = match route.router {
                Router::Macaron => (0, Dialect::Macaron),
                Router::Flamego => (1, Dialect::Flamego),
            };
            trees[slot][route.method]
                .get_or_insert_with(Node::root)
                .add(dialect, &route.pattern, index)
                .map_err(|e| format!("{} route {}: {e}", inventory.name, route.pattern))?;
        }
        versions.push(emitter.version(inventory, &trees, &specs)?);
    }
    let out =
        Path::new(&std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("gogs_routes.rs");
    std::fs::write(&out, emitter.finish(versions)).map_err(|e| format!("{}: {e}", out.display()))
}
