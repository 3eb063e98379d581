//! `kubectl couchshare`: the kubectl plugin for couchshare (installed as `kubectl-couchshare`
//! on the `PATH`). `access DATABASE` (who can reach a database, and through what), `shares`,
//! `status`, and `plan DIR`, with kubectl's conventions: `-n`, `-A`, `--kubeconfig`,
//! `--context`, `-o json|yaml|wide`.
//!
//! Exit codes: 0 done; 1 the API server (or CouchDB, for `plan`) could not be asked; 2 a usage
//! error; 3 the named object does not exist; 4 (`status` only) something is not Ready.

mod access;
mod output;
mod overview;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "kubectl-couchshare",
    bin_name = "kubectl couchshare",
    version,
    about = "couchshare: who can reach a database, shares, status, plan"
)]
struct Cli {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format: a table (default), `wide` (more columns), `json` or `yaml`.
    #[arg(short = 'o', long, global = true, value_enum)]
    output: Option<Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Wide,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// The effective members and admins of a CouchDatabase, each with why it is there, and what
    /// was refused and why (DATABASE: the CouchDatabase's name, or its name on CouchDB).
    Access { database: String },
    /// CouchShares: source → target, mode, strategy, state, changes pending, last error.
    Shares,
    /// CouchServers (version, nodes, membership, replication budget) and every resource that is
    /// not Ready, with its reason. Exits 4 when something is not Ready.
    Status,
    /// What `couchshare plan` prints: the changes applying DIR's manifests would make
    /// (COUCHDB_URL, COUCHDB_USER, COUCHDB_PASSWORD).
    Plan {
        dir: PathBuf,
        #[arg(long, env = "COUCHDB_URL")]
        couchdb_url: String,
        #[arg(long, env = "COUCHDB_USER", default_value = "admin")]
        couchdb_user: String,
        #[arg(long, env = "COUCHDB_PASSWORD", hide_env_values = true)]
        couchdb_password: String,
    },
}

/// A failure, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Api(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotReady(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Api(_) => 1,
            Failure::NotFound(_) => 3,
            Failure::NotReady(_) => 4,
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Failure::Api(format!("the API server: {e}"))
    }
}

/// Where to look: one namespace, or all.
pub struct Scope {
    pub client: kube::Client,
    /// `None` with `-A`.
    pub namespace: Option<String>,
    pub format: Option<Format>,
}

async fn scope(cli: &Cli) -> Result<Scope, Failure> {
    let options = kube::config::KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    let failed = |e: &dyn std::fmt::Display| Failure::Api(format!("kubeconfig: {e}"));
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            kube::Config::from_custom_kubeconfig(file, &options).await.map_err(|e| failed(&e))?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await.map_err(|e| failed(&e))?,
        None => kube::Config::infer().await.map_err(|e| failed(&e))?,
    };
    let namespace =
        (!cli.all_namespaces).then(|| cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone()));
    let client = kube::Client::try_from(config).map_err(|e| Failure::Api(format!("kube client: {e}")))?;
    Ok(Scope { client, namespace, format: cli.output })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Plan { dir, couchdb_url, couchdb_user, couchdb_password } = &cli.command {
        // The context's namespace when none is given, as kubectl does; no API server is asked.
        let context_ns = || {
            let config = match &cli.kubeconfig {
                Some(path) => kube::config::Kubeconfig::read_from(path).ok()?,
                None => kube::config::Kubeconfig::read().ok()?,
            };
            let name = cli.context.clone().or(config.current_context.clone())?;
            config.contexts.iter().find(|c| c.name == name)?.context.as_ref()?.namespace.clone()
        };
        let ns = cli.namespace.clone().or_else(context_ns).unwrap_or_else(|| "default".into());
        let manifests = couchshare::preview::read_manifests(dir).map_err(|e| Failure::Api(e.to_string()))?;
        let config = couchshare::couch::CouchConfig::new(
            couchdb_url.clone(),
            Some(couchshare::couch::Credentials::new(couchdb_user.clone(), couchdb_password.clone())),
        );
        let couch = couchshare::couch::CouchClient::new(config).map_err(|e| Failure::Api(e.to_string()))?;
        let lines =
            couchshare::preview::preview(&couch, &manifests, &ns).await.map_err(|e| Failure::Api(e.to_string()))?;
        return output::print(cli.output, &lines, || lines.join("\n"));
    }
    let scope = scope(&cli).await?;
    match &cli.command {
        Command::Access { database } => access::run(&scope, database).await,
        Command::Shares => overview::shares(&scope).await,
        Command::Status => overview::status(&scope).await,
        Command::Plan { .. } => Ok(()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code())
        }
    }
}
