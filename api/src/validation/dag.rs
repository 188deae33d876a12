//! The job graph of a Workflow: names, `needs`, cycles and size limits.

use std::collections::HashMap;

use super::names::check_dns1123_label;
use super::{FieldPath, Reason, Violation};
use crate::v1alpha1::Job;
use crate::v1alpha1::limits::{MAX_JOBS, MAX_NEEDS, MAX_STEPS_PER_JOB, MAX_STEPS_PER_WORKFLOW};

/// Most cycles described in one report; one per strongly connected group is enough to
/// fix the graph, and a pathological graph must not produce a huge denial.
const MAX_REPORTED_CYCLES: usize = 10;

/// Checks job and step names, `needs`, cycles and size limits. `jobs` is at `path`
/// (normally `spec.jobs`).
pub fn check_jobs(jobs: &[Job], path: &FieldPath) -> Vec<Violation> {
    let mut violations = Vec::new();
    if jobs.is_empty() {
        violations.push(Violation::new(
            path,
            Reason::Required,
            "a workflow needs at least one job",
        ));
        return violations;
    }
    if jobs.len() > MAX_JOBS {
        violations.push(Violation::with_value(
            path,
            Reason::TooMany,
            jobs.len(),
            format!("must have at most {MAX_JOBS} jobs"),
        ));
    }
    let total_steps: usize = jobs.iter().map(|j| j.steps.len()).sum();
    if total_steps > MAX_STEPS_PER_WORKFLOW {
        violations.push(Violation::with_value(
            path,
            Reason::TooMany,
            total_steps,
            format!("must have at most {MAX_STEPS_PER_WORKFLOW} steps across all jobs"),
        ));
    }

    // First index of each job name; later duplicates are reported and ignored.
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let job_path = path.index(i);
        if let Err(why) = check_dns1123_label(&job.name) {
            violations.push(Violation::with_value(
                job_path.child("name"),
                Reason::Invalid,
                &job.name,
                why,
            ));
        }
        if let Some(first) = index_of.get(job.name.as_str()) {
            violations.push(Violation::with_value(
                job_path.child("name"),
                Reason::Duplicate,
                &job.name,
                format!("job names must be unique; jobs[{first}] has the same name"),
            ));
        } else {
            index_of.insert(&job.name, i);
        }
        violations.extend(check_steps(job, &job_path));
    }

    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        let needs_path = path.index(i).child("needs");
        if job.needs.len() > MAX_NEEDS {
            violations.push(Violation::with_value(
                &needs_path,
                Reason::TooMany,
                job.needs.len(),
                format!("must have at most {MAX_NEEDS} entries"),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, need) in job.needs.iter().enumerate() {
            let need_path = needs_path.index(k);
            if let Some(first) = seen.insert(need, k) {
                violations.push(Violation::with_value(
                    need_path,
                    Reason::Duplicate,
                    need,
                    format!("already listed as needs[{first}]"),
                ));
                continue;
            }
            if *need == job.name {
                violations.push(Violation::with_value(
                    need_path,
                    Reason::Invalid,
                    need,
                    "a job may not need itself",
                ));
                continue;
            }
            match index_of.get(need.as_str()) {
                Some(&target) => edges[i].push((target, k)),
                None => violations.push(Violation::with_value(
                    need_path,
                    Reason::NotFound,
                    need,
                    format!("no job named {need:?}; jobs are: {}", names.join(", ")),
                )),
            }
        }
    }
    violations.extend(find_cycles(&names, &edges, path));
    violations
}

fn check_steps(job: &Job, job_path: &FieldPath) -> Vec<Violation> {
    let mut violations = Vec::new();
    let steps_path = job_path.child("steps");
    if job.steps.is_empty() {
        violations.push(Violation::new(
            &steps_path,
            Reason::Required,
            "a job needs at least one step",
        ));
    }
    if job.steps.len() > MAX_STEPS_PER_JOB {
        violations.push(Violation::with_value(
            &steps_path,
            Reason::TooMany,
            job.steps.len(),
            format!("must have at most {MAX_STEPS_PER_JOB} steps"),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (s, step) in job.steps.iter().enumerate() {
        let name_path = steps_path.index(s).child("name");
        if let Err(why) = check_dns1123_label(&step.name) {
            violations.push(Violation::with_value(
                &name_path,
                Reason::Invalid,
                &step.name,
                why,
            ));
        }
        if let Some(first) = seen.insert(&step.name, s) {
            violations.push(Violation::with_value(
                name_path,
                Reason::Duplicate,
                &step.name,
                format!("step names must be unique in a job; steps[{first}] has the same name"),
            ));
        }
    }
    violations
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnStack,
    Done,
}

/// Depth-first search; every back edge closes a cycle, reported as `a -> b -> a` at the
/// `needs` entry that closes it. Cycles over the same set of jobs are reported once.
fn find_cycles(names: &[&str], edges: &[Vec<(usize, usize)>], path: &FieldPath) -> Vec<Violation> {
    let mut marks = vec![Mark::New; names.len()];
    let mut reported: Vec<Vec<usize>> = Vec::new();
    let mut violations = Vec::new();
    for start in 0..names.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Explicit stack of (node, next edge to look at) so deep graphs cannot overflow.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&(target, need_index)) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::OnStack;
                    stack.push((target, 0));
                }
                Mark::OnStack => {
                    let from = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported.contains(&key) || reported.len() >= MAX_REPORTED_CYCLES {
                        continue;
                    }
                    reported.push(key);
                    let mut shown: Vec<&str> = cycle.iter().map(|&n| names[n]).collect();
                    shown.push(names[target]);
                    violations.push(Violation::with_value(
                        path.index(node).child("needs").index(need_index),
                        Reason::Invalid,
                        names[target],
                        format!("dependency cycle: {}", shown.join(" -> ")),
                    ));
                }
                Mark::Done => {}
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::{RunSpec, Step};

    fn job(name: &str, needs: &[&str]) -> Job {
        Job {
            name: name.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            steps: vec![Step {
                name: "s".into(),
                run: Some(RunSpec::default()),
                uses: None,
            }],
        }
    }

    fn check(jobs: &[Job]) -> Vec<String> {
        check_jobs(jobs, &FieldPath::root("spec").child("jobs"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_diamond_passes() {
        let jobs = [
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["a"]),
            job("d", &["b", "c"]),
        ];
        assert_eq!(check(&jobs), Vec::<String>::new());
    }

    #[test]
    fn unknown_need_lists_the_jobs() {
        let jobs = [job("fetch", &[]), job("build", &["fetc"])];
        assert_eq!(
            check(&jobs),
            [
                "spec.jobs[1].needs[0]: Not found: \"fetc\" (no job named \"fetc\"; jobs are: fetch, build)"
            ]
        );
    }

    #[test]
    fn a_cycle_is_printed_once() {
        let jobs = [job("a", &["c"]), job("b", &["a"]), job("c", &["b"])];
        // a needs c, c needs b, b needs a: reported once, where the search closes it.
        assert_eq!(
            check(&jobs),
            ["spec.jobs[1].needs[0]: Invalid value: \"a\" (dependency cycle: a -> c -> b -> a)"]
        );
    }

    #[test]
    fn self_duplicate_and_empty() {
        let jobs = [job("a", &["a", "a"])];
        let got = check(&jobs);
        assert!(
            got.contains(
                &"spec.jobs[0].needs[0]: Invalid value: \"a\" (a job may not need itself)"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"spec.jobs[0].needs[1]: Duplicate value: \"a\" (already listed as needs[0])"
                    .to_string()
            ),
            "{got:?}"
        );
        assert_eq!(
            check(&[]),
            ["spec.jobs: Required value: a workflow needs at least one job"]
        );
        let mut no_steps = job("x", &[]);
        no_steps.steps.clear();
        assert_eq!(
            check(&[no_steps]),
            ["spec.jobs[0].steps: Required value: a job needs at least one step"]
        );
    }

    #[test]
    fn duplicate_names() {
        let jobs = [job("a", &[]), job("a", &[])];
        assert_eq!(
            check(&jobs),
            [
                "spec.jobs[1].name: Duplicate value: \"a\" (job names must be unique; jobs[0] has the same name)"
            ]
        );
    }

    #[test]
    fn limits_at_the_boundary() {
        let at_limit: Vec<Job> = (0..MAX_JOBS).map(|i| job(&format!("j{i}"), &[])).collect();
        assert!(check(&at_limit).is_empty());
        let over: Vec<Job> = (0..=MAX_JOBS).map(|i| job(&format!("j{i}"), &[])).collect();
        let got = check(&over);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("spec.jobs: Too many: 101"), "{got:?}");
    }

    /// `count` separate two-job cycles: a{i} needs b{i}, b{i} needs a{i}.
    fn two_job_cycles(count: usize) -> Vec<Job> {
        (0..count)
            .flat_map(|i| {
                let (a, b) = (format!("a{i}"), format!("b{i}"));
                [job(&a, &[b.as_str()]), job(&b, &[a.as_str()])]
            })
            .collect()
    }

    /// Up to `MAX_REPORTED_CYCLES` cycles are each reported; one more is not, and the
    /// Workflow is refused all the same.
    #[test]
    fn reported_cycles_boundary() {
        assert_eq!(MAX_REPORTED_CYCLES, 10, "the value in docs/api.md");
        for (cycles, reported) in [
            (MAX_REPORTED_CYCLES, MAX_REPORTED_CYCLES),
            (MAX_REPORTED_CYCLES + 1, MAX_REPORTED_CYCLES),
        ] {
            let got = check(&two_job_cycles(cycles));
            assert_eq!(got.len(), reported, "{cycles} cycles: {got:#?}");
            for (i, line) in got.iter().enumerate() {
                assert_eq!(
                    line,
                    &format!(
                        "spec.jobs[{}].needs[0]: Invalid value: \"a{i}\" (dependency cycle: a{i} -> b{i} -> a{i})",
                        2 * i + 1
                    )
                );
            }
        }
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let jobs: Vec<Job> = (0..MAX_JOBS)
            .map(|i| {
                let need = format!("j{}", (i + 1) % MAX_JOBS);
                job(&format!("j{i}"), &[need.as_str()])
            })
            .collect();
        let got = check(&jobs);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].matches(" -> ").count(), MAX_JOBS);
    }
}
