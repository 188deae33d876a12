//! The benchmark's certificates and child processes: the webhook and the floor server
//! started on loopback, their RSS and CPU time read from `/proc`.

use super::*;

pub(super) struct Certs {
    pub(super) dir: tempfile::TempDir,
    pub(super) ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Certs {
    pub(super) fn new() -> anyhow::Result<Certs> {
        let dir = tempfile::tempdir()?;
        let ca = kruntimes_testkit::certs::TestCa::new();
        ca.leaf().write_to(dir.path());
        Ok(Certs {
            ca_der: ca.der().clone(),
            dir,
        })
    }

    pub(super) fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub(super) fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
}

/// A child process killed (and reaped) on drop.
pub(super) struct Server {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A free loopback port (bound, read, released: the child binds it right after).
pub(super) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(super) fn start_webhook(certs: &Certs) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let admin = free_addr()?;
    let log = std::fs::File::create(certs.dir.path().join("webhook.log"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_kruntimes-webhook"))
        .arg("--standalone")
        .arg("--tls-cert-file")
        .arg(certs.cert())
        .arg("--tls-private-key-file")
        .arg(certs.key())
        .arg("--bind-address")
        .arg(addr.to_string())
        .arg("--admin-bind-address")
        .arg(admin.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start kruntimes-webhook")?;
    Ok(Server {
        name: "webhook",
        child,
        addr,
    })
}

pub(super) fn start_floor(certs: &Certs) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let spec = format!(
        "{}\n{}\n{addr}",
        certs.cert().display(),
        certs.key().display()
    );
    let child = Command::new(std::env::current_exe()?)
        .env(FLOOR_CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the floor server")?;
    Ok(Server {
        name: "floor",
        child,
        addr,
    })
}

/// Resident set size of `pid` in KiB (`VmRSS` of /proc/PID/status).
pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS: no number")?
        .parse()
        .context("VmRSS: not a number")
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Samples the RSS of `pid` every [`RSS_PERIOD`] until dropped.
pub(super) struct RssSampler {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub(super) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(RSS_PERIOD);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if let Ok(kib) = rss_kib(pid) {
                        samples.push(kib);
                    }
                }
                samples
            }
        });
        RssSampler { stop, task }
    }

    /// The samples taken (in KiB).
    pub(super) async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
