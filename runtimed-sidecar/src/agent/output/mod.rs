//! A Run's output: each stream kept bounded ([`BoundedOutput`]: head and tail, the
//! middle dropped and counted) and shared by its readers ([`OutputStream`]), whose
//! followers hold the program back while they keep up, and copied to the agent's
//! stdout as JSON records ([`Mirror`]) for the container log.

mod bounded;
mod mirror;
mod stream;

pub use bounded::BoundedOutput;
pub use mirror::{MIRROR_CHUNK_BYTES, MIRROR_FORMAT_VERSION, Mirror, MirrorSink};
pub use stream::{FollowLimits, Follower, OutputStream};
