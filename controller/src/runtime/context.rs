//! What the Runtime reconciler needs from the rest of the controller.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kruntimes_pss::Policy;
use kube::Client;
use kube::runtime::events::{Event, Recorder};

use super::render::ControllerSelector;

/// Runs executing in a Runtime's pods, as the dispatcher counts them.
pub trait BusySlots: Send + Sync {
    /// Busy slots of the Runtime `name` in `namespace`.
    fn busy_slots(&self, namespace: &str, name: &str) -> u32;
}

impl<F> BusySlots for F
where
    F: Fn(&str, &str) -> u32 + Send + Sync,
{
    fn busy_slots(&self, namespace: &str, name: &str) -> u32 {
        self(namespace, name)
    }
}

/// Where Events go: kube's [`Recorder`] in the controller, anything in a test.
pub trait EventSink: Send + Sync {
    /// Publishes `event` about `regarding`.
    fn publish<'a>(
        &'a self,
        event: &'a Event,
        regarding: &'a ObjectReference,
    ) -> BoxFuture<'a, Result<(), kube::Error>>;
}

impl EventSink for Recorder {
    fn publish<'a>(
        &'a self,
        event: &'a Event,
        regarding: &'a ObjectReference,
    ) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(Recorder::publish(self, event, regarding))
    }
}

/// The reconciler's context.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The controller's pods, admitted to runtimed's port by each NetworkPolicy.
    pub controller_selector: ControllerSelector,
    /// Where Events go.
    pub events: Arc<dyn EventSink>,
    /// Busy slots per Runtime, from the dispatcher.
    pub busy: Arc<dyn BusySlots>,
    /// `--pss-floor`: the Pod Security level every Runtime template is re-validated at.
    pub pod_security_floor: Policy,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("controller_selector", &self.controller_selector)
            .finish_non_exhaustive()
    }
}
