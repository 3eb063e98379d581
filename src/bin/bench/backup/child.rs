//! Child processes, timed, with their peak RSS: couchbackup and couchrestore, and this binary
//! in `--backup-child` mode running one library call (so its memory is its own, as the
//! operator's would be, rather than the bench's with the filled database's buffers in it).
//!
//! Peak RSS and CPU time come from GNU time (`/usr/bin/time -f '%M %U %S'`, the child's
//! `ru_maxrss`, user and system time) when it is installed; else the peak RSS from polling the
//! child's `VmHWM` in `/proc` (which misses what it allocates in its last few milliseconds),
//! and no CPU time. CouchDB's CPU time over the same span is read from `/proc/<pid>/stat`. Each child leads its own process group, killed
//! when the bench stops early (Ctrl-C), so no backup outlives the bench.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use couchshare::backup::{S3Settings, Target, back_up, back_up_since, read_manifest, restore, verify};
use couchshare::couch::{CouchClient, CouchConfig, Credentials};
use serde_json::json;

use crate::Args;
use crate::metrics::peak_rss_kib;

const GNU_TIME: &str = "/usr/bin/time";

/// What a child took.
#[derive(Debug, Clone)]
pub struct Measured {
    pub elapsed: Duration,
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU seconds of the child.
    pub cpu_seconds: Option<f64>,
    /// CPU seconds CouchDB's processes spent while it ran.
    pub couch_cpu_seconds: Option<f64>,
    /// How the peak RSS was measured.
    pub rss_source: &'static str,
    /// What it wrote on stdout (when not redirected elsewhere).
    pub stdout: String,
}

/// One command to run and measure.
pub struct Job {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// Its stdin (else nothing).
    pub stdin: Option<PathBuf>,
    /// Where its stdout and stderr go; stdout is read back into [`Measured::stdout`].
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A running process group, killed (the whole group) when dropped before it ended.
struct Group {
    child: Child,
    done: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.done {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU seconds (user + system) `pids` have used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    // USER_HZ: 100 on every Linux this runs on (`getconf CLK_TCK`).
    const TICKS: f64 = 100.0;
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name (which may hold spaces) and its `)`.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        total += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    (!pids.is_empty()).then(|| total as f64 / TICKS)
}

/// Runs `job` to its end, `couch` being CouchDB's pids; fails when it exits non-zero.
pub async fn run(job: Job, couch: &[u32]) -> anyhow::Result<Measured> {
    use std::os::unix::process::CommandExt as _;
    let gnu_time = Path::new(GNU_TIME).exists();
    let rss_file = job.stdout.with_extension("rss");
    let mut command = if gnu_time {
        let mut c = Command::new(GNU_TIME);
        c.arg("-f").arg("%M %U %S").arg("-o").arg(&rss_file).arg(&job.program);
        c
    } else {
        Command::new(&job.program)
    };
    command.args(&job.args).envs(job.env.iter().map(|(k, v)| (k, v))).process_group(0);
    command.stdin(match &job.stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).with_context(|| path.display().to_string())?),
        None => Stdio::null(),
    });
    command.stdout(std::fs::File::create(&job.stdout)?).stderr(std::fs::File::create(&job.stderr)?);
    let couch_before = cpu_seconds(couch);
    let started = Instant::now();
    let child = command.spawn().with_context(|| format!("start {}", job.program.display()))?;
    let mut group = Group { child, done: false };
    let pid = group.child.id();
    let mut polled_peak = None;
    let status = loop {
        if let Some(status) = group.child.try_wait()? {
            break status;
        }
        if !gnu_time {
            polled_peak = peak_rss_kib(pid).or(polled_peak);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let couch_cpu_seconds = cpu_seconds(couch).zip(couch_before).map(|(after, before)| after - before);
    group.done = true;
    if !status.success() {
        bail!(
            "{} {} failed ({status}); last lines of {}:\n{}",
            job.program.display(),
            job.args.join(" "),
            job.stderr.display(),
            last_lines(&job.stderr, 20)
        );
    }
    let (peak_rss_kib, cpu_seconds, rss_source) = if gnu_time {
        // GNU time writes "Command exited ..." lines first when the command fails; the figures are last.
        let text = std::fs::read_to_string(&rss_file).unwrap_or_default();
        let figures: Vec<&str> = text.lines().last().unwrap_or_default().split_whitespace().collect();
        let seconds = |i: usize| figures.get(i).and_then(|v| v.parse::<f64>().ok());
        let cpu = seconds(1).zip(seconds(2)).map(|(user, system)| user + system);
        (figures.first().and_then(|v| v.parse().ok()), cpu, "GNU time %M (ru_maxrss)")
    } else {
        (polled_peak, None, "VmHWM polled every 20 ms")
    };
    let stdout = std::fs::read_to_string(&job.stdout).unwrap_or_default();
    Ok(Measured { elapsed, peak_rss_kib, cpu_seconds, couch_cpu_seconds, rss_source, stdout })
}

/// The bucket `tools/testbin/start-s3.sh` started (`COUCHSHARE_S3_*`), path-style, over http.
pub fn s3_settings() -> anyhow::Result<S3Settings> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} (tools/bench --backup sets it)"));
    let endpoint = var("COUCHSHARE_S3_ENDPOINT")?;
    Ok(S3Settings {
        bucket: var("COUCHSHARE_S3_BUCKET")?,
        allow_http: endpoint.starts_with("http://"),
        endpoint: Some(endpoint),
        region: var("COUCHSHARE_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key_id: var("COUCHSHARE_S3_ACCESS_KEY")?,
        secret_access_key: var("COUCHSHARE_S3_SECRET_KEY")?,
        path_style: true,
        insecure_skip_verify: false,
    })
}

/// The CouchDB client from `COUCHDB_URL`, `COUCHDB_USER`, `COUCHDB_PASSWORD`.
pub fn couch_from_env(request_timeout: Duration) -> anyhow::Result<CouchClient> {
    let var = |name: &str| std::env::var(name).with_context(|| name.to_string());
    let credentials = Credentials::new(var("COUCHDB_USER")?, var("COUCHDB_PASSWORD")?);
    let mut config = CouchConfig::new(var("COUCHDB_URL")?, Some(credentials));
    config.request_timeout = request_timeout;
    Ok(CouchClient::new(config)?)
}

/// The operator's CouchDB request timeout (its default `couch_timeout`): the child calls the
/// library as the controller does.
const OPERATOR_COUCH_TIMEOUT: Duration = Duration::from_secs(10);

/// `--backup-child backup|verify|restore`: one library call on `--child-db`, the objects under
/// `--child-prefix` of the S3 bucket; prints the result as one JSON object on stdout.
pub async fn child(what: &str, args: &Args) -> anyhow::Result<()> {
    let (Some(db), Some(prefix)) = (&args.child_db, &args.child_prefix) else {
        bail!("--backup-child needs --child-db and --child-prefix");
    };
    let couch = couch_from_env(OPERATOR_COUCH_TIMEOUT)?;
    let target = Target::s3(&s3_settings()?, prefix)?;
    let result = match what {
        "backup" => serde_json::to_value(back_up(&couch, db, &target).await?)?,
        "verify" => {
            let manifest = read_manifest(&target).await?.with_context(|| format!("no manifest under {prefix}"))?;
            verify(&target, &manifest).await?;
            json!({"verified": manifest.objects.len()})
        }
        "incremental" => {
            let since = args.child_since.as_deref().context("--backup-child incremental needs --child-since")?;
            serde_json::to_value(back_up_since(&couch, db, &target, Some(since)).await?)?
        }
        "restore" => {
            let manifest = read_manifest(&target).await?.with_context(|| format!("no manifest under {prefix}"))?;
            let restored = restore(&couch, db, &target, &manifest).await?;
            json!({"documents": restored.documents})
        }
        other => bail!("--backup-child {other}: backup, incremental, verify or restore"),
    };
    let own_peak = peak_rss_kib(std::process::id());
    println!("{}", json!({"result": result, "own_peak_rss_kib": own_peak}));
    Ok(())
}
