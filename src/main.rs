//! The `couchshare` binary: `run` (the operator), `crd` (print the CRDs), `version`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser as _;
use couchshare::cli::{Cli, Command, LogFormat};
use couchshare::controller::{Options, RunConfig};

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
