//! The end-to-end suite: webhook, controller and runtimed together, driven through the
//! Kubernetes API as a user drives them (kube-rs and Debian's kubectl). It runs against
//! `kruntimes-test-cluster` by default (as root: the default nextest profile leaves this
//! suite out, `--profile full` runs it) and against the cluster `KUBECONFIG` names when
//! set (kind in `.github/workflows/e2e.yml`). Each scenario uses a namespace of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod artifacts;
mod burst;
mod chart;
mod cli;
mod faults;
mod runs;
mod support;
mod workflows;
