//! The emulated cluster's API server through two independent clients: kube-rs (real
//! TLS, from the kubeconfig the server writes) and Debian's kubectl.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod admission;
mod controllers;
mod harness;
mod kube_crud;
mod kube_watch;
mod kubectl;
mod pod_logs;
