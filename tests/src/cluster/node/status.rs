//! The Pod's state as the node tracks it, and the `PodStatus` the kubelet would report
//! for it: phase, conditions, and a status per container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::plan::{ContainerPlan, Kind};

/// Where one container is.
#[derive(Clone, Debug)]
pub(super) enum Phase {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

/// One container's state.
#[derive(Clone, Debug)]
pub(super) struct Ctr {
    pub(super) phase: Phase,
    /// Host pid of the container's PID 1, once known.
    pub(super) pid: Option<u32>,
    /// Host pid of the `unshare` that forked it.
    pub(super) outer: Option<u32>,
    /// The node sent it SIGKILL (see `container::exit_code`).
    pub(super) killed: bool,
    /// The startup probe passed (or there is none) while running.
    pub(super) started: bool,
    pub(super) ready: bool,
}

impl Ctr {
    pub(super) fn waiting(reason: &str) -> Ctr {
        Ctr {
            phase: Phase::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            pid: None,
            outer: None,
            killed: false,
            started: false,
            ready: false,
        }
    }

    pub(super) fn running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    pub(super) fn terminated(&self) -> Option<i32> {
        match self.phase {
            Phase::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }
}

/// The Pod's state.
#[derive(Clone, Debug)]
pub(super) struct State {
    pub(super) containers: Vec<Ctr>,
    pub(super) start_time: Timestamp,
    pub(super) pod_ip: Option<String>,
    pub(super) host_ip: Option<String>,
    pub(super) initialized: bool,
    /// An init container failed and the Pod's restartPolicy is Never.
    pub(super) init_failed: bool,
    /// Each condition's last value and when it took it (`lastTransitionTime`).
    pub(super) transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

/// Condition `kind` with value `ok`, its transition time kept while the value stays.
fn condition(state: &mut State, kind: &'static str, ok: bool, reason: &str) -> PodCondition {
    let now = Timestamp::now();
    let entry = state.transitions.entry(kind).or_insert((ok, now));
    if entry.0 != ok {
        *entry = (ok, now);
    }
    PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(Time(entry.1)),
        reason: (!ok).then(|| reason.to_owned()),
        ..PodCondition::default()
    }
}

fn container_status(plan: &ContainerPlan, ctr: &Ctr) -> ContainerStatus {
    let state = match &ctr.phase {
        Phase::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        Phase::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        Phase::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                started_at: Some(Time(*started_at)),
                finished_at: Some(Time(*finished_at)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
    };
    ContainerStatus {
        name: plan.name.clone(),
        image: plan.image.clone(),
        image_id: String::new(),
        ready: ctr.ready,
        started: Some(ctr.started),
        restart_count: 0,
        state: Some(state),
        ..ContainerStatus::default()
    }
}

/// The phase as the kubelet derives it. Containers are never restarted (see the module
/// docs of the node), so with `restartPolicy: Always` a Pod whose containers all ended
/// stays `Running`, as it would between restarts.
fn pod_phase(plans: &[ContainerPlan], state: &State, restart_policy: &str) -> &'static str {
    if state.init_failed {
        return "Failed";
    }
    if !state.initialized {
        return "Pending";
    }
    let regular: Vec<&Ctr> = plans
        .iter()
        .zip(&state.containers)
        .filter(|(p, _)| p.kind == Kind::Regular)
        .map(|(_, c)| c)
        .collect();
    if regular
        .iter()
        .any(|c| matches!(c.phase, Phase::Waiting { .. }))
    {
        return "Pending";
    }
    let codes: Option<Vec<i32>> = regular.iter().map(|c| c.terminated()).collect();
    match (codes, restart_policy) {
        (Some(codes), "Never") if codes.iter().all(|c| *c == 0) => "Succeeded",
        (Some(_), "Never") => "Failed",
        (Some(codes), "OnFailure") if codes.iter().all(|c| *c == 0) => "Succeeded",
        _ => "Running",
    }
}

/// The status for `state`.
pub(super) fn render(
    plans: &[ContainerPlan],
    state: &mut State,
    restart_policy: &str,
) -> PodStatus {
    let phase = pod_phase(plans, state, restart_policy);
    let mut init_statuses = Vec::new();
    let mut statuses = Vec::new();
    let mut ready = true;
    for (plan, ctr) in plans.iter().zip(&state.containers) {
        let status = container_status(plan, ctr);
        match plan.kind {
            Kind::Init => init_statuses.push(status),
            Kind::Sidecar => {
                ready &= ctr.ready;
                init_statuses.push(status);
            }
            Kind::Regular => {
                ready &= ctr.ready;
                statuses.push(status);
            }
        }
    }
    let ready = ready && state.initialized && phase == "Running";
    let initialized = state.initialized;
    let conditions = vec![
        condition(state, "PodScheduled", true, ""),
        condition(
            state,
            "Initialized",
            initialized,
            "ContainersNotInitialized",
        ),
        condition(state, "ContainersReady", ready, "ContainersNotReady"),
        condition(state, "Ready", ready, "ContainersNotReady"),
    ];
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: Some(init_statuses).filter(|s| !s.is_empty()),
        pod_ip: state.pod_ip.clone(),
        pod_ips: state
            .pod_ip
            .clone()
            .map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip }]),
        host_ip: state.host_ip.clone(),
        host_ips: state
            .host_ip
            .clone()
            .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip }]),
        start_time: Some(Time(state.start_time)),
        ..PodStatus::default()
    }
}
