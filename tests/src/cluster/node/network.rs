//! The pod network: a bridge the node creates (`krtnN`, `10.213.N.1/24`), and per pod a
//! sandbox process holding the pod's network, UTS, IPC and mount namespaces, with a
//! veth pair from the bridge to its `eth0` (`10.213.N.M/24`, default route via the
//! bridge). The host reaches every pod IP directly over the bridge.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::{HELPER_PATH, io_error, run, run_quietly};
use crate::cluster::contract::NodeError;

/// The first two octets of every node's subnet: outside the ranges Docker, kind
/// (10.244/16) and most clouds use by default.
const SUBNET_PREFIX: [u8; 2] = [10, 213];

/// The last octets handed to pods: `.1` is the bridge, `.255` the broadcast address,
/// so a node runs at most 253 pods at once.
const POD_OCTETS: std::ops::RangeInclusive<u8> = 2..=254;

/// The pod addresses of one bridge in use.
#[derive(Debug, Default)]
struct Addresses {
    used: Mutex<BTreeSet<u8>>,
}

impl Addresses {
    fn allocate(&self) -> Option<u8> {
        let mut used = self.used.lock().ok()?;
        let free = POD_OCTETS.clone().find(|o| !used.contains(o))?;
        used.insert(free);
        Some(free)
    }

    fn release(&self, octet: u8) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&octet);
        }
    }
}

/// A bridge and the addresses handed out on it. Deleted on drop.
#[derive(Debug)]
pub(super) struct Bridge {
    name: String,
    index: u8,
    addresses: Addresses,
}

impl Bridge {
    /// Creates the first free bridge `krtnN`: the kernel refusing an existing name makes
    /// the choice atomic between test processes running at once.
    pub(super) async fn create() -> Result<Bridge, NodeError> {
        let start = (std::process::id() % 250) as u8;
        let mut last_error = None;
        for step in 0..=255u8 {
            let index = start.wrapping_add(step);
            let name = format!("krtn{index}");
            match run("ip", &["link", "add", &name, "type", "bridge"]).await {
                Ok(()) => {
                    let bridge = Bridge {
                        name,
                        index,
                        addresses: Addresses::default(),
                    };
                    bridge.configure().await?;
                    return Ok(bridge);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io_error("creating a bridge", std::io::Error::other("no free name"))
        }))
    }

    async fn configure(&self) -> Result<(), NodeError> {
        let address = format!("{}/24", self.gateway());
        run("ip", &["addr", "add", &address, "dev", &self.name]).await?;
        run("ip", &["link", "set", &self.name, "up"]).await
    }

    /// The bridge's own address: the pods' default gateway and their `hostIP`.
    pub(super) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.index, 1)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        run_quietly("ip", &["link", "del", &self.name]);
    }
}

/// A pod's namespaces, held by a sleeping process, and its veth. Dropping it deletes
/// the veth and kills the process, which frees the namespaces.
#[derive(Debug)]
pub(super) struct Sandbox {
    bridge: Arc<Bridge>,
    pause: tokio::process::Child,
    pause_pid: u32,
    octet: u8,
    veth: String,
}

impl Sandbox {
    /// Starts the sandbox with hostname `hostname` and wires it to `bridge`.
    pub(super) async fn create(bridge: Arc<Bridge>, hostname: &str) -> Result<Sandbox, NodeError> {
        let octet = bridge.addresses.allocate().ok_or_else(|| {
            io_error(
                "allocating a pod IP",
                std::io::Error::other("the node's /24 is full"),
            )
        })?;
        let pause = tokio::process::Command::new("unshare")
            .args([
                "--net",
                "--uts",
                "--ipc",
                "--mount",
                "--propagation",
                "private",
                "--",
            ])
            .args([
                "/bin/sh",
                "-c",
                "printf %s \"$0\" > /proc/sys/kernel/hostname && exec sleep 2147483647",
            ])
            .arg(hostname)
            .env_clear()
            .env("PATH", HELPER_PATH)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let pause = match pause {
            Ok(p) => p,
            Err(e) => {
                bridge.addresses.release(octet);
                return Err(io_error("starting the pod sandbox (unshare)", e));
            }
        };
        let pause_pid = pause.id().unwrap_or_default();
        let veth = format!("krtv{}p{octet}", bridge.index);
        let sandbox = Sandbox {
            bridge,
            pause,
            pause_pid,
            octet,
            veth,
        };
        sandbox.wait_for_namespaces().await?;
        sandbox.wire().await?;
        Ok(sandbox)
    }

    /// Waits until `unshare` has made the namespaces (before it, the pid is still in
    /// the host's network namespace).
    async fn wait_for_namespaces(&self) -> Result<(), NodeError> {
        let host = std::fs::read_link("/proc/self/ns/net").ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", self.pause_pid)).ok();
            if ns.is_some() && ns != host {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(io_error(
            "starting the pod sandbox",
            std::io::Error::other("no network namespace within 10s"),
        ))
    }

    async fn wire(&self) -> Result<(), NodeError> {
        let pid = self.pause_pid.to_string();
        let bridge = &self.bridge.name;
        run(
            "ip",
            &[
                "link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", &pid,
            ],
        )
        .await?;
        run("ip", &["link", "set", &self.veth, "master", bridge, "up"]).await?;
        let address = format!("{}/24", self.ip());
        let gateway = self.bridge.gateway().to_string();
        let inside: [&[&str]; 4] = [
            &["ip", "addr", "add", &address, "dev", "eth0"],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "lo", "up"],
            &["ip", "route", "add", "default", "via", &gateway],
        ];
        for command in inside {
            let mut args = vec!["-t", pid.as_str(), "--net", "--"];
            args.extend_from_slice(command);
            run("nsenter", &args).await?;
        }
        Ok(())
    }

    /// The pod's IP.
    pub(super) fn ip(&self) -> Ipv4Addr {
        let g = self.bridge.gateway().octets();
        Ipv4Addr::new(g[0], g[1], g[2], self.octet)
    }

    /// The node's IP as the pod reaches it.
    pub(super) fn host_ip(&self) -> Ipv4Addr {
        self.bridge.gateway()
    }

    /// The process holding the namespaces, for `nsenter -t`.
    pub(super) fn pid(&self) -> u32 {
        self.pause_pid
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        run_quietly("ip", &["link", "del", &self.veth]);
        let _ = self.pause.start_kill();
        self.bridge.addresses.release(self.octet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_hands_out_253_pod_addresses_and_reuses_released_ones() {
        let addresses = Addresses::default();
        let all: Vec<u8> = std::iter::from_fn(|| addresses.allocate()).collect();
        assert_eq!(all.len(), 253);
        assert_eq!((all[0], all[252]), (2, 254));
        assert_eq!(addresses.allocate(), None, "the 254th pod got an address");
        addresses.release(77);
        assert_eq!(addresses.allocate(), Some(77));
    }
}
