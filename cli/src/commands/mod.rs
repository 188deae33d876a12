//! One module per `krt` command.

pub mod check;
pub mod completion;
pub mod crds;
pub mod inject;
pub mod review;
pub mod run;
