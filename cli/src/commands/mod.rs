//! One module per `krt` command.

pub mod check;
pub mod crds;
