//! The NetworkPolicy in front of a Runtime's pods: only the controller reaches
//! runtimed's port, and nothing else reaches the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kruntimes_api::v1alpha1::Runtime;

use super::{Owner, RUNTIMED_GRPC_PORT};
use crate::Error;
use crate::naming;

/// The controller's pods, as a NetworkPolicy peer: which pods, in which namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSelector {
    pod_labels: BTreeMap<String, String>,
    namespace_labels: Option<BTreeMap<String, String>>,
}

/// A selector that would open runtimed's port to more than the controller.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// No pod labels: the peer would be every pod.
    #[error(
        "controller pod selector: Required value: at least one label, else every pod could reach runtimed"
    )]
    NoPodLabels,
    /// An empty namespace selector: the peer would be in every namespace.
    #[error(
        "controller namespace selector: Required value: at least one label, else pods of every namespace could reach runtimed (leave it out for the Runtime's own namespace)"
    )]
    EmptyNamespaceSelector,
}

impl ControllerSelector {
    /// Pods with all of `pod_labels`, in the namespaces with all of `namespace_labels`
    /// (such as `kubernetes.io/metadata.name: kruntimes-system`), or, with `None`, in
    /// the Runtime's own namespace. Empty label sets are refused: they select every pod
    /// or every namespace.
    pub fn new(
        pod_labels: BTreeMap<String, String>,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Result<Self, SelectorError> {
        if pod_labels.is_empty() {
            return Err(SelectorError::NoPodLabels);
        }
        if namespace_labels.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(SelectorError::EmptyNamespaceSelector);
        }
        Ok(Self {
            pod_labels,
            namespace_labels,
        })
    }

    fn peer(&self) -> NetworkPolicyPeer {
        let selector = |labels: &BTreeMap<String, String>| LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        };
        NetworkPolicyPeer {
            pod_selector: Some(selector(&self.pod_labels)),
            namespace_selector: self.namespace_labels.as_ref().map(selector),
            ip_block: None,
        }
    }
}

/// The NetworkPolicy of `runtime`: it selects the Runtime's pods for ingress and
/// admits only `controller` on TCP [`RUNTIMED_GRPC_PORT`], so every other connection
/// to those pods is dropped (where the cluster's network plugin enforces policies).
pub fn network_policy(
    runtime: &Runtime,
    controller: &ControllerSelector,
) -> Result<NetworkPolicy, Error> {
    let owner = Owner::of(runtime)?;
    Ok(NetworkPolicy {
        metadata: owner.metadata(naming::network_policy_name(&owner.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(owner.selector_labels()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![controller.peer()]),
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("TCP".to_owned()),
                    port: Some(IntOrString::Int(i32::from(RUNTIMED_GRPC_PORT))),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use kruntimes_api::labels::RUNTIME_LABEL;

    use super::super::fixtures::runtime;
    use super::super::{MANAGED_BY, MANAGED_BY_LABEL};
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn controller() -> ControllerSelector {
        ControllerSelector::new(
            labels(&[("app.kubernetes.io/name", "kruntimes-controller")]),
            Some(labels(&[(
                "kubernetes.io/metadata.name",
                "kruntimes-system",
            )])),
        )
        .unwrap()
    }

    #[test]
    fn selects_the_runtimes_pods_for_ingress_only() {
        let np = network_policy(&runtime(), &controller()).unwrap();
        assert_eq!(np.metadata.name.as_deref(), Some("python-runtimed"));
        let meta_labels = np.metadata.labels.as_ref().unwrap();
        assert_eq!(meta_labels[RUNTIME_LABEL], "python");
        assert_eq!(meta_labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(
            np.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap(),
            labels(&[(RUNTIME_LABEL, "python")])
        );
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        assert!(spec.egress.is_none());
    }

    #[test]
    fn admits_only_the_controller_on_the_grpc_port() {
        let spec = network_policy(&runtime(), &controller())
            .unwrap()
            .spec
            .unwrap();
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        let ports = rules[0].ports.as_ref().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(ports[0].port, Some(IntOrString::Int(9440)));
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        let pods = from[0].pod_selector.as_ref().unwrap().match_labels.clone();
        assert_eq!(
            pods,
            Some(labels(&[(
                "app.kubernetes.io/name",
                "kruntimes-controller"
            )]))
        );
        let namespaces = from[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone();
        assert_eq!(
            namespaces,
            Some(labels(&[(
                "kubernetes.io/metadata.name",
                "kruntimes-system"
            )]))
        );
    }

    #[test]
    fn without_a_namespace_selector_the_peer_is_in_the_runtimes_namespace() {
        let same_namespace = ControllerSelector::new(labels(&[("app", "c")]), None).unwrap();
        let spec = network_policy(&runtime(), &same_namespace)
            .unwrap()
            .spec
            .unwrap();
        let from = spec.ingress.unwrap()[0].from.clone().unwrap();
        assert!(from[0].namespace_selector.is_none());
    }

    #[test]
    fn selectors_matching_everything_are_refused() {
        assert_eq!(
            ControllerSelector::new(BTreeMap::new(), None),
            Err(SelectorError::NoPodLabels)
        );
        assert_eq!(
            ControllerSelector::new(labels(&[("app", "c")]), Some(BTreeMap::new())),
            Err(SelectorError::EmptyNamespaceSelector)
        );
    }
}
