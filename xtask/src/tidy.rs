//! `cargo xtask tidy`: the repository's conventions, as checks.
//!
//! Each rule is a small function over a file's text, so the unit tests below
//! can show it failing; [`check`] walks the tree and applies them.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

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

/// Runtimes the umbrella crate may name, each only as an optional dependency.
const UMBRELLA_RUNTIMES: [&str; 2] = ["tokio", "smol"];

/// The package name of the umbrella crate.
const UMBRELLA: &str = "keyrunner";

/// Directories whose `.rs` files must open with a `//!` line.
const DOCUMENTED_DIRS: [&str; 3] = ["crates", "xtask", "benches"];

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

/// Applies every rule to the repository at `root`.
pub(crate) fn check(root: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |path: &Path, line: usize, message: String| {
        let path = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        problems.push(Problem {
            path,
            line,
            message,
        });
    };

    for dir in crate_dirs(root) {
        let lib = dir.join("src").join("lib.rs");
        if let Some(text) = read(&lib, &mut report) {
            for attribute in missing_root_attributes(&text) {
                report(&lib, 1, format!("library crate root lacks `{attribute}`"));
            }
        }
        let manifest = dir.join("Cargo.toml");
        if let Some(text) = read(&manifest, &mut report) {
            let umbrella = package_name(&text).as_deref() == Some(UMBRELLA);
            for (line, message) in dependency_problems(&text, umbrella) {
                report(&manifest, line, message);
            }
        }
    }

    for dir in DOCUMENTED_DIRS {
        let under_crates = dir == "crates";
        for file in rust_files(&root.join(dir)) {
            let Some(text) = read(&file, &mut report) else {
                continue;
            };
            if !has_module_doc(&text) {
                report(
                    &file,
                    first_content_line(&text),
                    "file does not open with a `//!` doc line".to_owned(),
                );
            }
            if under_crates {
                for (line, attribute) in forbidden_attributes(&text) {
                    report(
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
    problems
}

/// The directories `crates/*` that hold a `Cargo.toml`, sorted.
pub(crate) fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Every `.rs` file under `dir`, sorted, skipping `target` directories and
/// hidden ones.
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

fn read(path: &Path, report: &mut impl FnMut(&Path, usize, String)) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) => {
            report(path, 1, format!("cannot read: {error}"));
            None
        }
    }
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

/// The `name = "..."` of a manifest's `[package]` table.
pub(crate) fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = strip_comment(line).trim();
        if let Some(header) = table_header(line) {
            in_package = header == "package";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(unquote(value.trim()).to_owned());
        }
    }
    None
}

/// One entry of a `[dependencies]` table (or of a `[target.*.dependencies]`
/// table; `target` names the platform then).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dependency {
    name: String,
    /// 1-based line where the entry starts.
    line: usize,
    optional: bool,
    /// A `# Reason:` comment line sits directly above the entry.
    has_reason: bool,
    /// `Some("cfg(loom)")` for `[target.'cfg(loom)'.dependencies]`.
    target: Option<String>,
}

/// The normal dependencies a manifest declares, in every form cargo accepts:
/// `name = "1"`, `name = { ... }`, dotted keys (`name.workspace = true`,
/// `name.optional = true`, merged into one entry) and `[dependencies.name]`
/// sub-tables, plus the same under `[target.<platform>.dependencies]`.
/// Dev- and build-dependencies are not read.
fn dependencies(manifest: &str) -> Vec<Dependency> {
    /// Where the parser is: outside any dependency table, in a table of
    /// entries, or in one entry's own `[dependencies.name]` sub-table.
    enum Section {
        Other,
        Table { target: Option<String> },
        Entry { index: usize },
    }

    let lines: Vec<&str> = manifest.lines().collect();
    let reason_above =
        |index: usize| index > 0 && lines[index - 1].trim_start().starts_with("# Reason:");
    let mut found: Vec<Dependency> = Vec::new();
    let mut section = Section::Other;
    let mut depth = 0_i32;
    let mut continued: Option<usize> = None;

    for (index, raw) in lines.iter().enumerate() {
        let line = strip_comment(raw).trim();
        if depth > 0 {
            // A value (array or inline table) spanning several lines.
            if let Some(entry) = continued
                && without_whitespace(line).contains("optional=true")
            {
                found[entry].optional = true;
            }
            depth += bracket_balance(line);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(header) = table_header(line) {
            section = match dependency_table(&header) {
                Some((target, None)) => Section::Table { target },
                Some((target, Some(name))) => {
                    found.push(Dependency {
                        name,
                        line: index + 1,
                        optional: false,
                        has_reason: reason_above(index),
                        target,
                    });
                    Section::Entry {
                        index: found.len() - 1,
                    }
                }
                None => Section::Other,
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = without_whitespace(key);
        let value = value.trim();
        depth = bracket_balance(value);
        continued = None;
        match &section {
            Section::Other => {}
            Section::Entry { index } => {
                if key == "optional" && value == "true" {
                    found[*index].optional = true;
                }
            }
            Section::Table { target } => {
                let (name, field) = match key.split_once('.') {
                    Some((name, field)) => (unquote(name), Some(unquote(field))),
                    None => (unquote(&key), None),
                };
                let optional = match field {
                    Some(field) => field == "optional" && value == "true",
                    None => without_whitespace(value).contains("optional=true"),
                };
                let existing = found
                    .iter()
                    .position(|dep| dep.name == name && dep.target == *target);
                let entry = match existing {
                    Some(entry) => entry,
                    None => {
                        found.push(Dependency {
                            name: name.to_owned(),
                            line: index + 1,
                            optional: false,
                            has_reason: reason_above(index),
                            target: target.clone(),
                        });
                        found.len() - 1
                    }
                };
                found[entry].optional |= optional;
                continued = Some(entry);
            }
        }
    }
    found
}

/// For a table header naming a dependency table: its target platform (if
/// any) and, for a `[dependencies.name]` sub-table, the dependency's name.
fn dependency_table(header: &str) -> Option<(Option<String>, Option<String>)> {
    let (target, rest) = match header.strip_prefix("target.") {
        Some(rest) => {
            let split = rest.rfind(".dependencies")?;
            let (platform, rest) = rest.split_at(split);
            (Some(unquote(platform).to_owned()), &rest[1..])
        }
        None => (None, header),
    };
    if rest == "dependencies" {
        Some((target, None))
    } else {
        let name = rest.strip_prefix("dependencies.")?;
        Some((target, Some(unquote(name).to_owned())))
    }
}

/// `(line, message)` for each dependency outside the library allow-list that
/// has no `# Reason:` comment directly above it.
fn dependency_problems(manifest: &str, umbrella: bool) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    for dep in dependencies(manifest) {
        let name = dep.name.as_str();
        let allowed = ALLOWED_DEPENDENCIES.contains(&name)
            || name.starts_with("keyrunner")
            || (umbrella && UMBRELLA_RUNTIMES.contains(&name) && dep.optional)
            || (name == "loom" && dep.target.as_deref() == Some("cfg(loom)"));
        if allowed || dep.has_reason {
            continue;
        }
        let message = if umbrella && UMBRELLA_RUNTIMES.contains(&name) {
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
        problems.push((dep.line, message));
    }
    problems
}

/// The header of a `[table]` or `[[array]]` line, whitespace removed.
fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(inner);
    Some(without_whitespace(inner))
}

/// The line up to a `#` that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..index],
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            _ => {}
        }
    }
    line
}

/// Opening minus closing `[`/`{` brackets outside strings.
fn bracket_balance(text: &str) -> i32 {
    let mut quote = None;
    let mut balance = 0;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '[' | '{') => balance += 1,
            (None, ']' | '}') => balance -= 1,
            _ => {}
        }
    }
    balance
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

    const GOOD_ROOT: &str = "\
//! A layer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
";

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
    fn package_name_is_read_from_the_package_table_only() {
        let manifest = "\
[package]
name = \"keyrunner-subject\" # the subject layer
version.workspace = true

[[bin]]
name = \"other\"
";
        assert_eq!(package_name(manifest).as_deref(), Some("keyrunner-subject"));
        assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
    }

    #[test]
    fn dependency_table_parser_reads_every_form() {
        let manifest = "\
[package]
name = \"demo\"

[dependencies]
slab = \"0.4\"
futures-core = { workspace = true }
thiserror.workspace = true
tokio.workspace = true
tokio.optional = true
# Reason: a comment above the entry.
\"quoted\" = { version = \"1\", features = [
    \"a\",
], optional = true }
serde = { version = \"1\" } # trailing comment with optional = true

[dependencies.smol]
workspace = true
optional = true

[target.'cfg(loom)'.dependencies]
loom = { workspace = true }

[dev-dependencies]
proptest = \"1\"

[target.'cfg(unix)'.dev-dependencies]
libc = \"0.2\"
";
        let deps = dependencies(manifest);
        let summary: Vec<(&str, usize, bool, bool, Option<&str>)> = deps
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.line,
                    d.optional,
                    d.has_reason,
                    d.target.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("slab", 5, false, false, None),
                ("futures-core", 6, false, false, None),
                ("thiserror", 7, false, false, None),
                ("tokio", 8, true, false, None),
                ("quoted", 11, true, true, None),
                ("serde", 14, false, false, None),
                ("smol", 16, true, false, None),
                ("loom", 21, false, false, Some("cfg(loom)")),
            ]
        );
    }

    #[test]
    fn library_crate_with_allowed_dependencies_passes() {
        let manifest = "\
[package]
name = \"keyrunner-subject\"

[dependencies]
keyrunner-resource-registry = { workspace = true }
futures-core.workspace = true
event-listener = { workspace = true }

[target.'cfg(loom)'.dependencies]
loom = { workspace = true }
event-listener = { workspace = true, features = [\"loom\"] }

[dev-dependencies]
tokio = { workspace = true }
";
        assert_eq!(dependency_problems(manifest, false), []);
    }

    #[test]
    fn unlisted_dependency_fails_unless_a_reason_is_given() {
        let manifest = "\
[dependencies]
slab = \"0.4\"
parking_lot = \"0.12\"
# Reason: needed for the fair unlock this layer promises.
crossbeam-utils = \"0.8\"
# Reason: this comment is not directly above the entry.

once_cell = \"1\"

[target.'cfg(unix)'.dependencies]
loom = \"0.7\"
";
        let problems = dependency_problems(manifest, false);
        let lines: Vec<usize> = problems.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [3, 8, 11]);
        assert!(
            problems[0]
                .1
                .contains("`parking_lot` is not in the library")
        );
    }

    #[test]
    fn umbrella_runtimes_must_be_optional() {
        let manifest = "\
[dependencies]
keyrunner-task-runner-repository = { workspace = true }
tokio = { workspace = true, optional = true, features = [\"rt\"] }
smol = { workspace = true }
";
        let problems = dependency_problems(manifest, true);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 4);
        assert!(problems[0].1.contains("`smol` must be `optional = true`"));
        // Outside the umbrella, even an optional runtime is refused.
        let problems = dependency_problems(manifest, false);
        let lines: Vec<usize> = problems.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [3, 4]);
    }

    #[test]
    fn comments_are_stripped_outside_strings_only() {
        assert_eq!(strip_comment("a = \"#1\" # note"), "a = \"#1\" ");
        assert_eq!(strip_comment("# whole line"), "");
        assert_eq!(bracket_balance("{ a = [\"]\", 1"), 2);
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
