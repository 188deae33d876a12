//! A Run's output: each stream kept bounded ([`BoundedOutput`]: head and tail, the
//! middle dropped and counted) and shared by its readers ([`OutputStream`]), whose
//! followers hold the program back while they keep up.

mod bounded;
mod stream;

pub use bounded::BoundedOutput;
pub use stream::{FollowLimits, Follower, OutputStream};
