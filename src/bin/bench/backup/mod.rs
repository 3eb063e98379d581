//! `--backup`: the operator's backup library against IBM's couchbackup/couchrestore on the
//! same database of the same CouchDB, in the same run (issue 28). Figures are printed as
//! ratios couchshare / couchbackup, never asserted.
//!
//! 1. Fill a database with `--backup-docs` documents ([`fill`]).
//! 2. Back it up with `couchshare::backup::back_up` into the S3 bucket (`COUCHSHARE_S3_*`), in
//!    a child process of this binary (`--backup-child backup`), timed, with its peak RSS.
//! 3. Back it up with `couchbackup --attachments` into a file, timed, with its peak RSS.
//! 4. Restore each into a new empty database: `couchshare::backup::restore` (a child again;
//!    it checks every object's sha256 first, as the operator's restore does, and that first
//!    pass alone is timed too, `--backup-child verify`) and
//!    `couchrestore --attachments`; compare `doc_count` and `doc_del_count` with the source,
//!    and a few documents (every leaf, with history and attachment bytes) with the source's.
//! 5. An incremental backup after 1 % of the documents changed (`back_up_since` the last full
//!    backup's sequence, in a child), against the full backup's time.
//!
//! Steps 2 to 4 run `--backup-rounds` times, the order of the two tools alternating. Each
//! child's CPU time is taken too, and CouchDB's over the same span.
//!
//! The databases (`bench-backup-{tag}-…`) and the couchbackup file are removed however the
//! bench ends (Ctrl-C included: the child processes are killed first). The S3 objects stay in
//! the bucket, which `tools/bench --backup` throws away with its S3 server.

mod child;
mod fill;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use couchshare::backup::Manifest;
use couchshare::couch::{CouchClient, CreateDatabase, DatabaseInfo};
use serde_json::Value;

pub use child::child;
use child::{Job, Measured};
use fill::Filled;
use report::{Check, Row};

use crate::Args;
use crate::pin;

/// The run's names.
struct Names {
    tag: String,
}

impl Names {
    fn prefix(&self) -> String {
        format!("bench-backup-{}-", self.tag)
    }
    fn db(&self, what: &str) -> String {
        format!("{}{what}", self.prefix())
    }
    /// The backup's folder in the bucket.
    fn s3_prefix(&self) -> String {
        format!("bench-backup-{}/src", self.tag)
    }
}

/// What the run shares.
struct Ctx<'a> {
    args: &'a Args,
    couch: CouchClient,
    couch_url: String,
    user: String,
    password: String,
    names: Names,
    /// The couchbackup folder.
    tools: PathBuf,
    /// Temporary files: the couchbackup file, the children's logs.
    work: PathBuf,
    setup: String,
}

/// `--backup`.
pub async fn main(args: &Args) -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).with_context(|| name.to_string());
    let (couch_url, user, password) = (var("COUCHDB_URL")?, var("COUCHDB_USER")?, var("COUCHDB_PASSWORD")?);
    // Filling writes batches of 1,000 documents: more than the default 30 s on a busy server.
    let couch = child::couch_from_env(Duration::from_secs(300))?;
    let tools = args.couchbackup_bin.clone().context("--couchbackup-bin (tools/bench --backup sets it)")?;
    for tool in ["couchbackup", "couchrestore"] {
        if !tools.join(tool).exists() {
            bail!("no {tool} in {}", tools.display());
        }
    }
    child::s3_settings()?;
    let names = Names { tag: format!("{:06x}", rand::random::<u32>() & 0xffffff) };
    let work = std::env::temp_dir().join(format!("couchshare-bench-{}", names.db("files")));
    std::fs::create_dir_all(&work)?;
    // CouchDB on one CPU, the bench and its children (which inherit its affinity) on the other.
    let mut pinning = pin::pin(&couch_url, "", !args.no_pin);
    let setup = pinning.setup.replace(
        "API server and etcd not found, unpinned, the bench and the operator",
        "the bench and its children (both backup tools)",
    );
    let ctx = Ctx { args, couch, couch_url, user, password, names, tools, work, setup };
    eprintln!("bench: backup, {} documents, databases {}* ({})", args.backup_docs, ctx.names.prefix(), ctx.setup);
    let outcome = tokio::select! {
        r = measure(&ctx) => r,
        signal = crate::interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    // The children are killed by now (their guards dropped with `measure`).
    let cleaned = clean(&ctx.couch, &ctx.names.prefix()).await;
    if let Err(e) = std::fs::remove_dir_all(&ctx.work) {
        eprintln!("bench: could not remove {}: {e}", ctx.work.display());
    }
    pinning.undo();
    match &cleaned {
        Ok(n) => eprintln!("bench: clean-up removed {n} databases"),
        Err(e) => eprintln!("bench: clean-up failed: {e:#}"),
    }
    outcome.and(cleaned.map(drop))
}

/// Deletes every database whose name starts with `prefix`; how many.
async fn clean(couch: &CouchClient, prefix: &str) -> anyhow::Result<usize> {
    let mut removed = 0;
    for db in couch.all_databases().await?.into_iter().filter(|d| d.starts_with(prefix)) {
        couch.delete_database(&db).await.with_context(|| format!("delete {db}"))?;
        removed += 1;
    }
    Ok(removed)
}

impl Ctx<'_> {
    /// `COUCH_URL` for couchbackup: the server with the credentials in it.
    fn couch_url_with_credentials(&self) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&self.couch_url)?;
        url.set_username(&self.user).map_err(|()| anyhow!("cannot put a user name in the CouchDB URL"))?;
        url.set_password(Some(&self.password)).map_err(|()| anyhow!("cannot put a password in the CouchDB URL"))?;
        Ok(url.as_str().trim_end_matches('/').to_string())
    }

    fn job(&self, name: &str, program: PathBuf, args: Vec<String>) -> Job {
        Job {
            program,
            args,
            env: vec![],
            stdin: None,
            stdout: self.work.join(format!("{name}.out")),
            stderr: self.work.join(format!("{name}.log")),
        }
    }

    /// This binary, `--backup-child what` on `db`.
    fn library(&self, what: &str, db: &str) -> anyhow::Result<Job> {
        let args = ["--backup-child", what, "--child-db", db, "--child-prefix", &self.names.s3_prefix()];
        let mut job =
            self.job(&format!("couchshare-{what}"), std::env::current_exe()?, args.map(String::from).to_vec());
        job.env.push(("RUST_LOG", std::env::var("COUCHSHARE_BENCH_LOG").unwrap_or_else(|_| "warn".into())));
        Ok(job)
    }

    fn tool(&self, name: &str, args: &[&str]) -> anyhow::Result<Job> {
        let mut job = self.job(name, self.tools.join(name), args.iter().map(|a| a.to_string()).collect());
        job.env.push(("COUCH_URL", self.couch_url_with_credentials()?));
        Ok(job)
    }
}

/// The `result` of a `--backup-child` run.
fn child_result(m: &Measured) -> anyhow::Result<Value> {
    let line = m.stdout.lines().last().context("the child printed nothing")?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("the child printed {line:?}"))?;
    Ok(v["result"].clone())
}

/// Every leaf of document `id`, with history and attachment bytes, sorted by revision: what a
/// faithful restore reproduces exactly.
async fn leaves(ctx: &Ctx<'_>, db: &str, id: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!("{}/{db}/{id}", ctx.couch_url.trim_end_matches('/'));
    let answer: Vec<Value> = reqwest::Client::new()
        .get(url)
        .basic_auth(&ctx.user, Some(&ctx.password))
        .header("Accept", "application/json")
        .query(&[("open_revs", "all"), ("revs", "true"), ("attachments", "true")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut docs: Vec<Value> = answer.into_iter().filter_map(|r| r.get("ok").cloned()).collect();
    docs.sort_by_key(|d| d["_rev"].as_str().unwrap_or_default().to_string());
    Ok(docs)
}

/// Compares a restored database with the source: counts, and the sample documents.
async fn check(
    ctx: &Ctx<'_>,
    tool: &str,
    round: usize,
    db: &str,
    source: &DatabaseInfo,
    n: usize,
) -> anyhow::Result<Check> {
    let info = ctx.couch.database_info(db).await?;
    let mut sample: Vec<usize> = vec![0, 50, 99, n.saturating_sub(1)];
    sample.retain(|i| *i < n);
    sample.dedup();
    let mut differing = Vec::new();
    for i in &sample {
        let id = fill::doc_id(*i);
        let src = leaves(ctx, &ctx.names.db("src"), &id).await?;
        if leaves(ctx, db, &id).await? != src {
            differing.push(id);
        }
    }
    Ok(Check {
        tool: tool.into(),
        round,
        doc_count: info.doc_count,
        doc_del_count: info.doc_del_count,
        counts_match: info.doc_count == source.doc_count && info.doc_del_count == source.doc_del_count,
        sampled: sample.len(),
        differing,
    })
}

async fn create_empty(couch: &CouchClient, db: &str) -> anyhow::Result<()> {
    couch.create_database(db, &CreateDatabase::default()).await.with_context(|| format!("create {db}"))
}

/// Edits every hundredth document (a field changed, attachments kept as stubs); how many.
async fn change_one_percent(ctx: &Ctx<'_>, db: &str, n: usize) -> anyhow::Result<u64> {
    let ids: Vec<String> = (0..n).step_by(100).map(fill::doc_id).collect();
    let mut changed = 0;
    for chunk in ids.chunks(1_000) {
        let url = format!("{}/{db}/_all_docs", ctx.couch_url.trim_end_matches('/'));
        let answer: Value = reqwest::Client::new()
            .post(url)
            .basic_auth(&ctx.user, Some(&ctx.password))
            .query(&[("include_docs", "true")])
            .json(&serde_json::json!({ "keys": chunk }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let docs: Vec<Value> = answer["rows"]
            .as_array()
            .context("_all_docs rows")?
            .iter()
            .filter_map(|r| r.get("doc").filter(|d| d.is_object()).cloned())
            .map(|mut d| {
                d["changed"] = Value::Bool(true);
                d
            })
            .collect();
        changed += docs.len() as u64;
        ctx.couch.bulk_docs(db, &docs).await.context("the 1 % edit")?;
    }
    Ok(changed)
}

/// Every phase up to the report.
async fn measure(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let n = ctx.args.backup_docs;
    let couch = &ctx.couch;
    let src = ctx.names.db("src");
    create_empty(couch, &src).await?;
    let shape = fill::Shape {
        docs: n,
        attachment_percent: ctx.args.backup_attachment_percent,
        attachment_bytes: ctx.args.backup_attachment_kib * 1024,
    };
    let filled: Filled = fill::fill(couch, &src, &shape).await?;
    eprintln!(
        "bench: filled {src}: {} documents ({} with an attachment, {} in conflict, {} leaves) in {:.1} s",
        filled.docs,
        filled.attachments,
        filled.conflicts,
        filled.leaves,
        filled.elapsed.as_secs_f64()
    );
    let source = couch.database_info(&src).await?;
    let docs = filled.docs;
    let pids = pin::couch_pids(&ctx.couch_url);
    let file = ctx.work.join("couchbackup.txt");
    let file_arg = file.to_string_lossy().to_string();
    let (mut rows, mut checks, mut manifest, mut restored_leaves) = (Vec::new(), Vec::new(), None, None);
    for round in 1..=ctx.args.backup_rounds.max(1) {
        // Who goes first alternates: the first backup after the fill, and each second run,
        // may meet CouchDB's caches or background work in another state.
        let order = if round % 2 == 1 { [true, false] } else { [false, true] };
        // A tool that fails (couchbackup runs out of memory on large attachments) is reported
        // as failed, and the other one still measured.
        let (mut ours_backed_up, mut theirs_backed_up) = (false, false);
        for ours in order {
            if ours {
                let (tool, phase) = ("couchshare", "backup → S3");
                let result = async {
                    let m = child::run(ctx.library("backup", &src)?, &pids).await?;
                    let got: Manifest = serde_json::from_value(child_result(&m)?).context("the child's manifest")?;
                    anyhow::Ok((m, got))
                };
                match result.await {
                    Ok((m, got)) => {
                        rows.push(Row::new(tool, phase, round, &m, docs, Some(got.bytes)));
                        manifest = Some(got);
                        ours_backed_up = true;
                    }
                    Err(e) => rows.push(Row::failed(tool, phase, round, &e)),
                }
            } else {
                let (tool, phase) = ("couchbackup", "backup → file");
                let result = async {
                    if file.exists() {
                        std::fs::remove_file(&file)?;
                    }
                    let args = ["--db", &src, "--attachments", "-o", &file_arg];
                    let m = child::run(ctx.tool("couchbackup", &args)?, &pids).await?;
                    anyhow::Ok((m, std::fs::metadata(&file)?.len()))
                };
                match result.await {
                    Ok((m, bytes)) => {
                        rows.push(Row::new(tool, phase, round, &m, docs, Some(bytes)));
                        theirs_backed_up = true;
                    }
                    Err(e) => rows.push(Row::failed(tool, phase, round, &e)),
                }
            }
            eprintln!("bench: round {round}: {}", rows.last().map(Row::summary).unwrap_or_default());
        }
        // What of the library's restore is its first pass: reading every object back for its sha256.
        if ours_backed_up {
            let phase = "verify ← S3 (restore's first pass)";
            match child::run(ctx.library("verify", &src)?, &pids).await {
                Ok(m) => rows.push(Row::new("couchshare", phase, round, &m, docs, None)),
                Err(e) => rows.push(Row::failed("couchshare", phase, round, &e)),
            }
        }
        for ours in order {
            let (tool, phase) =
                if ours { ("couchshare", "restore ← S3") } else { ("couchrestore", "restore ← file") };
            if !(if ours { ours_backed_up } else { theirs_backed_up }) {
                rows.push(Row::failed(tool, phase, round, &anyhow!("not run: its backup failed")));
                continue;
            }
            let db = ctx.names.db(&format!("restored-{tool}-{round}"));
            create_empty(couch, &db).await?;
            let result = if ours {
                child::run(ctx.library("restore", &db)?, &pids).await
            } else {
                // couchbackup's header says `attachments: true`: couchrestore refuses it without the option.
                let mut job = ctx.tool("couchrestore", &["--db", &db, "--attachments"])?;
                job.stdin = Some(file.clone());
                child::run(job, &pids).await
            };
            match result {
                Ok(m) => {
                    if ours {
                        restored_leaves = child_result(&m)?["documents"].as_u64();
                    }
                    rows.push(Row::new(tool, phase, round, &m, docs, None));
                    checks.push(check(ctx, tool, round, &db, &source, n).await?);
                }
                Err(e) => rows.push(Row::failed(tool, phase, round, &e)),
            }
            eprintln!("bench: round {round}: {}", rows.last().map(Row::summary).unwrap_or_default());
            couch.delete_database(&db).await?;
        }
    }
    let Some(manifest) = manifest else {
        for row in &rows {
            eprintln!("bench: {}", row.summary());
        }
        bail!("the couchshare backup failed in every round");
    };
    let changed = change_one_percent(ctx, &src, n).await?;
    let mut job = ctx.library("incremental", &src)?;
    job.args.extend(["--child-since".to_string(), manifest.update_seq.clone()]);
    if let Some(prefix) = job.args.iter_mut().skip_while(|a| *a != "--child-prefix").nth(1) {
        prefix.push_str("-incremental");
    }
    let phase = "incremental backup → S3 (1 % changed)";
    match child::run(job, &pids).await {
        Ok(m) => {
            let got: Manifest = serde_json::from_value(child_result(&m)?).context("the incremental's manifest")?;
            rows.push(Row::new("couchshare", phase, 1, &m, changed, Some(got.bytes)));
        }
        Err(e) => rows.push(Row::failed("couchshare", phase, 1, &e)),
    }
    eprintln!("bench: {}", rows.last().map(Row::summary).unwrap_or_default());
    let info = couch.server_info().await.map(|i| format!("{} {}", i.vendor.unwrap_or_default(), i.version));
    let run = report::Run {
        setup: &ctx.setup,
        attachment_kib: ctx.args.backup_attachment_kib,
        couchdb: info.unwrap_or_default(),
        filled,
        source: &source,
        manifest: &manifest,
        restored_leaves,
    };
    report::report(&run, &rows, &checks, &ctx.args.out)
}
