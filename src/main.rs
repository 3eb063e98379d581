//! The `couchshare` binary: `crd` prints the CustomResourceDefinitions, `version` the build.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "couchshare", version, about = "CouchDB databases, users, permissions and replication shares as Kubernetes resources")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the five CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { out_dir: None } => print!("{}", couchshare::api::crds_yaml()?),
        Command::Crd { out_dir: Some(dir) } => {
            for (file, yaml) in couchshare::api::crd_files()? {
                let path = dir.join(file);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Version => println!("couchshare {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
