#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{Runtimes, check_credentials, local_run_uid, to_request};
use kruntimes_api::v1alpha1::Run;
use kruntimes_runtimed_api::request::MAX_RUN_UID_BYTES;
use serde_json::json;

fn run(artifacts: bool) -> Run {
    let mut run = json!({
        "apiVersion": "kruntimes.io/v1alpha1", "kind": "Run",
        "metadata": {"name": "r"},
        "spec": {"runtimeRef": {"name": "bash"}, "interpreter": "bash", "script": "echo hi"},
    });
    if artifacts {
        run["spec"]["artifacts"] = json!({"paths": ["out/**"]});
    }
    serde_json::from_value(run).unwrap()
}

fn runtimes(artifacts: bool) -> Runtimes {
    let mut spec =
        json!({"template": {"spec": {"containers": [{"name": "main", "image": "bash"}]}}});
    if artifacts {
        spec["artifacts"] = json!({"s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "runs"}});
    }
    Runtimes::from([("bash".to_owned(), serde_json::from_value(spec).unwrap())])
}

#[test]
fn artifacts_without_a_runtime_in_the_file_say_where_it_must_be() {
    let missing = to_request(&run(true), &Runtimes::new()).unwrap_err();
    assert!(
        missing.contains("spec.artifacts needs Runtime \"bash\" in the same file"),
        "{missing}"
    );
    let no_section = to_request(&run(true), &runtimes(false)).unwrap_err();
    assert!(
        no_section.contains("Runtime \"bash\" has no spec.artifacts section"),
        "{no_section}"
    );
}

#[test]
fn artifacts_without_credentials_name_the_missing_variable() {
    let rt = runtimes(true);
    let request = kruntimes_runtimed_api::request::execute_request(
        &run(true).spec,
        "u".into(),
        rt.get("bash"),
    )
    .unwrap();
    let error = check_credentials(&request, |name| name == "AWS_ACCESS_KEY_ID").unwrap_err();
    assert!(
        error.starts_with("spec.artifacts: AWS_SECRET_ACCESS_KEY is not set"),
        "{error}"
    );
    assert_eq!(check_credentials(&request, |_| true), Ok(()));
    let plain =
        kruntimes_runtimed_api::request::execute_request(&run(false).spec, "u".into(), None)
            .unwrap();
    assert_eq!(
        check_credentials(&plain, |_| false),
        Ok(()),
        "no artifacts, no credentials needed"
    );
}

#[test]
fn a_cancelled_run_is_refused_before_anything_runs() {
    let mut cancelled = run(false);
    cancelled.spec.cancel = Some(true);
    let error = to_request(&cancelled, &Runtimes::new()).unwrap_err();
    assert_eq!(error, "spec.cancel is true: a cancelled Run does not run");
}

#[test]
fn a_local_uid_fits_runtimed_for_the_longest_run_name() {
    let longest = "a".repeat(253);
    let uid = local_run_uid(&longest, u32::MAX);
    assert_eq!(uid.len(), MAX_RUN_UID_BYTES);
    assert!(uid.starts_with("local-aaa") && uid.ends_with(&format!("-{}", u32::MAX)));
    assert!(
        uid.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    );
    assert_eq!(
        local_run_uid("arts", 7),
        "local-arts-7",
        "a short name is kept whole"
    );
}
