//! The Run scheduler, pure: which queued Run goes to which warm pod. A function of the
//! queue (FIFO by creation) and the pods' free slots, so it is the same after a restart
//! once the busy slots are rebuilt from runtimed's `List`.

use std::collections::BTreeMap;

/// Runs of one Runtime that the controller holds in its queue at most; Runs beyond it
/// stay `Pending` (reason `WaitingForCapacity`) in the API and join the queue, oldest
/// first, as it drains. It bounds the controller's memory per Runtime whatever is
/// created, while every Run stays in etcd where it is safe.
pub const MAX_QUEUED_RUNS_PER_RUNTIME: usize = 1024;

/// A warm pod as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSlots {
    /// The pod's name.
    pub name: String,
    /// PodReady and runtimed's `Health` answering.
    pub ready: bool,
    /// Being deleted (a rollout, a scale-down): takes no new Run.
    pub terminating: bool,
    /// Runs executing in it, as the controller counts them.
    pub busy: u32,
}

/// A Run waiting for a pod, identified by its uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRun {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.creationTimestamp`, then the name: the FIFO order.
    pub created: (i64, String),
}

/// One decision: this Run goes to this pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The Run's uid.
    pub uid: String,
    /// The pod's name.
    pub pod: String,
}

/// Assigns queued Runs, oldest first, each to the ready pod with the most free slots
/// (ties: by name), never more than `concurrency` Runs to one pod. Runs that find no
/// free slot stay queued.
pub fn assign(queue: &[QueuedRun], pods: &[PodSlots], concurrency: u32) -> Vec<Assignment> {
    let mut order: Vec<&QueuedRun> = queue.iter().collect();
    order.sort_by(|a, b| a.created.cmp(&b.created));
    let mut busy: BTreeMap<&str, u32> = pods
        .iter()
        .filter(|p| p.ready && !p.terminating)
        .map(|p| (p.name.as_str(), p.busy))
        .collect();
    let mut out = Vec::new();
    for run in order {
        let choice = busy
            .iter()
            .filter(|(_, b)| **b < concurrency)
            .min_by_key(|(name, b)| (**b, **name))
            .map(|(name, _)| *name);
        let Some(pod) = choice else { break };
        if let Some(b) = busy.get_mut(pod) {
            *b += 1;
        }
        out.push(Assignment {
            uid: run.uid.clone(),
            pod: pod.to_owned(),
        });
    }
    out
}

/// Free slots over every pod that takes Runs.
pub fn free_slots(pods: &[PodSlots], concurrency: u32) -> u32 {
    pods.iter()
        .filter(|p| p.ready && !p.terminating)
        .map(|p| concurrency.saturating_sub(p.busy))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(name: &str, busy: u32) -> PodSlots {
        PodSlots {
            name: name.into(),
            ready: true,
            terminating: false,
            busy,
        }
    }

    fn run(uid: &str, t: i64) -> QueuedRun {
        QueuedRun {
            uid: uid.into(),
            created: (t, uid.into()),
        }
    }

    #[test]
    fn oldest_runs_go_first_to_the_least_loaded_pod() {
        let pods = [pod("a", 1), pod("b", 0)];
        let queue = [run("late", 5), run("early", 1), run("mid", 3)];
        let got = assign(&queue, &pods, 2);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|a| (a.uid.as_str(), a.pod.as_str()))
            .collect();
        assert_eq!(pairs, [("early", "b"), ("mid", "a"), ("late", "b")]);
    }

    #[test]
    fn a_pod_never_gets_more_than_its_concurrency() {
        let got = assign(&[run("x", 1), run("y", 2)], &[pod("a", 1)], 2);
        assert_eq!(got.len(), 1, "one free slot, one Run");
        assert!(assign(&[run("x", 1)], &[pod("a", 2)], 2).is_empty());
    }

    #[test]
    fn unready_and_terminating_pods_take_no_run() {
        let mut unready = pod("a", 0);
        unready.ready = false;
        let mut leaving = pod("b", 0);
        leaving.terminating = true;
        assert!(assign(&[run("x", 1)], &[unready.clone(), leaving.clone()], 4).is_empty());
        assert_eq!(free_slots(&[unready, leaving, pod("c", 1)], 4), 3);
    }

    proptest! {
        #[test]
        fn capacity_holds_and_order_is_kept(
            busy in prop::collection::vec(0u32..5, 0..6),
            runs in 0usize..40,
            concurrency in 1u32..5,
        ) {
            let pods: Vec<PodSlots> = busy.iter().enumerate().map(|(i, b)| pod(&format!("p{i}"), *b)).collect();
            let queue: Vec<QueuedRun> = (0..runs).map(|i| run(&format!("r{i:03}"), i as i64)).collect();
            let got = assign(&queue, &pods, concurrency);
            prop_assert_eq!(got.len() as u32, free_slots(&pods, concurrency).min(runs as u32));
            for p in &pods {
                let added = got.iter().filter(|a| a.pod == p.name).count() as u32;
                prop_assert!(added == 0 || p.busy + added <= concurrency);
            }
            // The assigned Runs are exactly the oldest ones.
            for (i, a) in got.iter().enumerate() {
                prop_assert_eq!(&a.uid, &format!("r{i:03}"));
            }
        }
    }
}
