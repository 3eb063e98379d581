//! The `couchshare` binary: `run` (the operator), `crd` (print the CRDs), `version`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use couchshare::controller::{Options, RunConfig};

#[derive(Parser)]
#[command(
    name = "couchshare",
    version,
    about = "CouchDB databases, users, permissions and replication shares as Kubernetes resources"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "COUCHSHARE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(clap::Args)]
// A flag given twice takes the last value (wrappers and tests append their own).
#[command(args_override_self = true)]
struct RunArgs {
    /// Kubeconfig file (default: in-cluster config, then KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "COUCHSHARE_NAMESPACE")]
    namespace: Option<String>,
    /// Reconciles running at once, per kind.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Periodic resync of every resource (jittered ±10%), e.g. `5m`, `30s`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Longest delay between retries of a failing resource, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    max_backoff: Duration,
    /// How long deleting a resource keeps retrying an unreachable CouchDB before letting go.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    deletion_grace: Duration,
    /// `_security` reads per second per CouchServer by the audit that finds hand edits (CouchDB
    /// reports them in no feed); 0 turns it off.
    #[arg(long, default_value_t = couchshare::controller::DEFAULT_SECURITY_AUDIT_RATE)]
    security_audit_rate: f64,
    /// Where the backup volume is mounted: CouchBackups with `destination.volume` write below
    /// it, one folder per namespace. Without it they are refused.
    #[arg(long, env = "COUCHSHARE_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    /// Address of the `/healthz`, `/readyz` and `/metrics` endpoints.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_addr: SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas are safe.
    #[arg(long)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "couchshare-leader")]
    lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease lasts without renewal; a standby takes over after this.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} must not be negative"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

async fn kube_client(kubeconfig: Option<PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    couchshare::couch::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_logging(cli.log_format);
            let client = kube_client(args.kubeconfig).await?;
            let options = Options {
                resync: args.resync_interval,
                backoff_max: args.max_backoff,
                deletion_grace: args.deletion_grace,
                security_audit_rate: args.security_audit_rate.max(0.0),
                backup_dir: args.backup_dir,
                ..Options::default()
            };
            let leader_election = args.leader_election.then(|| couchshare::controller::LeaderElection {
                lease_name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone().unwrap_or_else(|| "default".into()),
                identity: std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("couchshare-{}-{:08x}", std::process::id(), rand::random::<u32>())),
                lease_seconds: args.lease_seconds.max(2),
            });
            let config = RunConfig {
                namespace: args.namespace,
                concurrency: args.concurrency.max(1),
                health_addr: args.health_addr,
                options,
                leader_election,
            };
            couchshare::controller::run(client, config).await?;
        }
        Command::Crd { out_dir: None } => print!("{}", couchshare::api::crds_yaml()?),
        Command::Crd { out_dir: Some(dir) } => {
            for (file, yaml) in couchshare::api::crd_files()? {
                let path = dir.join(file);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Plan { path, namespace, couchdb_url, couchdb_user, couchdb_password } => {
            let manifests = couchshare::preview::read_manifests(&path)?;
            let config = couchshare::couch::CouchConfig::new(
                couchdb_url,
                Some(couchshare::couch::Credentials::new(couchdb_user, couchdb_password)),
            );
            let couch = couchshare::couch::CouchClient::new(config)?;
            for line in couchshare::preview::preview(&couch, &manifests, &namespace).await? {
                println!("{line}");
            }
        }
        Command::Version => println!("couchshare {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
