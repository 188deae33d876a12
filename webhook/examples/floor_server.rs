//! The load benchmark's floor server, to run by hand:
//! `cargo run --release -p kruntimes-webhook --example floor_server -- CERT KEY 127.0.0.1:9444`.
//! The benchmark (`benches/load.rs`) starts the same code as a child process itself.

#[path = "../benches/load/floor.rs"]
mod floor;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: floor_server CERT_PEM KEY_PEM ADDR";
    let cert = args.next().context(usage)?;
    let key = args.next().context(usage)?;
    let addr = args
        .next()
        .context(usage)?
        .to_str()
        .context("ADDR is not UTF-8")?
        .parse()
        .context("ADDR: expected IP:PORT")?;
    println!(
        "floor server on https://{addr}: every review answered with uid {:?}: {}",
        floor::CANNED_UID,
        floor::CANNED_REVIEW
    );
    floor::serve(cert.as_ref(), key.as_ref(), addr)
}
