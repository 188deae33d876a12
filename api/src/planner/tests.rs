#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use proptest::prelude::*;

fn job(name: &str, needs: &[usize], steps: usize) -> JobPlan {
    JobPlan {
        name: name.into(),
        needs: needs.to_vec(),
        steps,
    }
}

/// Drives the planner as `krt run --local` does: hand out what it says, record endings.
struct Sim {
    jobs: Vec<JobPlan>,
    fail_fast: bool,
    halt: Option<Halt>,
    steps: Vec<Vec<StepState>>,
    clock: u64,
}

impl Sim {
    fn new(jobs: Vec<JobPlan>, fail_fast: bool) -> Self {
        let steps = jobs
            .iter()
            .map(|j| vec![StepState::NotStarted; j.steps])
            .collect();
        Self {
            jobs,
            fail_fast,
            halt: None,
            steps,
            clock: 0,
        }
    }

    fn plan(&self) -> Plan {
        plan(&self.jobs, self.fail_fast, self.halt, &self.steps)
    }

    /// The steps to start now, marked as running.
    fn ready(&mut self) -> Vec<(usize, usize)> {
        let start = self.plan().start;
        for &(j, s) in &start {
            self.steps[j][s] = StepState::Running;
        }
        start
    }

    fn finished(&mut self, j: usize, s: usize, outcome: StepOutcome) {
        self.clock += 1;
        self.steps[j][s] = StepState::Ended {
            outcome,
            order: self.clock,
        };
    }

    fn phases(&self) -> Vec<JobPhase> {
        self.plan().jobs.iter().map(|j| j.phase).collect()
    }
}

/// fetch -> (test, lint) -> report, as in examples/workflow.yaml.
fn diamond(fail_fast: bool) -> Sim {
    Sim::new(
        vec![
            job("fetch", &[], 1),
            job("test", &[0], 2),
            job("lint", &[0], 1),
            job("report", &[1, 2], 1),
        ],
        fail_fast,
    )
}

#[test]
fn jobs_follow_needs_and_independent_jobs_run_together() {
    let mut p = diamond(true);
    assert_eq!(p.plan().phase, WorkflowPhase::Pending);
    assert_eq!(p.ready(), [(0, 0)]);
    assert_eq!(p.ready(), [], "a step is handed out once");
    assert_eq!(p.plan().phase, WorkflowPhase::Running);
    p.finished(0, 0, StepOutcome::Succeeded);
    assert_eq!(p.ready(), [(1, 0), (2, 0)]);
    p.finished(1, 0, StepOutcome::Succeeded);
    assert_eq!(p.ready(), [(1, 1)], "steps of a job run in order");
    p.finished(2, 0, StepOutcome::Succeeded);
    assert_eq!(p.ready(), []);
    p.finished(1, 1, StepOutcome::Succeeded);
    assert_eq!(p.ready(), [(3, 0)]);
    p.finished(3, 0, StepOutcome::Succeeded);
    assert_eq!(p.ready(), []);
    let plan = p.plan();
    assert!(plan.is_done());
    assert_eq!(plan.phase, WorkflowPhase::Succeeded);
    assert_eq!(plan.cause, None);
    assert!(p.phases().iter().all(|ph| *ph == JobPhase::Succeeded));
}

#[test]
fn fail_fast_skips_jobs_not_started_and_lets_running_ones_finish() {
    let mut p = diamond(true);
    p.ready();
    p.finished(0, 0, StepOutcome::Succeeded);
    p.ready();
    p.finished(2, 0, StepOutcome::Failed);
    assert_eq!(p.ready(), []);
    assert_eq!(p.plan().jobs[1].phase, JobPhase::Running);
    assert_eq!(p.plan().jobs[1].step, Some(0));
    p.finished(1, 0, StepOutcome::Succeeded);
    assert_eq!(p.ready(), [(1, 1)], "a running job goes on");
    p.finished(1, 1, StepOutcome::Succeeded);
    p.ready();
    let plan = p.plan();
    assert!(plan.is_done());
    assert_eq!(plan.phase, WorkflowPhase::Failed);
    assert_eq!(plan.cause, Some((2, 0)));
    assert_eq!(
        p.phases(),
        [
            JobPhase::Succeeded,
            JobPhase::Succeeded,
            JobPhase::Failed,
            JobPhase::Skipped
        ]
    );
}

#[test]
fn without_fail_fast_only_dependents_are_skipped() {
    let mut p = Sim::new(
        vec![job("a", &[], 1), job("b", &[0], 1), job("c", &[], 1)],
        false,
    );
    assert_eq!(p.ready(), [(0, 0), (2, 0)]);
    p.finished(0, 0, StepOutcome::TimedOut);
    assert_eq!(p.ready(), []);
    assert_eq!(p.phases()[1], JobPhase::Skipped);
    assert_eq!(p.phases()[2], JobPhase::Running);
    p.finished(2, 0, StepOutcome::Succeeded);
    p.ready();
    let plan = p.plan();
    assert!(plan.is_done());
    assert_eq!(p.phases()[2], JobPhase::Succeeded);
    assert_eq!(
        plan.phase,
        WorkflowPhase::TimedOut,
        "the first cause names the phase"
    );
}

#[test]
fn a_job_without_steps_succeeds_at_once() {
    let mut p = Sim::new(vec![job("empty", &[], 0), job("after", &[0], 1)], true);
    assert_eq!(p.ready(), [(1, 0)]);
}

#[test]
fn the_first_cause_names_the_phase_and_the_step() {
    let mut p = Sim::new(vec![job("a", &[], 1), job("b", &[], 1)], false);
    p.ready();
    p.finished(1, 0, StepOutcome::Cancelled);
    p.finished(0, 0, StepOutcome::Error);
    let plan = p.plan();
    assert_eq!(plan.phase, WorkflowPhase::Cancelled);
    assert_eq!(plan.cause, Some((1, 0)));
    assert_eq!(plan.jobs[0].phase, JobPhase::Failed, "Error fails the job");
}

#[test]
fn a_halt_starts_nothing_and_ends_started_jobs_with_its_phase() {
    let mut p = Sim::new(
        vec![job("a", &[], 2), job("b", &[0], 1), job("c", &[], 1)],
        true,
    );
    assert_eq!(p.ready(), [(0, 0), (2, 0)]);
    p.halt = Some(Halt::TimedOut);
    p.finished(0, 0, StepOutcome::Succeeded);
    assert_eq!(
        p.ready(),
        [],
        "the next step of a started job does not start"
    );
    let plan = p.plan();
    assert_eq!(plan.jobs[0].phase, JobPhase::TimedOut);
    assert_eq!(plan.jobs[1].phase, JobPhase::Skipped);
    assert_eq!(
        plan.jobs[2].phase,
        JobPhase::Running,
        "a running step is cancelled by the caller"
    );
    assert_eq!(plan.phase, WorkflowPhase::Running);
    p.finished(2, 0, StepOutcome::Cancelled);
    let plan = p.plan();
    assert_eq!(plan.phase, WorkflowPhase::TimedOut);
    assert_eq!(plan.jobs[2].phase, JobPhase::Cancelled);
}

#[test]
fn a_halt_after_every_job_succeeded_changes_nothing() {
    let mut p = Sim::new(vec![job("a", &[], 1)], true);
    p.ready();
    p.finished(0, 0, StepOutcome::Succeeded);
    p.halt = Some(Halt::Cancelled);
    assert_eq!(p.plan().phase, WorkflowPhase::Succeeded);
}

#[test]
fn the_plan_is_a_function_of_the_state_alone() {
    let mut p = diamond(true);
    p.ready();
    p.finished(0, 0, StepOutcome::Succeeded);
    let first = p.plan();
    assert_eq!(first, p.plan(), "planning twice gives the same plan");
    assert_eq!(first.start, [(1, 0), (2, 0)]);
}

#[test]
fn a_cycle_or_an_unknown_need_never_panics() {
    let jobs = vec![job("a", &[1], 1), job("b", &[0], 1), job("c", &[7], 1)];
    let plan = plan(&jobs, true, None, &[]);
    assert_eq!(plan.start, []);
    assert!(plan.jobs.iter().all(|j| j.phase == JobPhase::Pending));
}

#[test]
fn jobs_of_resolves_needs_and_names_an_unknown_one() {
    let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
        "jobs": [
            {"name": "a", "steps": [{"name": "s", "run": {"runtimeRef": {"name": "r"}, "interpreter": "bash", "script": "x"}}]},
            {"name": "b", "needs": ["a"], "steps": []},
        ]
    }))
    .unwrap();
    assert_eq!(
        jobs_of(&spec).unwrap(),
        [job("a", &[], 1), job("b", &[0], 0)]
    );
    let mut bad = spec.clone();
    bad.jobs[1].needs = vec!["zz".into()];
    assert_eq!(
        jobs_of(&bad).unwrap_err().to_string(),
        "spec.jobs[1].needs: names an unknown job \"zz\""
    );
}

/// A DAG: job `j` needs only jobs before it.
fn dags() -> impl Strategy<Value = Vec<JobPlan>> {
    prop::collection::vec(
        (
            0usize..4,
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ),
        1..12,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(j, (steps, needs))| {
                let mut needs: Vec<usize> = if j == 0 {
                    vec![]
                } else {
                    needs.iter().map(|i| i.index(j)).collect()
                };
                needs.sort_unstable();
                needs.dedup();
                JobPlan {
                    name: format!("j{j}"),
                    needs,
                    steps,
                }
            })
            .collect()
    })
}

fn outcomes() -> impl Strategy<Value = StepOutcome> {
    prop_oneof![
        6 => Just(StepOutcome::Succeeded),
        1 => Just(StepOutcome::Failed),
        1 => Just(StepOutcome::TimedOut),
        1 => Just(StepOutcome::Cancelled),
        1 => Just(StepOutcome::Error),
    ]
}

proptest! {
    /// Every valid Workflow reaches a terminal phase, whatever its steps do, and on the
    /// way no job starts before its needs succeeded and steps run in order.
    #[test]
    fn every_workflow_converges_to_a_terminal_phase(
        jobs in dags(),
        fail_fast in any::<bool>(),
        results in prop::collection::vec((outcomes(), any::<prop::sample::Index>()), 64),
        halt_at in prop::option::of(0usize..64),
        halt in prop_oneof![Just(Halt::Cancelled), Just(Halt::TimedOut)],
    ) {
        let total: usize = jobs.iter().map(|j| j.steps).sum();
        let mut sim = Sim::new(jobs.clone(), fail_fast);
        let mut running: Vec<(usize, usize)> = Vec::new();
        let mut results = results.into_iter().cycle();
        // Each round ends one step, so total + 1 rounds are always enough.
        for round in 0..=total + 1 {
            if halt_at == Some(round) {
                sim.halt = Some(halt);
            }
            for (j, s) in sim.ready() {
                for &n in &jobs[j].needs {
                    prop_assert_eq!(sim.plan().jobs[n].phase, JobPhase::Succeeded, "need of {} ran", j);
                }
                for earlier in 0..s {
                    let succeeded = matches!(
                        sim.steps[j][earlier],
                        StepState::Ended { outcome: StepOutcome::Succeeded, .. }
                    );
                    prop_assert!(succeeded, "step {} of job {} started early", s, j);
                }
                running.push((j, s));
            }
            if running.is_empty() {
                break;
            }
            let (outcome, pick) = results.next().unwrap();
            let (j, s) = running.swap_remove(pick.index(running.len()));
            sim.finished(j, s, outcome);
        }
        let plan = sim.plan();
        prop_assert!(plan.is_done(), "not terminal: {:?}", plan);
        prop_assert!(plan.jobs.iter().all(|j| is_terminal(j.phase)));
        prop_assert!(plan.start.is_empty());
        if plan.phase == WorkflowPhase::Succeeded {
            prop_assert!(plan.jobs.iter().all(|j| j.phase == JobPhase::Succeeded));
        } else {
            prop_assert!(plan.cause.is_some() || sim.halt.is_some());
        }
        // A Skipped job never ran a step.
        for (j, state) in plan.jobs.iter().enumerate() {
            if state.phase == JobPhase::Skipped {
                prop_assert!(sim.steps[j].iter().all(|s| *s == StepState::NotStarted));
            }
        }
    }
}
