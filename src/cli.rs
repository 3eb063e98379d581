//! The command line of the `couchshare` binary (clap), in the library so that tests can ask
//! clap itself for every flag of `couchshare run` (tests/docs.rs holds them against the
//! install page).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// `couchshare`: its global flags and one subcommand.
#[derive(Parser)]
#[command(
    name = "couchshare",
    version,
    about = "CouchDB databases, users, permissions and replication shares as Kubernetes resources"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "COUCHSHARE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the in-cluster config, KUBECONFIG or --kubeconfig.
    Run(RunArgs),
    /// Print the seven CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print what the operator would change on CouchDB for a directory of manifests, changing
    /// nothing. CouchDB is given by COUCHDB_URL, COUCHDB_USER and COUCHDB_PASSWORD.
    Plan {
        /// A manifest file or a directory of them.
        path: PathBuf,
        /// The namespace the manifests would be applied in (it names replication documents).
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        /// CouchDB URL.
        #[arg(long, env = "COUCHDB_URL")]
        couchdb_url: String,
        /// CouchDB admin username.
        #[arg(long, env = "COUCHDB_USER")]
        couchdb_user: String,
        /// CouchDB admin password (from the environment; never printed).
        #[arg(long, env = "COUCHDB_PASSWORD", hide_env_values = true)]
        couchdb_password: String,
    },
    /// Print the version.
    Version,
}

/// The flags of `couchshare run`.
#[derive(clap::Args)]
// A flag given twice takes the last value (wrappers and tests append their own).
#[command(args_override_self = true)]
pub struct RunArgs {
    /// Kubeconfig file (default: in-cluster config, then KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "COUCHSHARE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconciles running at once, per kind.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Periodic resync of every resource (jittered ±10%), e.g. `5m`, `30s`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Longest delay between retries of a failing resource, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// How long deleting a resource keeps retrying an unreachable CouchDB before letting go.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub deletion_grace: Duration,
    /// `_security` reads per second per CouchServer by the audit that finds hand edits (CouchDB
    /// reports them in no feed); 0 turns it off.
    #[arg(long, default_value_t = crate::controller::DEFAULT_SECURITY_AUDIT_RATE)]
    pub security_audit_rate: f64,
    /// Where the backup volume is mounted: CouchBackups with `destination.volume` write below
    /// it, one folder per namespace. Without it they are refused.
    #[arg(long, env = "COUCHSHARE_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Address of the `/healthz`, `/readyz` and `/metrics` endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas are safe.
    #[arg(long)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "couchshare-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a Lease lasts without renewal; a standby takes over after this.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
}

/// A duration like `30s` or `5m` (not negative).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} must not be negative"))
}
