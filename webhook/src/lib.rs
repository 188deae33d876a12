//! the admission webhook of kruntimes.
//!
//! Not implemented yet: this crate reserves its place in the workspace (see
//! `docs/roadmap.md`). Its binary says so and exits with status 2 rather than
//! pretending to work.
