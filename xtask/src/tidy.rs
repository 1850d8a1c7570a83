//! `cargo xtask tidy`: the repository's conventions and the workspace's claims, as checks.
//!
//! Facts about packages come from `cargo metadata` ([`Workspace`]); the rules are small
//! functions over those facts or over a file's text, so the unit tests below can show each one
//! failing. [`check`] applies them all.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use crate::metadata::{Kind, Package, Workspace};

/// Inner attributes every library crate root must carry.
const REQUIRED_ROOT_ATTRIBUTES: [&str; 3] = [
    "#![forbid(unsafe_code)]",
    "#![deny(missing_docs)]",
    "#![doc(test(attr(deny(warnings))))]",
];

/// What a library crate may depend on, besides the `keyrunner*` crates.
const ALLOWED_DEPENDENCIES: [&str; 5] = [
    "futures-core",
    "pin-project-lite",
    "slab",
    "event-listener",
    "thiserror",
];

/// Runtimes a library may name only as optional dependencies (enabled by a feature).
const RUNTIMES: [&str; 2] = ["tokio", "smol"];

/// The library crates that may offer runtime features: the umbrella and the Redis backend.
const RUNTIME_CRATES: [&str; 2] = ["keyrunner", "keyrunner-redis"];

/// Directories whose `.rs` files must open with a `//!` line.
const DOCUMENTED_DIRS: [&str; 3] = ["crates", "xtask", "benches"];

/// The licence texts every published crate ships (the manifests say `MIT OR Apache-2.0`).
const LICENSE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

/// The README section that states the minimum supported Rust version.
const README_MSRV_HEADING: &str = "## Minimum supported Rust version";

/// One broken rule, printed as `path:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    path: PathBuf,
    line: usize,
    message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Collects problems with paths relative to the repository root.
struct Report<'a> {
    root: &'a Path,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, path: &Path, line: usize, message: impl Into<String>) {
        let path = path.strip_prefix(self.root).unwrap_or(path).to_path_buf();
        self.problems.push(Problem {
            path,
            line,
            message: message.into(),
        });
    }

    fn read(&mut self, path: &Path) -> Option<String> {
        match fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) => {
                self.add(path, 1, format!("cannot read: {error}"));
                None
            }
        }
    }
}

/// Applies every rule to the repository at `root`, described by `workspace`.
pub(crate) fn check(root: &Path, workspace: &Workspace) -> Vec<Problem> {
    let mut report = Report {
        root,
        problems: Vec::new(),
    };
    source_conventions(root, workspace, &mut report);
    for package in &workspace.members {
        dependency_rules(package, &mut report);
    }
    msrv_rules(root, workspace, &mut report);
    publishing_rules(root, workspace, &mut report);
    report.problems
}

/// Crate-root attributes, `//!` headers, and no `#[ignore]` or `#[should_panic]`.
fn source_conventions(root: &Path, workspace: &Workspace, report: &mut Report<'_>) {
    for package in workspace.published() {
        for lib in package.targets_of("lib") {
            if let Some(text) = report.read(&lib.src_path) {
                for attribute in missing_root_attributes(&text) {
                    report.add(
                        &lib.src_path,
                        1,
                        format!("library crate root lacks `{attribute}`"),
                    );
                }
            }
        }
    }
    for dir in DOCUMENTED_DIRS {
        let under_crates = dir == "crates";
        for file in rust_files(&root.join(dir)) {
            let Some(text) = report.read(&file) else {
                continue;
            };
            if !has_module_doc(&text) {
                report.add(
                    &file,
                    first_content_line(&text),
                    "file does not open with a `//!` doc line",
                );
            }
            if under_crates {
                for (line, attribute) in forbidden_attributes(&text) {
                    report.add(
                        &file,
                        line,
                        format!(
                            "`{attribute}` is not allowed: a test asserts today's behaviour \
                             (use `catch_unwind` to assert on a panic)"
                        ),
                    );
                }
            }
        }
    }
}

/// The allow-list of published libraries, and no unused or misplaced dependency anywhere.
fn dependency_rules(package: &Package, report: &mut Report<'_>) {
    let manifest = report.read(&package.manifest_path).unwrap_or_default();
    if package.is_published_library() {
        for (key, message) in dependency_problems(package, &manifest) {
            let line = declaration_line(&manifest, &key).unwrap_or(1);
            report.add(&package.manifest_path, line, message);
        }
    }

    let library_files = library_sources(package);
    let all_files = rust_files(&package.dir);
    let read_all = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .filter_map(|file| fs::read_to_string(file).ok())
            .collect()
    };
    let library_texts = read_all(&library_files);
    let all_texts = read_all(&all_files);
    let build_texts = read_all(
        &package
            .targets_of("custom-build")
            .map(|target| target.src_path.clone())
            .collect::<Vec<_>>(),
    );
    let used_in = |texts: &[String], docs: bool, name: &str| {
        texts.iter().any(|text| uses_crate(text, name, docs))
    };
    for dep in &package.resolved {
        let name = dep.extern_name.as_str();
        let message = if dep.kinds.contains(&Kind::Normal) {
            if used_in(&library_texts, false, name) {
                continue;
            }
            if used_in(&all_texts, true, name) {
                format!(
                    "dependency `{}` is used only by tests, examples or benches: \
                     make it a dev-dependency",
                    dep.package
                )
            } else {
                format!(
                    "dependency `{}` is never used (no `{name}::` or `use {name}` in the \
                     library's sources): remove it",
                    dep.package
                )
            }
        } else if dep.kinds.contains(&Kind::Build) {
            if used_in(&build_texts, false, name) {
                continue;
            }
            format!(
                "build-dependency `{}` is never used by the build script: remove it",
                dep.package
            )
        } else {
            if used_in(&all_texts, true, name) {
                continue;
            }
            format!(
                "dev-dependency `{}` is never used (no `{name}::` or `use {name}` in any \
                 source, test, example or bench): remove it",
                dep.package
            )
        };
        let line = declaration_line(&manifest, &dep.package).unwrap_or(1);
        report.add(&package.manifest_path, line, message);
    }
}

/// `rust-version`, clippy's `msrv` and the README agree, and no dependency needs a newer Rust.
fn msrv_rules(root: &Path, workspace: &Workspace, report: &mut Report<'_>) {
    let manifest = root.join("Cargo.toml");
    let Some(msrv) = workspace
        .published()
        .find_map(|package| package.rust_version.clone())
    else {
        report.add(
            &manifest,
            1,
            "no published crate declares `rust-version` (set it in [workspace.package])",
        );
        return;
    };
    for package in &workspace.members {
        if package.rust_version.as_deref() != Some(&msrv) {
            report.add(
                &package.manifest_path,
                1,
                format!(
                    "`rust-version` is {:?}, the workspace's is \"{msrv}\": \
                     use `rust-version.workspace = true`",
                    package.rust_version.as_deref().unwrap_or("unset")
                ),
            );
        }
    }

    let clippy = root.join("clippy.toml");
    if let Some(text) = report.read(&clippy) {
        match clippy_msrv(&text) {
            Some((_, value)) if value == msrv => {}
            Some((line, value)) => report.add(
                &clippy,
                line,
                format!("`msrv = \"{value}\"` differs from `rust-version = \"{msrv}\"`"),
            ),
            None => report.add(
                &clippy,
                1,
                format!(
                    "no `msrv = \"{msrv}\"`: clippy's `incompatible_msrv` lint checks std APIs \
                     against it"
                ),
            ),
        }
    }

    let readme = root.join("README.md");
    if let Some(text) = report.read(&readme)
        && let Some((line, message)) = readme_msrv_problem(&text, &msrv)
    {
        report.add(&readme, line, message);
    }

    for package in &workspace.graph {
        if let Some(needed) = &package.rust_version
            && version_key(needed) > version_key(&msrv)
        {
            report.add(
                &root.join("Cargo.lock"),
                1,
                format!(
                    "{} {} needs Rust {needed}, newer than `rust-version = \"{msrv}\"`",
                    package.name, package.version
                ),
            );
        }
    }
}

/// What crates.io and docs.rs need from each published crate, and the changelog.
fn publishing_rules(root: &Path, workspace: &Workspace, report: &mut Report<'_>) {
    let published: Vec<&Package> = workspace.published().collect();
    for package in &published {
        let lib_root = package
            .targets_of("lib")
            .next()
            .and_then(|lib| fs::read_to_string(&lib.src_path).ok())
            .unwrap_or_default();
        for message in package_problems(package, &lib_root) {
            report.add(&package.manifest_path, 1, message);
        }
        for file in LICENSE_FILES {
            if !package.dir.join(file).is_file() {
                report.add(
                    &package.manifest_path,
                    1,
                    format!(
                        "no `{file}` in the package: link it (`ln -s ../../{file} {}/`)",
                        package
                            .dir
                            .strip_prefix(root)
                            .unwrap_or(&package.dir)
                            .display()
                    ),
                );
            }
        }
        if let Some(readme) = &package.readme
            && !package.dir.join(readme).is_file()
        {
            report.add(
                &package.manifest_path,
                1,
                format!("`readme = \"{readme}\"` does not exist"),
            );
        }
    }
    for (a, b) in shared_keyword_lists(&published) {
        report.add(
            &b.manifest_path,
            1,
            format!(
                "`keywords` are the same as {}'s: pick words that fit this crate",
                a.name
            ),
        );
    }

    let changelog = root.join("CHANGELOG.md");
    let mut versions: Vec<&str> = published
        .iter()
        .map(|package| package.version.as_str())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    if let Some(text) = report.read(&changelog) {
        for message in changelog_problems(&text, &versions) {
            report.add(&changelog, 1, message);
        }
    }
}

/// Every `.rs` file under `dir`, sorted, skipping `target` directories and hidden ones.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The `.rs` files of a package's library and binaries: everything under the directory of
/// each `lib` or `bin` target's root file.
fn library_sources(package: &Package) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = package
        .targets
        .iter()
        .filter(|target| target.kind == "lib" || target.kind == "bin")
        .filter_map(|target| target.src_path.parent())
        .flat_map(rust_files)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The required crate-root attributes that `lib_rs` does not contain, each on
/// a line of its own (whitespace inside the attribute is ignored).
fn missing_root_attributes(lib_rs: &str) -> Vec<&'static str> {
    let present: Vec<String> = lib_rs.lines().map(without_whitespace).collect();
    REQUIRED_ROOT_ATTRIBUTES
        .into_iter()
        .filter(|attribute| !present.iter().any(|line| line == attribute))
        .collect()
}

/// Whether the first non-blank line is a `//!` doc line.
fn has_module_doc(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

/// The 1-based number of the first non-blank line (1 for an empty file).
fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|line| !line.trim().is_empty())
        .map_or(1, |index| index + 1)
}

/// `(line, attribute)` for every `#[ignore]` or `#[should_panic]`, including
/// through `cfg_attr`. Comment lines are skipped, so docs may name them.
fn forbidden_attributes(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = without_whitespace(line);
        if line.starts_with("//") {
            continue;
        }
        let cfg_attr = line.contains("#[cfg_attr(");
        for attribute in ["ignore", "should_panic"] {
            let direct = line.contains(&format!("#[{attribute}"));
            let conditional = cfg_attr
                && (line.contains(&format!(",{attribute})"))
                    || line.contains(&format!(",{attribute}=")));
            if direct || conditional {
                found.push((
                    index + 1,
                    if attribute == "ignore" {
                        "#[ignore]"
                    } else {
                        "#[should_panic]"
                    },
                ));
            }
        }
    }
    found
}

/// `(manifest key, message)` for each normal dependency of a published library that is
/// outside the allow-list and has no `# Reason:` comment line directly above it.
fn dependency_problems(package: &Package, manifest: &str) -> Vec<(String, String)> {
    let runtime_crate = RUNTIME_CRATES.contains(&package.name.as_str());
    let mut problems = Vec::new();
    for dep in &package.dependencies {
        let name = dep.name.as_str();
        let runtime = RUNTIMES.contains(&name);
        let allowed = dep.kind != Kind::Normal
            || ALLOWED_DEPENDENCIES.contains(&name)
            || name.starts_with("keyrunner")
            || (runtime_crate && runtime && dep.optional)
            || (name == "loom" && dep.target.as_deref() == Some("cfg(loom)"));
        if allowed || has_reason(manifest, dep.key()) {
            continue;
        }
        let message = if runtime_crate && runtime {
            format!(
                "`{name}` must be `optional = true` (enabled by a feature), \
                 or have a `# Reason:` comment line directly above it"
            )
        } else {
            format!(
                "`{name}` is not in the library dependency allow-list ({}, keyrunner-*); \
                 add a `# Reason:` comment line directly above it",
                ALLOWED_DEPENDENCIES.join(", ")
            )
        };
        problems.push((dep.key().to_owned(), message));
    }
    problems
}

/// Whether the line above `key`'s first declaration in a dependency table is a `# Reason:`
/// comment. Comments are the one thing `cargo metadata` cannot report, so this looks for the
/// declaring line only (`key = ...`, `key.field = ...`, `"key" = ...`, `[...dependencies.key]`).
fn has_reason(manifest: &str, key: &str) -> bool {
    let lines: Vec<&str> = manifest.lines().collect();
    declaration_line(manifest, key)
        .is_some_and(|line| line >= 2 && lines[line - 2].trim_start().starts_with("# Reason:"))
}

/// The 1-based line that first declares dependency `key` in any dependency table.
fn declaration_line(manifest: &str, key: &str) -> Option<usize> {
    let mut in_dependencies = false;
    for (index, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = without_whitespace(line)
                .replace(['"', '\''], "")
                .trim_matches(['[', ']'])
                .to_owned();
            in_dependencies = header.ends_with("dependencies");
            if header
                .strip_suffix(key)
                .is_some_and(|rest| rest.ends_with("dependencies."))
            {
                return Some(index + 1);
            }
            continue;
        }
        if !in_dependencies {
            continue;
        }
        let rest = line
            .strip_prefix(key)
            .or_else(|| line.strip_prefix(&format!("\"{key}\"")));
        if rest.is_some_and(|rest| rest.trim_start().starts_with(['=', '.'])) {
            return Some(index + 1);
        }
    }
    None
}

/// Whether `text` refers to crate `name` (`name::` or `use name`) outside plain comments.
/// With `docs`, doc comments count too: doctests use dev-dependencies.
fn uses_crate(text: &str, name: &str, docs: bool) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.lines().any(|line| {
        let line = line.trim_start();
        let doc = line.starts_with("///") || line.starts_with("//!");
        if line.starts_with("//") && !(docs && doc) {
            return false;
        }
        line.match_indices(name).any(|(at, _)| {
            let before = &line[..at];
            let after = &line[at + name.len()..];
            if before.chars().next_back().is_some_and(is_ident)
                || after.chars().next().is_some_and(is_ident)
            {
                return false;
            }
            let before = before.trim_end();
            after.starts_with("::")
                || before.ends_with("use")
                || before.ends_with("extern crate")
                || before.ends_with("use ::")
        })
    })
}

/// The line and value of `msrv = "..."` in `clippy.toml`.
fn clippy_msrv(text: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(index, line)| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "msrv").then(|| (index + 1, unquote(value).to_owned()))
    })
}

/// What is wrong with the README's MSRV section, if anything: it must exist, name `msrv`, and
/// name no other Rust version.
fn readme_msrv_problem(readme: &str, msrv: &str) -> Option<(usize, String)> {
    let lines: Vec<&str> = readme.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|line| line.trim() == README_MSRV_HEADING)
    else {
        return Some((
            1,
            format!("no `{README_MSRV_HEADING}` section stating Rust {msrv}"),
        ));
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with("## "))
        .map_or(lines.len(), |offset| start + 1 + offset);
    let mut named = false;
    for (index, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        for version in rust_versions(line) {
            if version_key(&version) == version_key(msrv) {
                named = true;
            } else {
                return Some((
                    index + 1,
                    format!("names Rust {version}, but `rust-version` is \"{msrv}\""),
                ));
            }
        }
    }
    (!named).then(|| (start + 1, format!("the section does not name Rust {msrv}")))
}

/// Every `1.N` or `1.N.M` in `line` that is not part of a longer number.
fn rust_versions(line: &str) -> Vec<String> {
    let bytes = line.as_bytes();
    let mut found = Vec::new();
    let mut index = 0;
    while let Some(offset) = line[index..].find("1.") {
        let start = index + offset;
        index = start + 2;
        if start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
            continue;
        }
        let end = line[start..]
            .char_indices()
            .skip(2)
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(line.len(), |(at, _)| start + at);
        let version = line[start..end].trim_end_matches('.');
        if version.len() > 2 {
            found.push(version.to_owned());
        }
        index = end.max(index);
    }
    found
}

/// `1.88` and `1.88.0` compare equal; missing parts are zero.
fn version_key(version: &str) -> [u64; 3] {
    let mut key = [0; 3];
    for (slot, part) in key.iter_mut().zip(version.split('.')) {
        *slot = part.trim().parse().unwrap_or(0);
    }
    key
}

/// The manifest fields crates.io and docs.rs need, and the crate's own examples.
fn package_problems(package: &Package, lib_root: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if package.description.as_deref().is_none_or(str::is_empty) {
        problems.push("no `description`".to_owned());
    }
    if package.license.is_none() {
        problems.push("no `license` (use `license.workspace = true`)".to_owned());
    }
    match &package.readme {
        None => problems.push("no `readme`: give the crate a README.md of its own".to_owned()),
        Some(readme) if readme.contains("..") => problems.push(format!(
            "`readme = \"{readme}\"` lies outside the crate: give it a README.md of its own"
        )),
        Some(_) => {}
    }
    if package.keywords.is_empty() || package.keywords.len() > 5 {
        problems.push(format!(
            "{} keywords: crates.io takes one to five",
            package.keywords.len()
        ));
    }
    for keyword in &package.keywords {
        let valid = keyword.len() <= 20
            && keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+".contains(c));
        if !valid {
            problems.push(format!(
                "keyword `{keyword}` is not valid on crates.io (ASCII alphanumerics, `-`, `_`, \
                 `+`, at most 20 characters)"
            ));
        }
    }
    if package.categories.is_empty() || package.categories.len() > 5 {
        problems.push(format!(
            "{} categories: crates.io takes one to five",
            package.categories.len()
        ));
    }
    if !package.features.is_empty() {
        let all_features = package
            .docs_rs
            .as_ref()
            .is_some_and(|docs_rs| docs_rs["all-features"] == true);
        if !all_features {
            problems.push(format!(
                "features {} but no `[package.metadata.docs.rs] all-features = true`: \
                 docs.rs would document the crate without them",
                package.features.join(", ")
            ));
        }
    }
    let cfg_docsrs = package.docs_rs.as_ref().is_some_and(|docs_rs| {
        docs_rs["rustdoc-args"]
            .as_array()
            .is_some_and(|args| args.windows(2).any(|pair| pair == ["--cfg", "docsrs"]))
    });
    if lib_root.contains("docsrs") && !cfg_docsrs {
        problems.push(
            "the crate root uses `cfg(docsrs)` but `[package.metadata.docs.rs]` lacks \
             `rustdoc-args = [\"--cfg\", \"docsrs\"]`"
                .to_owned(),
        );
    }
    if package.targets_of("example").next().is_none() {
        problems.push("no example: add a small runnable one under examples/".to_owned());
    }
    problems
}

/// Pairs of published crates with the same keywords (in any order): a copied list.
fn shared_keyword_lists<'a>(packages: &[&'a Package]) -> Vec<(&'a Package, &'a Package)> {
    let sorted = |package: &Package| {
        let mut keywords = package.keywords.clone();
        keywords.sort();
        keywords
    };
    let mut pairs = Vec::new();
    for (index, a) in packages.iter().enumerate() {
        for b in &packages[index + 1..] {
            if !a.keywords.is_empty() && sorted(a) == sorted(b) {
                pairs.push((*a, *b));
            }
        }
    }
    pairs
}

/// What the changelog lacks: an `## [Unreleased]` section and a section per published version.
fn changelog_problems(changelog: &str, versions: &[&str]) -> Vec<String> {
    let headings: Vec<&str> = changelog
        .lines()
        .filter_map(|line| line.strip_prefix("## ["))
        .filter_map(|rest| rest.split_once(']').map(|(name, _)| name))
        .collect();
    let mut problems = Vec::new();
    if !headings.contains(&"Unreleased") {
        problems.push("no `## [Unreleased]` section".to_owned());
    }
    for version in versions {
        if !headings.contains(version) {
            problems.push(format!(
                "no `## [{version}]` section for the crates' version"
            ));
        }
    }
    problems
}

fn unquote(text: &str) -> &str {
    text.trim().trim_matches(|c| c == '"' || c == '\'').trim()
}

fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Dependency, Target};

    const GOOD_ROOT: &str = "\
//! A layer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
";

    fn dep(name: &str, kind: Kind, optional: bool, target: Option<&str>) -> Dependency {
        Dependency {
            name: name.to_owned(),
            rename: None,
            kind,
            optional,
            target: target.map(str::to_owned),
        }
    }

    /// A published library with every field crates.io and docs.rs need.
    fn publishable() -> Package {
        Package {
            name: "keyrunner-subject".to_owned(),
            version: "0.1.0".to_owned(),
            publish: true,
            rust_version: Some("1.88".to_owned()),
            description: Some("A subject.".to_owned()),
            license: Some("MIT OR Apache-2.0".to_owned()),
            readme: Some("README.md".to_owned()),
            keywords: vec!["observer".to_owned(), "multicast".to_owned()],
            categories: vec!["concurrency".to_owned()],
            targets: vec![
                Target {
                    name: "keyrunner_subject".to_owned(),
                    kind: "lib".to_owned(),
                    src_path: PathBuf::from("src/lib.rs"),
                    required_features: Vec::new(),
                },
                Target {
                    name: "listen".to_owned(),
                    kind: "example".to_owned(),
                    src_path: PathBuf::from("examples/listen.rs"),
                    required_features: Vec::new(),
                },
            ],
            ..Package::default()
        }
    }

    #[test]
    fn complete_crate_root_passes() {
        assert_eq!(missing_root_attributes(GOOD_ROOT), Vec::<&str>::new());
    }

    #[test]
    fn crate_root_missing_attributes_are_named() {
        let root = "//! A layer.\n#![deny(missing_docs)]\n// #![forbid(unsafe_code)]\n";
        assert_eq!(
            missing_root_attributes(root),
            [
                "#![forbid(unsafe_code)]",
                "#![doc(test(attr(deny(warnings))))]"
            ]
        );
    }

    #[test]
    fn module_doc_must_come_first() {
        assert!(has_module_doc("//! Docs.\nfn main() {}\n"));
        assert!(has_module_doc("\n\n  //! Docs after blank lines.\n"));
        assert!(!has_module_doc("#![cfg(loom)]\n//! Docs too late.\n"));
        assert!(!has_module_doc(
            "/// An item doc, not a module doc.\nfn f() {}\n"
        ));
        assert!(!has_module_doc("// A plain comment.\n"));
        assert!(!has_module_doc(""));
        assert_eq!(first_content_line("\n\nfn f() {}\n"), 3);
    }

    #[test]
    fn ignore_and_should_panic_are_found_with_line_numbers() {
        let text = "\
//! Tests.
/// Never write #[ignore] here.
#[test]
#[ignore = \"slow\"]
fn a() {}
#[test] #[should_panic(expected = \"boom\")]
fn b() {}
#[cfg_attr(miri, ignore)]
fn c() {}
";
        assert_eq!(
            forbidden_attributes(text),
            [(4, "#[ignore]"), (6, "#[should_panic]"), (8, "#[ignore]")]
        );
        assert_eq!(forbidden_attributes("#[test]\nfn ok() {}\n"), []);
    }

    #[test]
    fn allowed_dependencies_pass() {
        let mut package = publishable();
        package.dependencies = vec![
            dep("keyrunner-resource-registry", Kind::Normal, false, None),
            dep("futures-core", Kind::Normal, false, None),
            dep("loom", Kind::Normal, false, Some("cfg(loom)")),
            dep("event-listener", Kind::Normal, false, Some("cfg(loom)")),
            dep("tokio", Kind::Dev, false, None),
        ];
        assert_eq!(dependency_problems(&package, ""), []);
    }

    #[test]
    fn unlisted_dependency_fails_unless_a_reason_is_given() {
        let manifest = "\
[dependencies]
parking_lot = \"0.12\"
# Reason: needed for the fair unlock this layer promises.
crossbeam-utils = \"0.8\"
# Reason: this comment is not directly above the entry.

once_cell = \"1\"

[target.'cfg(unix)'.dependencies]
loom = \"0.7\"
";
        let mut package = publishable();
        package.dependencies = vec![
            dep("parking_lot", Kind::Normal, false, None),
            dep("crossbeam-utils", Kind::Normal, false, None),
            dep("once_cell", Kind::Normal, false, None),
            dep("loom", Kind::Normal, false, Some("cfg(unix)")),
        ];
        let problems = dependency_problems(&package, manifest);
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["parking_lot", "once_cell", "loom"]);
        assert!(
            problems[0]
                .1
                .contains("`parking_lot` is not in the library")
        );
        let lines: Vec<Option<usize>> = keys
            .iter()
            .map(|key| declaration_line(manifest, key))
            .collect();
        assert_eq!(lines, [Some(2), Some(7), Some(10)]);
    }

    #[test]
    fn runtimes_must_be_optional_and_only_in_runtime_crates() {
        let mut package = publishable();
        package.name = "keyrunner".to_owned();
        package.dependencies = vec![
            dep("tokio", Kind::Normal, true, None),
            dep("smol", Kind::Normal, false, None),
        ];
        let problems = dependency_problems(&package, "");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("`smol` must be `optional = true`"));
        // Outside the runtime crates, even an optional runtime is refused.
        package.name = "keyrunner-pub-sub".to_owned();
        assert_eq!(dependency_problems(&package, "").len(), 2);
    }

    #[test]
    fn declarations_are_found_in_every_form() {
        let manifest = "\
[package]
name = \"slab\"

[dependencies]
slab = \"0.4\"
thiserror.workspace = true
\"quoted\" = { version = \"1\" }

[dependencies.smol]
workspace = true

[target.'cfg(loom)'.dependencies]
loom = { workspace = true }

[dev-dependencies]
proptest = \"1\"
";
        let line = |key| declaration_line(manifest, key);
        assert_eq!(line("slab"), Some(5));
        assert_eq!(line("thiserror"), Some(6));
        assert_eq!(line("quoted"), Some(7));
        assert_eq!(line("smol"), Some(9));
        assert_eq!(line("loom"), Some(13));
        assert_eq!(line("proptest"), Some(16));
        assert_eq!(line("tokio"), None);
        assert!(!has_reason(manifest, "slab"));
    }

    #[test]
    fn crate_use_is_found_in_paths_and_use_items_not_in_comments_or_longer_names() {
        assert!(uses_crate(
            "use futures_core::Stream;",
            "futures_core",
            false
        ));
        assert!(uses_crate(
            "pub use keyrunner_subject as subject;",
            "keyrunner_subject",
            false
        ));
        assert!(uses_crate("#[tokio::main]", "tokio", false));
        assert!(uses_crate("    x: loom::sync::Arc<u8>,", "loom", false));
        assert!(uses_crate("extern crate slab;", "slab", false));
        assert!(!uses_crate(
            "// futures_core::Stream",
            "futures_core",
            false
        ));
        assert!(!uses_crate("use tokio_util::sync;", "tokio", false));
        assert!(!uses_crate("let tokio = 1; tokio.max(2);", "tokio", false));
        assert!(!uses_crate("use my_tokio::x;", "tokio", false));
        // Doctests use dev-dependencies: doc lines count when asked.
        let doc = "/// # futures::executor::block_on(async {});";
        assert!(!uses_crate(doc, "futures", false));
        assert!(uses_crate(doc, "futures", true));
    }

    #[test]
    fn clippy_msrv_is_read_by_key() {
        let text = "# Tests may unwrap.\nallow-unwrap-in-tests = true\nmsrv = \"1.88\"\n";
        assert_eq!(clippy_msrv(text), Some((3, "1.88".to_owned())));
        assert_eq!(clippy_msrv("avoid-breaking-exported-api = false\n"), None);
    }

    #[test]
    fn readme_must_name_the_msrv_and_no_other_version() {
        let good = "# x\n\n## Minimum supported Rust version\n\nRust 1.88 (`rust-version`).\n\n\
                    ## License\n\nSince 1.0.\n";
        assert_eq!(readme_msrv_problem(good, "1.88"), None);
        assert_eq!(readme_msrv_problem(good, "1.88.0"), None);
        let stale = good.replace("1.88", "1.85");
        assert_eq!(
            readme_msrv_problem(&stale, "1.88"),
            Some((
                5,
                "names Rust 1.85, but `rust-version` is \"1.88\"".to_owned()
            ))
        );
        let silent = "## Minimum supported Rust version\n\nThe latest stable.\n";
        assert_eq!(readme_msrv_problem(silent, "1.88").unwrap().0, 1);
        assert_eq!(readme_msrv_problem("# x\n", "1.88").unwrap().0, 1);
    }

    #[test]
    fn versions_are_found_and_compared_numerically() {
        assert_eq!(
            rust_versions("Rust 1.88, or 1.90.1. Not 21.5 nor v0.1.0"),
            ["1.88", "1.90.1"]
        );
        assert!(version_key("1.100") > version_key("1.88"));
        assert_eq!(version_key("1.88"), version_key("1.88.0"));
    }

    #[test]
    fn a_publishable_package_passes_and_each_missing_field_is_named() {
        assert_eq!(
            package_problems(&publishable(), GOOD_ROOT),
            Vec::<String>::new()
        );
        let docsrs_root = "#![cfg_attr(docsrs, feature(doc_cfg))]\n";
        assert_eq!(package_problems(&publishable(), docsrs_root).len(), 1);
        let mut bare = publishable();
        bare.description = None;
        bare.license = None;
        bare.readme = Some("../../README.md".to_owned());
        bare.keywords = vec!["not a keyword".to_owned()];
        bare.categories = Vec::new();
        bare.targets.truncate(1);
        let problems = package_problems(&bare, GOOD_ROOT);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[2].contains("lies outside the crate"));
    }

    #[test]
    fn features_need_docs_rs_metadata() {
        let mut package = publishable();
        package.features = vec!["serde".to_owned()];
        let root = "#![cfg_attr(docsrs, feature(doc_cfg))]\n";
        assert_eq!(package_problems(&package, root).len(), 2);
        package.docs_rs = Some(serde_json::json!({"all-features": true}));
        assert_eq!(package_problems(&package, root).len(), 1);
        package.docs_rs = Some(serde_json::json!({
            "all-features": true,
            "rustdoc-args": ["--cfg", "docsrs"],
        }));
        assert_eq!(package_problems(&package, root), Vec::<String>::new());
    }

    #[test]
    fn copied_keyword_lists_are_found_in_any_order() {
        let a = publishable();
        let mut b = publishable();
        b.name = "keyrunner-pub-sub".to_owned();
        b.keywords.reverse();
        let mut c = publishable();
        c.keywords = vec!["registry".to_owned()];
        let pairs = shared_keyword_lists(&[&a, &b, &c]);
        let names: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(x, y)| (x.name.as_str(), y.name.as_str()))
            .collect();
        assert_eq!(names, [("keyrunner-subject", "keyrunner-pub-sub")]);
    }

    #[test]
    fn changelog_needs_unreleased_and_each_version() {
        let good = "# Changelog\n\n## [Unreleased]\n\n### Added\n\n## [0.1.0] - 2026-11-26\n";
        assert_eq!(changelog_problems(good, &["0.1.0"]), Vec::<String>::new());
        assert_eq!(
            changelog_problems("# Changelog\n## [0.1.0]\n", &["0.1.0", "0.2.0"]),
            [
                "no `## [Unreleased]` section",
                "no `## [0.2.0]` section for the crates' version"
            ]
        );
    }

    #[test]
    fn problems_print_as_path_line_message() {
        let problem = Problem {
            path: PathBuf::from("crates/subject/src/lib.rs"),
            line: 1,
            message: "library crate root lacks `#![deny(missing_docs)]`".to_owned(),
        };
        assert_eq!(
            problem.to_string(),
            "crates/subject/src/lib.rs:1: library crate root lacks `#![deny(missing_docs)]`"
        );
    }
}
