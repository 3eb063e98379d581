//! Docs that cannot rot (issue 29):
//!
//! 1. every ```yaml block of README.md and docs/**/*.md is applied to the test API server, with
//!    the CRDs installed, as a server-side dry run: the schema must accept it, unless its info
//!    string is ```yaml bad-input, and then the API server must refuse it;
//! 2. every condition reason the code can set is a heading of docs/troubleshooting.md, and every
//!    reason heading there is one the code sets;
//! 3. every flag of `couchshare run` (asked of clap) appears in docs/install.md;
//! 4. every relative link of the docs reaches a file and, for a `#fragment`, a heading.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use support::k8s;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// README.md and every Markdown file under docs/, sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// A fenced ```yaml block: where it is, whether it is marked as bad input, and its text.
#[derive(Debug)]
struct Snippet {
    place: String,
    bad_input: bool,
    text: String,
}

/// The ```yaml blocks of a Markdown text (fences of three or more backticks, at any
/// indentation; the info string's first word is the language, `bad-input` a later word).
fn yaml_blocks(file: &str, text: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, bool, Vec<String>)> = None; // line, fence, indent, bad, body
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                let ticks = trimmed.chars().take_while(|c| *c == '`').count();
                if ticks >= 3 {
                    let info: Vec<&str> = trimmed[ticks..].split_whitespace().collect();
                    let yaml = matches!(info.first(), Some(&"yaml") | Some(&"yml"));
                    let bad = info.contains(&"bad-input");
                    open = Some((i + 1, "`".repeat(ticks), indent, bad, Vec::new()));
                    if !yaml {
                        // Not YAML: remember the fence only, to skip to its end.
                        if let Some(o) = open.as_mut() {
                            o.3 = false;
                            o.4.push("\0not-yaml".into());
                        }
                    }
                }
            }
            Some((start, fence, fence_indent, bad, body)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_end().chars().all(|c| c == '`') {
                    if body.first().map(String::as_str) != Some("\0not-yaml") {
                        out.push(Snippet { place: format!("{file}:{start}"), bad_input: *bad, text: body.join("\n") });
                    }
                    open = None;
                } else {
                    let cut = (*fence_indent).min(indent);
                    body.push(line[cut..].to_string());
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a code fence is never closed");
    out
}

#[test]
fn yaml_blocks_are_found_with_their_markers() {
    let text = "intro\n```yaml\nkind: A\n```\n\n```sh\nkubectl apply\n```\n  ```yaml bad-input\n  kind: B\n  ```\n````yaml\n```\nx: 1\n````\n";
    let blocks = yaml_blocks("t.md", text);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!((blocks[0].place.as_str(), blocks[0].bad_input, blocks[0].text.as_str()), ("t.md:2", false, "kind: A"));
    assert_eq!((blocks[1].place.as_str(), blocks[1].bad_input, blocks[1].text.as_str()), ("t.md:9", true, "kind: B"));
    assert_eq!(blocks[2].text, "```\nx: 1");
}

/// Creates a namespace a snippet names, unless it exists (namespaces are never deleted on the
/// test API server: without a controller-manager their deletion never finishes).
async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    if api.get_opt(name).await.expect("reading a namespace").is_some() {
        return;
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace object");
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Server-side apply of one object as a dry run: nothing is stored.
async fn dry_run(client: &kube::Client, ns: &str, obj: &DynamicObject) -> Result<DynamicObject, kube::Error> {
    let ar = k8s::api_resource(obj);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut params = PatchParams::apply("couchshare-docs").force();
    params.dry_run = true;
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj)).await
}

#[tokio::test]
async fn every_yaml_block_in_the_docs_is_accepted_by_the_api_server_or_refused_when_marked_bad() {
    const TEST: &str = "every_yaml_block_in_the_docs_is_accepted_by_the_api_server_or_refused_when_marked_bad";
    let Some(client) = k8s::client(TEST).await else { return };
    k8s::install_crds(&client).await;
    // A snippet without a namespace is applied in a fresh one of this run's own; one that
    // names its namespace gets that namespace created if it is missing.
    let default_ns = k8s::namespace(&client, "docs").await;
    let mut problems = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for file in markdown_files() {
        let name = file.strip_prefix(root()).unwrap_or(&file).display().to_string();
        for snippet in yaml_blocks(&name, &read(&file)) {
            let objects: Vec<DynamicObject> = {
                use serde::Deserialize;
                let mut objects = Vec::new();
                for doc in serde_yaml_ng::Deserializer::from_str(&snippet.text) {
                    match serde_yaml_ng::Value::deserialize(doc) {
                        Ok(v) if v.is_null() => {}
                        Ok(v) => match serde_yaml_ng::from_value::<DynamicObject>(v) {
                            Ok(o) if o.types.is_some() && o.metadata.name.is_some() => objects.push(o),
                            Ok(_) => problems.push(format!(
                                "{}: a document without apiVersion, kind or metadata.name",
                                snippet.place
                            )),
                            Err(e) => problems.push(format!("{}: not a Kubernetes object: {e}", snippet.place)),
                        },
                        Err(e) => problems.push(format!("{}: not YAML: {e}", snippet.place)),
                    }
                }
                objects
            };
            if objects.is_empty() {
                problems.push(format!("{}: no object in the block", snippet.place));
                continue;
            }
            let mut refusals = Vec::new();
            for obj in &objects {
                let ns = match obj.namespace() {
                    Some(ns) => {
                        ensure_namespace(&client, &ns).await;
                        ns
                    }
                    None => default_ns.clone(),
                };
                let what = format!("{} {}", obj.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?"), obj.name_any());
                match dry_run(&client, &ns, obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if snippet.bad_input && (e.code == 422 || e.code == 400) => {
                        refusals.push(format!("{what}: {}", e.message))
                    }
                    Err(e) if snippet.bad_input => problems
                        .push(format!("{} (bad-input): {what} failed otherwise than refused: {e}", snippet.place)),
                    Err(e) => problems.push(format!("{}: {what} refused: {e}", snippet.place)),
                }
            }
            if snippet.bad_input {
                if refusals.is_empty() {
                    problems.push(format!("{}: marked bad-input, yet the API server accepted it", snippet.place));
                } else {
                    refused += 1;
                    println!("{} (bad-input) refused as it should be: {}", snippet.place, refusals.join("; "));
                }
            } else {
                accepted += 1;
            }
        }
    }
    println!("docs: {accepted} YAML block(s) accepted, {refused} bad-input block(s) refused");
    assert!(problems.is_empty(), "YAML blocks in the docs:\n  {}", problems.join("\n  "));
    assert!(accepted >= 10, "only {accepted} YAML blocks found: is the extraction broken?");
    assert!(refused >= 1, "no bad-input block: the refusal side is untested");
}

/// The code of src/controller, src/plan and src/backup without its test modules and comment
/// lines: the files the reasons come from.
fn reason_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["controller", "plan", "backup"] {
        walk(&root().join("src").join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !(name == "tests.rs" || name.ends_with("_tests.rs"))
        })
        .map(|p| (p.display().to_string(), strip_tests_and_comments(&read(&p))))
        .collect()
}

fn strip_tests_and_comments(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn is_pascal(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
        && s.chars().any(|c| c.is_ascii_lowercase())
}

/// The condition reasons a piece of code sets: each `PascalCase` string literal
/// - in a `reason: ...` field (`reason: "X"`, `reason: "X".into()`, `reason: if c { "X" } else { "Y" }`),
/// - as the first argument of `NewCondition::ready("X", ...)`,
/// - in the body of a `fn reason(&self) -> &'static str` (the errors' reasons),
/// - in a `let (reason, ...) = ...;` statement (a reason and its message chosen together).
fn reasons_in(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // The byte ranges of every `fn reason(&self) -> &'static str { ... }` body.
    let mut bodies = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn reason(&self) -> &'static str") {
        let start = from + at;
        let open = start + code[start..].find('{').expect("a body");
        let mut depth = 0;
        let mut end = open;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        bodies.push(open..end);
        from = end.max(open + 1);
    }
    // Every string literal.
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            if bytes[j] == b'\\' {
                j += 1;
            }
            j += 1;
        }
        let literal = &code[start..j.min(code.len())];
        i = j + 1;
        if !is_pascal(literal) {
            continue;
        }
        let before = &code[..start - 1];
        let in_field = before.rfind("reason:").is_some_and(|at| {
            let between = &before[at + "reason:".len()..];
            !between.contains([',', ';', '(', ')'])
        });
        let in_ready = before.trim_end().ends_with("NewCondition::ready(");
        let in_body = bodies.iter().any(|r| r.contains(&start));
        let in_let = before.rfind("let (reason").is_some_and(|at| !before[at..].contains(';'));
        if in_field || in_ready || in_body || in_let {
            found.insert(literal.to_string());
        }
    }
    found
}

#[test]
fn the_reason_scanner_finds_each_form() {
    let code = r#"
        let a = NewCondition::ready("Connected", "ok");
        let b = NewCondition { type_: DEGRADED, status: true, reason: "SourcesFailing".into(), message };
        Degraded { status: false, reason: "SingleNode", message: "a single node".into() };
        ShareOutcome::Pending { reason: if failing { "ReplicationFailing" } else { "ReplicationPending" }, message }
        let (reason, message) = match &e {
            Some(e) => ("SourcesUnavailable", format!("listing: {e}")),
            None => ("Discovering", "listing".to_string()),
        };
        pub fn reason(&self) -> &'static str {
            match self { E::A => "StoreAccessDenied", E::B { .. } => "BackupCorrupt" }
        }
        let not_a_reason = "CouchServer";
        Note::normal("Created", format!("created"));
        tracing::info!(reason = error.reason(), "Waiting");
    "#;
    let found: Vec<String> = reasons_in(code).into_iter().collect();
    assert_eq!(
        found,
        [
            "BackupCorrupt",
            "Connected",
            "Discovering",
            "ReplicationFailing",
            "ReplicationPending",
            "SingleNode",
            "SourcesFailing",
            "SourcesUnavailable",
            "StoreAccessDenied"
        ]
    );
}

/// Every condition reason the operator's code can set.
fn condition_reasons() -> BTreeSet<String> {
    let all: BTreeSet<String> = reason_sources().iter().flat_map(|(_, code)| reasons_in(code)).collect();
    // One reason of each mechanism: if the code moves them elsewhere, the scanner must follow.
    for sentinel in [
        "Unreachable",           // runtime::Error::reason
        "ReferenceNotPermitted", // plan::tenancy::Refused::reason
        "AlreadyExists",         // plan::ownership::Refusal::reason
        "StoreAccessDenied",     // backup::BackupError::reason
        "Connected",             // NewCondition::ready
        "NodesMissing",          // plan::server's Degraded
        "ReplicationFailing",    // reason: if … else …
        "SourcesUnavailable",    // let (reason, message) = …
        "PasswordSynced",        // reason: "…".into()
        "Applied",
        "Scheduled",
        "Completed",
    ] {
        assert!(all.contains(sentinel), "the reason scanner no longer finds {sentinel}: found {all:?}");
    }
    all
}

/// The headings of a Markdown text, without their `#`s and backticks.
fn headings(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let title = line.trim_start_matches('#').trim();
            for word in title.split([' ', ',', '/']) {
                out.insert(word.trim_matches(|c: char| c == '`' || c == '(' || c == ')').to_string());
            }
        }
    }
    out
}

#[test]
fn every_condition_reason_in_the_code_has_a_heading_in_the_troubleshooting_page() {
    let page = root().join("docs/troubleshooting.md");
    let titled = headings(&read(&page));
    let reasons = condition_reasons();
    let missing: Vec<&String> = reasons.iter().filter(|r| !titled.contains(*r)).collect();
    println!(
        "{} condition reasons in the code, {} of them missing from docs/troubleshooting.md",
        reasons.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "condition reasons the code sets without a heading in docs/troubleshooting.md: {missing:?}"
    );
    // And the other way: a `## Reason` heading the code no longer sets is stale.
    let text = read(&page);
    let stale: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .filter(|h| is_pascal(h) && !reasons.contains(*h))
        .collect();
    assert!(stale.is_empty(), "headings of docs/troubleshooting.md that are no reason the code sets: {stale:?}");
}

#[test]
fn every_flag_of_couchshare_run_appears_in_the_install_page() {
    use clap::CommandFactory;
    let cli = couchshare::cli::Cli::command();
    let run = cli.find_subcommand("run").expect("a `run` subcommand");
    let mut flags: BTreeSet<String> = BTreeSet::new();
    // The subcommand's own flags, and the global ones it accepts.
    for arg in run.get_arguments().chain(cli.get_arguments().filter(|a| a.is_global_set())) {
        if let Some(long) = arg.get_long()
            && long != "help"
            && long != "version"
        {
            flags.insert(format!("--{long}"));
        }
    }
    assert!(flags.len() >= 10, "clap lists only {flags:?}");
    let page = read(&root().join("docs/install.md"));
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| {
            !page
                .match_indices(f.as_str())
                .any(|(at, _)| !page[at + f.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
        })
        .collect();
    println!("{} flags of couchshare run, {} missing from docs/install.md", flags.len(), missing.len());
    assert!(missing.is_empty(), "flags of `couchshare run` missing from docs/install.md: {missing:?}");
}

/// GitHub's anchor of a heading: lowercase, spaces to `-`, punctuation other than `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A Markdown text without its fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_reaches_a_file_and_heading() {
    let mut files = markdown_files();
    files.push(root().join("charts/couchshare/README.md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = prose(&read(file));
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.starts_with("http") || link.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() { file.clone() } else { file.parent().expect("a folder").join(path) };
            let name = file.strip_prefix(root()).unwrap_or(file).display().to_string();
            if !target.exists() {
                broken.push(format!("{name}: {link}: no such file"));
                continue;
            }
            if !fragment.is_empty() && target.extension().is_some_and(|e| e == "md") {
                let anchors: BTreeSet<String> = prose(&read(&target))
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .map(|l| anchor(l.trim_start_matches('#')))
                    .collect();
                if !anchors.contains(fragment) {
                    broken.push(format!("{name}: {link}: no such heading"));
                }
            }
        }
    }
    assert!(checked >= 50, "only {checked} links checked: is the extraction broken?");
    assert!(broken.is_empty(), "broken links in the docs:\n  {}", broken.join("\n  "));
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(anchor(" The chart on a real node: `tools/test-node`"), "the-chart-on-a-real-node-toolstest-node");
    assert_eq!(anchor("`couchshare run` and its flags"), "couchshare-run-and-its-flags");
    assert_eq!(anchor("CouchshareBackupMissed"), "couchsharebackupmissed");
}
