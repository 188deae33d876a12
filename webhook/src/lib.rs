//! The kruntimes admission webhook.
//!
//! - [`inject`]: the injector, Pod -> Pod with runtimed (pure);
//! - [`admission`]: the `/validate` and `/mutate` handlers on AdmissionReviews (pure:
//!   namespace Pod Security levels come through the [`admission::NamespaceLevels`] trait).
//!
//! - [`certs`]: serving certificates: files, or self-managed (own CA in a Secret, caBundle
//!   patched; see `docs/webhook-certificates.md`);
//! - [`cluster`]: API mode's caches (namespace and Runtime reflectors);
//! - [`server`]: the HTTPS server (see `docs/webhook.md`).
//!
//! `krt inject` and `krt review` run the same handlers offline.

pub mod admission;
pub mod certs;
pub mod cluster;
pub mod inject;
pub mod server;
