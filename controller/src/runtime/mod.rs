//! The Runtime reconciler: a Runtime becomes a warm pool.
//!
//! For each Runtime the controller server-side applies three objects, all owned by the
//! Runtime (so deleting it deletes them):
//! - a Secret ([`crate::naming::secret_name`]) with runtimed's bearer token and a
//!   self-signed TLS certificate and key ([`credentials`]);
//! - a Deployment ([`crate::naming::deployment_name`]) of the Runtime's pod template,
//!   labelled so the webhook injects runtimed, annotated with what the injector reads
//!   ([`render::deployment`]);
//! - a NetworkPolicy ([`crate::naming::network_policy_name`]) admitting only the
//!   controller to runtimed's port ([`render::network_policy`]).
//!
//! Then it writes the Runtime's status ([`status`]) when it changed; between
//! reconciles, [`capacity`] keeps `status.capacity.busy` current. Deciding is pure
//! ([`render`], [`status`], [`credentials`] with the time passed in); [`reconcile`]
//! drives it against the API server.

pub mod capacity;
pub mod context;
pub mod credentials;
pub mod reconcile;
pub mod render;
pub mod revalidate;
pub mod status;

pub use context::{BusySlots, Context, EventSink};
pub use reconcile::{builder, controller, error_policy, reconcile};
pub use render::{ControllerSelector, SelectorError};
