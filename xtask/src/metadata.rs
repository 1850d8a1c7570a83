//! The workspace as `cargo metadata` describes it: packages, their manifests' fields, declared
//! dependencies and the resolved dependency graph.
//!
//! Every fact about manifests that xtask checks comes from here, so xtask never parses TOML.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result, cargo};

/// What `cargo metadata --all-features` says about the workspace.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The workspace members, in `cargo metadata`'s order (sorted by package id).
    pub(crate) members: Vec<Package>,
    /// Every package in the resolved graph (members, dependencies of every kind and platform,
    /// with every feature on): name, version and declared `rust-version`.
    pub(crate) graph: Vec<GraphPackage>,
}

/// A workspace member.
#[derive(Debug, Clone, Default)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) version: String,
    /// The package's directory (the parent of its `Cargo.toml`).
    pub(crate) dir: PathBuf,
    pub(crate) manifest_path: PathBuf,
    /// `publish` is not `false` (nor an empty registry list).
    pub(crate) publish: bool,
    pub(crate) rust_version: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) license: Option<String>,
    /// The `readme` field, as written (relative to the package directory).
    pub(crate) readme: Option<String>,
    pub(crate) keywords: Vec<String>,
    pub(crate) categories: Vec<String>,
    /// Feature names other than `default`, sorted.
    pub(crate) features: Vec<String>,
    /// `[package.metadata.docs.rs]`, if present.
    pub(crate) docs_rs: Option<Value>,
    /// `[package.metadata.xtask]`, if present.
    pub(crate) xtask_metadata: Option<Value>,
    /// Dependencies as declared in the manifest.
    pub(crate) dependencies: Vec<Dependency>,
    /// Dependencies as resolved with every feature on, by the name the code uses.
    pub(crate) resolved: Vec<ResolvedDependency>,
    pub(crate) targets: Vec<Target>,
}

/// The kind of a dependency: `[dependencies]`, `[dev-dependencies]` or `[build-dependencies]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Normal,
    Dev,
    Build,
}

/// One entry of a dependency table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dependency {
    /// The package name (`package = "..."` when renamed).
    pub(crate) name: String,
    /// The key in the manifest when it differs from the package name.
    pub(crate) rename: Option<String>,
    pub(crate) kind: Kind,
    pub(crate) optional: bool,
    /// The platform of a `[target.<platform>.*dependencies]` table, e.g. `cfg(loom)`.
    pub(crate) target: Option<String>,
}

impl Dependency {
    /// The key this dependency is declared under in the manifest.
    pub(crate) fn key(&self) -> &str {
        self.rename.as_deref().unwrap_or(&self.name)
    }
}

/// A dependency in the resolved graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedDependency {
    /// The crate name the code refers to (`futures_core`), after renames.
    pub(crate) extern_name: String,
    /// The package name (`futures-core`).
    pub(crate) package: String,
    /// Every kind it is declared as.
    pub(crate) kinds: Vec<Kind>,
}

/// A build target of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) name: String,
    /// `lib`, `bin`, `example`, `test`, `bench`, `custom-build`, ...
    pub(crate) kind: String,
    pub(crate) src_path: PathBuf,
    pub(crate) required_features: Vec<String>,
}

/// A package of the resolved graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) rust_version: Option<String>,
}

impl Package {
    /// A library that is published: the crates users depend on.
    pub(crate) fn is_published_library(&self) -> bool {
        self.publish && self.targets.iter().any(|target| target.kind == "lib")
    }

    /// The targets of one kind (`example`, `test`, ...), in manifest order.
    pub(crate) fn targets_of(&self, kind: &str) -> impl Iterator<Item = &Target> {
        self.targets
            .iter()
            .filter(move |target| target.kind == kind)
    }
}

impl Workspace {
    /// Runs `cargo metadata --format-version 1 --all-features` from the project root.
    pub(crate) fn load() -> Result<Self> {
        let mut cmd = cargo();
        cmd.args(["metadata", "--format-version", "1", "--all-features"]);
        let output = cmd.output().map_err(|error| Error::Command {
            line: "cargo metadata".to_owned(),
            why: format!("could not start: {error}"),
        })?;
        if !output.status.success() {
            return Err(Error::Command {
                line: "cargo metadata --format-version 1 --all-features".to_owned(),
                why: format!(
                    "{}\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        let json: Value = serde_json::from_slice(&output.stdout)
            .map_err(|error| Error::Other(format!("cargo metadata: invalid JSON: {error}")))?;
        Self::from_json(&json)
    }

    /// Reads the parts of `cargo metadata`'s output that xtask uses.
    pub(crate) fn from_json(json: &Value) -> Result<Self> {
        let members: Vec<&str> = array(json, "workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let nodes = json
            .get("resolve")
            .and_then(|resolve| resolve.get("nodes"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let packages = array(json, "packages")?;
        let name_of = |id: &str| {
            packages
                .iter()
                .find(|package| package["id"].as_str() == Some(id))
                .and_then(|package| package["name"].as_str())
                .unwrap_or(id)
                .to_owned()
        };

        let mut graph = Vec::new();
        let mut workspace = Vec::new();
        for package in packages {
            let id = string(package, "id")?;
            graph.push(GraphPackage {
                name: string(package, "name")?,
                version: string(package, "version")?,
                rust_version: optional_string(package, "rust_version"),
            });
            if !members.contains(&id.as_str()) {
                continue;
            }
            let node = nodes.iter().find(|node| node["id"].as_str() == Some(&id));
            let resolved = node
                .and_then(|node| node["deps"].as_array())
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|dep| {
                    Ok(ResolvedDependency {
                        extern_name: string(dep, "name")?,
                        package: name_of(&string(dep, "pkg")?),
                        kinds: array(dep, "dep_kinds")?
                            .iter()
                            .map(|kind| kind_of(&kind["kind"]))
                            .collect::<Result<_>>()?,
                    })
                })
                .collect::<Result<_>>()?;
            workspace.push(member(package, resolved)?);
        }
        Ok(Self {
            members: workspace,
            graph,
        })
    }

    /// The members that are published libraries, each after the members it depends on (the
    /// order `cargo package` and `cargo publish` use), ties broken by name.
    pub(crate) fn published(&self) -> impl Iterator<Item = &Package> {
        let mut pending: Vec<&Package> = self
            .members
            .iter()
            .filter(|package| package.is_published_library())
            .collect();
        pending.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ordered: Vec<&Package> = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|package| {
                    package.dependencies.iter().all(|dep| {
                        dep.kind == Kind::Dev || !pending.iter().any(|other| other.name == dep.name)
                    })
                })
                // A cycle cannot build; keep going in name order rather than loop forever.
                .unwrap_or(0);
            ordered.push(pending.remove(ready));
        }
        ordered.into_iter()
    }
}

fn member(package: &Value, resolved: Vec<ResolvedDependency>) -> Result<Package> {
    let manifest_path = PathBuf::from(string(package, "manifest_path")?);
    let dir = manifest_path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    // `null`: any registry; `[]`: `publish = false`.
    let publish = package["publish"]
        .as_array()
        .is_none_or(|registries| !registries.is_empty());
    let features = package["features"].as_object();
    let mut feature_names: Vec<String> = features
        .map(|features| {
            features
                .keys()
                .filter(|name| *name != "default")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    feature_names.sort();
    let metadata = &package["metadata"];
    let docs_rs = metadata
        .get("docs")
        .and_then(|docs| docs.get("rs"))
        .cloned();
    let xtask_metadata = metadata.get("xtask").cloned();
    let dependencies = array(package, "dependencies")?
        .iter()
        .map(|dep| {
            Ok(Dependency {
                name: string(dep, "name")?,
                rename: optional_string(dep, "rename"),
                kind: kind_of(&dep["kind"])?,
                optional: dep["optional"].as_bool().unwrap_or(false),
                target: optional_string(dep, "target"),
            })
        })
        .collect::<Result<_>>()?;
    let targets = array(package, "targets")?
        .iter()
        .map(|target| {
            Ok(Target {
                name: string(target, "name")?,
                kind: target["kind"]
                    .as_array()
                    .and_then(|kinds| kinds.first())
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                src_path: PathBuf::from(string(target, "src_path")?),
                required_features: target
                    .get("required-features")
                    .map(strings)
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Package {
        name: string(package, "name")?,
        version: string(package, "version")?,
        dir,
        manifest_path,
        publish,
        rust_version: optional_string(package, "rust_version"),
        description: optional_string(package, "description"),
        license: optional_string(package, "license"),
        readme: optional_string(package, "readme"),
        keywords: package.get("keywords").map(strings).unwrap_or_default(),
        categories: package.get("categories").map(strings).unwrap_or_default(),
        features: feature_names,
        docs_rs,
        xtask_metadata,
        dependencies,
        resolved,
        targets,
    })
}

fn kind_of(kind: &Value) -> Result<Kind> {
    match kind.as_str() {
        None => Ok(Kind::Normal),
        Some("dev") => Ok(Kind::Dev),
        Some("build") => Ok(Kind::Build),
        Some(other) => Err(Error::Other(format!(
            "cargo metadata: unknown dependency kind `{other}`"
        ))),
    }
}

fn array<'a>(value: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    value[key]
        .as_array()
        .ok_or_else(|| Error::Other(format!("cargo metadata: `{key}` is not an array")))
}

fn string(value: &Value, key: &str) -> Result<String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Other(format!("cargo metadata: `{key}` is not a string")))
}

fn optional_string(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed `cargo metadata` answer: one member with a renamed dependency, a platform
    /// dependency and a dev-dependency.
    const METADATA: &str = r#"{
        "workspace_members": ["path+file:///w/crates/a#keyrunner-a@0.1.0"],
        "packages": [
            {
                "id": "path+file:///w/crates/a#keyrunner-a@0.1.0",
                "name": "keyrunner-a", "version": "0.1.0", "rust_version": "1.88",
                "manifest_path": "/w/crates/a/Cargo.toml", "publish": null,
                "description": "A.", "license": "MIT OR Apache-2.0", "readme": "README.md",
                "keywords": ["a"], "categories": ["concurrency"],
                "features": {"default": [], "serde": ["dep:serde"]},
                "metadata": {"docs": {"rs": {"all-features": true}}},
                "dependencies": [
                    {"name": "futures-core", "rename": "core2", "kind": null, "optional": false, "target": null},
                    {"name": "loom", "rename": null, "kind": null, "optional": false, "target": "cfg(loom)"},
                    {"name": "proptest", "rename": null, "kind": "dev", "optional": false, "target": null}
                ],
                "targets": [
                    {"kind": ["lib"], "name": "keyrunner_a", "src_path": "/w/crates/a/src/lib.rs"},
                    {"kind": ["example"], "name": "demo", "src_path": "/w/crates/a/examples/demo.rs",
                     "required-features": ["serde"]}
                ]
            },
            {
                "id": "registry+https://github.com/rust-lang/crates.io-index#futures-core@0.3.31",
                "name": "futures-core", "version": "0.3.31", "rust_version": "1.36",
                "manifest_path": "/r/futures-core/Cargo.toml", "publish": null,
                "features": {}, "metadata": null, "dependencies": [], "targets": []
            }
        ],
        "resolve": {"nodes": [{
            "id": "path+file:///w/crates/a#keyrunner-a@0.1.0",
            "deps": [{
                "name": "core2",
                "pkg": "registry+https://github.com/rust-lang/crates.io-index#futures-core@0.3.31",
                "dep_kinds": [{"kind": null, "target": null}, {"kind": "dev", "target": null}]
            }]
        }]}
    }"#;

    #[test]
    fn members_carry_manifest_fields_dependencies_and_targets() {
        let json: Value = serde_json::from_str(METADATA).unwrap();
        let workspace = Workspace::from_json(&json).unwrap();
        assert_eq!(workspace.members.len(), 1);
        let a = &workspace.members[0];
        assert_eq!(a.name, "keyrunner-a");
        assert_eq!(a.dir, PathBuf::from("/w/crates/a"));
        assert!(a.publish && a.is_published_library());
        assert_eq!(a.rust_version.as_deref(), Some("1.88"));
        assert_eq!(a.features, ["serde"]);
        assert_eq!(a.docs_rs.as_ref().unwrap()["all-features"], true);
        assert_eq!(a.dependencies[0].key(), "core2");
        assert_eq!(a.dependencies[1].target.as_deref(), Some("cfg(loom)"));
        assert_eq!(a.dependencies[2].kind, Kind::Dev);
        assert_eq!(
            a.resolved,
            [ResolvedDependency {
                extern_name: "core2".to_owned(),
                package: "futures-core".to_owned(),
                kinds: vec![Kind::Normal, Kind::Dev],
            }]
        );
        let example = a.targets_of("example").next().unwrap();
        assert_eq!(example.required_features, ["serde"]);
        assert_eq!(workspace.graph.len(), 2);
        assert_eq!(workspace.graph[1].rust_version.as_deref(), Some("1.36"));
    }

    #[test]
    fn published_crates_come_after_their_dependencies() {
        let package = |name: &str, deps: &[&str]| Package {
            name: name.to_owned(),
            publish: true,
            dependencies: deps
                .iter()
                .map(|dep| Dependency {
                    name: (*dep).to_owned(),
                    rename: None,
                    kind: Kind::Normal,
                    optional: false,
                    target: None,
                })
                .collect(),
            targets: vec![Target {
                name: name.to_owned(),
                kind: "lib".to_owned(),
                src_path: PathBuf::from("src/lib.rs"),
                required_features: Vec::new(),
            }],
            ..Package::default()
        };
        let workspace = Workspace {
            members: vec![
                package("a-umbrella", &["z-layer", "m-layer"]),
                package("m-layer", &["z-layer", "futures-core"]),
                package("z-layer", &[]),
            ],
            graph: Vec::new(),
        };
        let names: Vec<&str> = workspace.published().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["z-layer", "m-layer", "a-umbrella"]);
    }

    #[test]
    fn publish_false_is_an_empty_registry_list() {
        let mut json: Value = serde_json::from_str(METADATA).unwrap();
        json["packages"][0]["publish"] = serde_json::json!([]);
        let workspace = Workspace::from_json(&json).unwrap();
        assert!(!workspace.members[0].publish);
        assert_eq!(workspace.published().count(), 0);
    }
}
