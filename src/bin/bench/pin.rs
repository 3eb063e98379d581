//! CPU pinning: CouchDB on one CPU for both phases, the API server, etcd, the bench and the
//! operator (its child, which inherits the affinity) on the others, so that the ratio
//! measures the operator rather than who shares a core with CouchDB. Linux only, through
//! `taskset`; what was pinned is undone at the end.

use std::process::Command;

/// What was pinned where (or why nothing was), and how to undo it.
pub struct Pinning {
    pub setup: String,
    restore: Vec<(u32, String)>,
}

fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim().to_string();
    let mut out = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

fn pids_from_env(var: &str) -> Option<Vec<u32>> {
    let text = std::env::var(var).ok()?;
    Some(text.split([' ', ',']).filter_map(|p| p.trim().parse().ok()).collect())
}

/// The pids listening on a loopback TCP `port`, from `ss -ltnp`.
fn listeners(port: u16) -> Vec<u32> {
    let Ok(out) = Command::new("ss").args(["-ltnpH", &format!("sport = :{port}")]).output() else { return vec![] };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pids: Vec<u32> = text
        .split("pid=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// The pids of CouchDB: `COUCHSHARE_BENCH_COUCHDB_PIDS` (every node of a local cluster), else
/// the processes listening on its URL's port.
pub fn couch_pids(couch_url: &str) -> Vec<u32> {
    if let Some(pids) = pids_from_env("COUCHSHARE_BENCH_COUCHDB_PIDS") {
        return pids;
    }
    local_port(couch_url).map(listeners).unwrap_or_default()
}

/// The port of a URL whose host is this machine.
fn local_port(url: &str) -> Option<u16> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    (host == "localhost" || host.starts_with("127.") || host == "[::1]").then(|| url.port_or_known_default())?
}

fn taskset(args: &[&str]) -> Result<String, String> {
    let out = Command::new("taskset").args(args).output().map_err(|e| format!("taskset: {e}"))?;
    if !out.status.success() {
        return Err(format!("taskset {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The affinity mask of `pid`, as `taskset -p` prints it.
fn mask(pid: u32) -> Result<String, String> {
    let text = taskset(&["-p", &pid.to_string()])?;
    text.rsplit(':').next().map(|m| m.trim().to_string()).ok_or_else(|| format!("taskset -p {pid}: {text}"))
}

fn unpinned(why: impl Into<String>) -> Pinning {
    Pinning { setup: format!("not pinned: {}", why.into()), restore: vec![] }
}

/// Pins, if it can: CouchDB (found from `couch_url`'s port, or `COUCHSHARE_BENCH_COUCHDB_PIDS`)
/// on the last allowed CPU, the API server and etcd (`COUCHSHARE_BENCH_K8S_PIDS`, else the
/// API server from `api_url`'s port) and this process on the others.
pub fn pin(couch_url: &str, api_url: &str, wanted: bool) -> Pinning {
    let cpus = allowed_cpus().unwrap_or_default();
    if !wanted {
        return unpinned(format!("--no-pin ({} CPUs)", cpus.len()));
    }
    if !cfg!(target_os = "linux") {
        return unpinned("not Linux");
    }
    let Some((&couch_cpu, others)) = cpus.split_last().filter(|(_, rest)| !rest.is_empty()) else {
        return unpinned(format!("{} CPU allowed, 2 needed", cpus.len()));
    };
    if taskset(&["-V"]).is_err() {
        return unpinned("no taskset");
    }
    let couch = pids_from_env("COUCHSHARE_BENCH_COUCHDB_PIDS")
        .unwrap_or_else(|| local_port(couch_url).map(listeners).unwrap_or_default());
    if couch.is_empty() {
        return unpinned(format!(
            "CouchDB's process not found from {} (set COUCHSHARE_BENCH_COUCHDB_PIDS)",
            couchshare::couch::redact_url_str(couch_url)
        ));
    }
    let k8s = pids_from_env("COUCHSHARE_BENCH_K8S_PIDS")
        .unwrap_or_else(|| local_port(api_url).map(listeners).unwrap_or_default());
    let others_list = others.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let mut pinning = Pinning { setup: String::new(), restore: vec![] };
    let mut pin_one = |pid: u32, list: &str| -> Result<(), String> {
        let before = mask(pid)?;
        taskset(&["-a", "-p", "-c", list, &pid.to_string()])?;
        pinning.restore.push((pid, before));
        Ok(())
    };
    let couch_list = couch_cpu.to_string();
    for &pid in &couch {
        if let Err(e) = pin_one(pid, &couch_list) {
            pinning.undo();
            return unpinned(e);
        }
    }
    let mut pinned_k8s = Vec::new();
    for &pid in &k8s {
        if pin_one(pid, &others_list).is_ok() {
            pinned_k8s.push(pid);
        }
    }
    // Ourselves last, and not restored: the operator, started later, inherits it.
    if let Err(e) = taskset(&["-a", "-p", "-c", &others_list, &std::process::id().to_string()]) {
        pinning.undo();
        return unpinned(e);
    }
    let k8s_text = if pinned_k8s.is_empty() {
        "API server and etcd not found, unpinned".to_string()
    } else {
        format!("API server/etcd (pids {pinned_k8s:?})")
    };
    pinning.setup = format!(
        "{} CPUs; CouchDB (pids {couch:?}) on CPU {couch_cpu}; {k8s_text}, the bench and the operator on CPU {others_list}",
        cpus.len()
    );
    pinning
}

impl Pinning {
    /// Gives every pinned process its former affinity back.
    pub fn undo(&mut self) {
        for (pid, mask) in self.restore.drain(..) {
            if let Err(e) = taskset(&["-a", "-p", &mask, &pid.to_string()]) {
                eprintln!("bench: could not restore the CPU affinity of pid {pid}: {e}");
            }
        }
    }
}
