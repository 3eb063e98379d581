//! The S3-compatible object store the backup tests write to (`COUCHSHARE_S3_ENDPOINT`,
//! `_ACCESS_KEY`, `_SECRET_KEY`, `_BUCKET`, `_REGION`, written to DIR/s3.env by
//! tools/testbin/start-s3.sh DIR), and the couchbackup CLI (`COUCHSHARE_COUCHBACKUP`, the
//! folder tools/testbin/install-couchbackup.sh prints). Without them a test says SKIP, or fails
//! with `COUCHSHARE_REQUIRE_CAPABILITIES=1`.
#![allow(dead_code)]

use std::path::PathBuf;

use couchshare::backup::{S3Settings, Target};

use super::couchdb::skip_lacking;

const VARS: [&str; 5] = [
    "COUCHSHARE_S3_ENDPOINT",
    "COUCHSHARE_S3_ACCESS_KEY",
    "COUCHSHARE_S3_SECRET_KEY",
    "COUCHSHARE_S3_BUCKET",
    "COUCHSHARE_S3_REGION",
];

/// The test store's settings (path-style, plain HTTP), or `None` after a SKIP line.
pub fn settings(test: &str) -> Option<S3Settings> {
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for var in VARS {
        match std::env::var(var).ok().filter(|v| !v.is_empty()) {
            Some(v) => values.push(v),
            None => missing.push(var),
        }
    }
    if !missing.is_empty() {
        skip_lacking(&format!(
            "SKIP {test}: no S3 object store ({} not set; run tools/testbin/start-s3.sh DIR and source DIR/s3.env)",
            missing.join(", ")
        ));
        return None;
    }
    let [endpoint, access_key_id, secret_access_key, bucket, region]: [String; 5] = values.try_into().ok()?;
    Some(S3Settings {
        bucket,
        endpoint: Some(endpoint),
        region,
        access_key_id,
        secret_access_key,
        path_style: true,
        allow_http: true,
        insecure_skip_verify: false,
    })
}

/// A target in the test bucket under `prefix`, or `None` after a SKIP line.
pub fn target(test: &str, prefix: &str) -> Option<Target> {
    let settings = settings(test)?;
    Some(Target::s3(&settings, prefix).expect("an S3 target from the test settings"))
}

/// The folder holding `couchbackup` and `couchrestore`, or `None` after a SKIP line.
pub fn couchbackup(test: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var("COUCHSHARE_COUCHBACKUP").ok().filter(|v| !v.is_empty()) else {
        skip_lacking(&format!(
            "SKIP {test}: no couchbackup CLI (COUCHSHARE_COUCHBACKUP not set; set it to the folder \
             tools/testbin/install-couchbackup.sh prints)"
        ));
        return None;
    };
    let dir = PathBuf::from(dir);
    assert!(dir.join("couchbackup").exists(), "{test}: no couchbackup in {}", dir.display());
    Some(dir)
}

/// Runs a couchbackup tool against the test server, `stdin` and `stdout` as given.
pub fn run_tool(
    bin: &std::path::Path,
    tool: &str,
    args: &[&str],
    stdin: std::process::Stdio,
    stdout: std::process::Stdio,
) {
    let mut url = url::Url::parse(&std::env::var("COUCHDB_URL").expect("COUCHDB_URL")).expect("a URL");
    url.set_username(&std::env::var("COUCHDB_USER").expect("COUCHDB_USER")).expect("user");
    url.set_password(Some(&std::env::var("COUCHDB_PASSWORD").expect("COUCHDB_PASSWORD"))).expect("password");
    let out = std::process::Command::new(bin.join(tool))
        .args(args)
        .env("COUCH_URL", url.as_str())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the tool");
    assert!(out.status.success(), "{tool} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}
