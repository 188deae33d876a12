//! Faults a cluster has: a Runtime pod's agent dies mid-Run, the controller restarts
//! mid-Run, a busy pod is deleted, the webhook is down, the API answers errors for a
//! while. Every Run still ends in a phase that tells the truth. Those needing the
//! emulated cluster's control commands are skipped (with the reason printed) on a
//! real cluster.

use k8s_openapi::api::core::v1::Pod;
use kruntimes_api::v1alpha1::{Run, RunPhase};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::runs::{finished, phase, ready_runtime, run, runtime};
use crate::support::{Cluster, eventually, succeeded};

/// Waits until Run `name` runs and returns its pod.
async fn running_on(runs: &Api<Run>, name: &str) -> String {
    eventually(&format!("Run {name} running"), || async {
        let status = runs.get(name).await.ok()?.status?;
        (status.phase? == RunPhase::Running).then_some(status.pod?)
    })
    .await
}

#[tokio::test]
async fn a_run_whose_agent_is_killed_ends_in_error_with_a_reason() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!("skipped: killing a container needs the emulated cluster's control commands");
        return;
    }
    let ns = cluster.namespace("agent-killed").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 1)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let sleeper = run(
        "sleeper",
        "bash",
        json!({"interpreter": "bash", "script": "sleep 300"}),
    );
    runs.create(&PostParams::default(), &sleeper).await.unwrap();
    let pod = running_on(&runs, "sleeper").await;
    // The user's container runs the agent as its PID 1.
    cluster.control(&format!("kill-container {ns} {pod} main"));
    let ended = finished(&runs, "sleeper").await;
    let status = ended.status.as_ref().unwrap();
    assert_eq!(phase(&ended), RunPhase::Error, "{status:?}");
    assert!(status.reason.is_some(), "{status:?}");
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_run_completes_exactly_once_across_a_controller_restart() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!(
            "skipped: restarting the controller needs the emulated cluster's control commands"
        );
        return;
    }
    let ns = cluster.namespace("restart").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 1)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    // Each start of the program counts itself in /tmp, which the Runs of a container
    // share: a second start would print 2.
    let once = run(
        "once",
        "bash",
        json!({"interpreter": "bash", "script":
            "n=$(cat /tmp/krt-e2e-once 2>/dev/null || echo 0); echo $((n+1)) > /tmp/krt-e2e-once; sleep 3; echo started $((n+1))"}),
    );
    runs.create(&PostParams::default(), &once).await.unwrap();
    running_on(&runs, "once").await;
    cluster.control("restart-controller");
    let ended = finished(&runs, "once").await;
    let status = ended.status.as_ref().unwrap();
    assert_eq!(phase(&ended), RunPhase::Succeeded, "{status:?}");
    assert_eq!(
        status.output.as_ref().unwrap().stdout_tail,
        "started 1\n",
        "{status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_run_whose_pod_is_deleted_while_busy_ends_in_error_with_a_reason() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("pod-deleted").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 1)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let busy = run(
        "busy",
        "bash",
        json!({"interpreter": "bash", "script": "sleep 300"}),
    );
    runs.create(&PostParams::default(), &busy).await.unwrap();
    let pod = running_on(&runs, "busy").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    let ended = finished(&runs, "busy").await;
    let status = ended.status.as_ref().unwrap();
    assert_eq!(phase(&ended), RunPhase::Error, "{status:?}");
    assert!(
        status.reason.is_some() && status.message.is_some(),
        "{status:?}"
    );
    assert!(status.completion_time.is_some(), "{status:?}");
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn with_the_webhook_down_a_run_is_refused_clearly_and_nothing_is_created() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!("skipped: stopping the webhook needs the emulated cluster's control commands");
        return;
    }
    let ns = cluster.namespace("webhook-down").await;
    cluster.control("stop-webhook");
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    let refused = run(
        "refused",
        "bash",
        json!({"interpreter": "bash", "script": "echo never"}),
    );
    let err = runs
        .create(&PostParams::default(), &refused)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    // failurePolicy: Fail: the apiserver refuses the write and names the webhook.
    assert_eq!(status.code, 500, "{status:?}");
    assert!(
        status.message.contains("failed calling webhook")
            && status.message.contains("validate.kruntimes.io"),
        "{}",
        status.message
    );
    assert!(
        runs.get_opt("refused").await.unwrap().is_none(),
        "nothing is created"
    );
    assert!(
        runs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Run at all in the namespace"
    );
    // kubectl shows the same refusal.
    let manifest = serde_json::to_string(&refused).unwrap();
    let out = cluster.kubectl(&["-n", &ns, "create", "-f", "-"], Some(&manifest));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed calling webhook"), "{stderr}");
    cluster.delete_namespace(&ns).await;
}

#[tokio::test]
async fn runs_complete_once_the_api_recovers_from_errors() {
    let cluster = Cluster::start().await;
    if !cluster.is_emulated() {
        eprintln!("skipped: failing the API needs the emulated cluster's control commands");
        return;
    }
    let ns = cluster.namespace("api-faults").await;
    ready_runtime(&cluster, &ns, runtime("bash", 1, 2)).await;
    let runs: Api<Run> = Api::namespaced(cluster.client.clone(), &ns);
    // One Run is running when the API starts failing (its end is written during or
    // after the fault); the others are created just before it, so their dispatch and
    // status writes meet it.
    let spec = |s: &str| json!({"interpreter": "bash", "script": s});
    runs.create(
        &PostParams::default(),
        &run("before", "bash", spec("sleep 2; echo before")),
    )
    .await
    .unwrap();
    running_on(&runs, "before").await;
    for (code, name) in [(500, "during-500"), (429, "during-429")] {
        runs.create(&PostParams::default(), &run(name, "bash", spec("echo ok")))
            .await
            .unwrap();
        cluster.control(&format!("fail-api {code} 4"));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    for name in ["before", "during-500", "during-429"] {
        succeeded(&runs, name).await;
    }
    cluster.delete_namespace(&ns).await;
}
