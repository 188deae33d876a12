//! Through kube-rs: watches from a resourceVersion and 410, bookmarks and timeouts,
//! kube-runtime's watcher and event recorder, and the create-to-watch-event overhead.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kruntimes_e2e::cluster::api::ApiConfig;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

use crate::harness::{Cluster, admin_users};
use crate::kube_crud::config_map;

#[tokio::test]
async fn watch_replays_from_a_resource_version_and_answers_410_when_too_old() {
    let cluster = Cluster::with(ApiConfig {
        users: admin_users(),
        history_limit: 5,
        ..ApiConfig::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &config_map("w1", json!({})))
        .await
        .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap().expect("an event") {
            WatchEvent::Added(c) => seen.push(("ADDED", c.metadata.name.unwrap())),
            WatchEvent::Modified(c) => seen.push(("MODIFIED", c.metadata.name.unwrap())),
            WatchEvent::Deleted(c) => seen.push(("DELETED", c.metadata.name.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w1".to_owned()),
            ("MODIFIED", "w1".to_owned()),
            ("DELETED", "w1".to_owned())
        ]
    );
    for i in 0..6 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("fill{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let mut old = api
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_send_bookmarks_and_end_at_their_timeout() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let began = Instant::now();
    let params = WatchParams::default().timeout(1);
    let mut short = api.watch(&params, &start).await.unwrap().boxed();
    assert!(
        short.try_next().await.unwrap().is_none(),
        "the stream ends at timeoutSeconds"
    );
    assert!(began.elapsed() >= Duration::from_secs(1));

    let interval = kruntimes_e2e::cluster::api::BOOKMARK_INTERVAL;
    let params = WatchParams::default().timeout(u32::try_from(interval.as_secs()).unwrap() + 3);
    let mut long = api.watch(&params, &start).await.unwrap().boxed();
    api.create(&PostParams::default(), &config_map("b1", json!({})))
        .await
        .unwrap();
    let mut last_rv = String::new();
    loop {
        match long
            .try_next()
            .await
            .unwrap()
            .expect("a bookmark before the timeout")
        {
            WatchEvent::Added(c) => last_rv = c.metadata.resource_version.unwrap(),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata.resource_version, last_rv,
                    "a bookmark carries the last change passed"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    api.create(&PostParams::default(), &config_map("before", json!({})))
        .await
        .unwrap();
    let mut events =
        kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            kube::runtime::watcher::Event::InitApply(c) => initial.push(c.metadata.name.unwrap()),
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["before"]);
    api.create(&PostParams::default(), &config_map("after", json!({})))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match next {
        kube::runtime::watcher::Event::Apply(c) => {
            assert_eq!(c.metadata.name.as_deref(), Some("after"))
        }
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn create_to_watch_event_round_trip() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &start)
        .await
        .unwrap()
        .boxed();
    const ROUNDS: usize = 200;
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let began = Instant::now();
        let created = api
            .create(
                &PostParams::default(),
                &config_map(&format!("bench{i}"), json!({})),
            )
            .await
            .unwrap();
        loop {
            if let WatchEvent::Added(c) = stream.try_next().await.unwrap().unwrap()
                && c.metadata.name == created.metadata.name
            {
                break;
            }
        }
        samples.push(began.elapsed());
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "create + watch event, {ROUNDS} rounds: mean {:?}, p50 {:?}, p99 {:?}",
        total / u32::try_from(ROUNDS).unwrap(),
        samples[ROUNDS / 2],
        samples[ROUNDS * 99 / 100]
    );
    assert_eq!(samples.len(), ROUNDS);
}

#[tokio::test]
async fn kube_runtime_events_are_recorded_and_series_patched() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let subject = api
        .create(&PostParams::default(), &config_map("subject", json!({})))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "test-controller".to_owned(),
        instance: None,
    };
    let recorder = Recorder::new(cluster.client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Seen".to_owned(),
        note: Some("hello".to_owned()),
        action: "Look".to_owned(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&subject, &());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(cluster.client.clone(), "default");
    let listed = events
        .list(&ListParams::default().fields("regarding.name=subject"))
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the second publish patches the same Event"
    );
    let recorded = &listed.items[0];
    assert_eq!(
        (recorded.reason.as_deref(), recorded.note.as_deref()),
        (Some("Seen"), Some("hello"))
    );
    assert_eq!(recorded.series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn shutdown_ends_watches_and_closes_the_port() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &start)
        .await
        .unwrap()
        .boxed();
    let addr = cluster.server.addr();
    let crate::harness::Cluster { server, .. } = cluster;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown returns");
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("the watch ends");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "no event after shutdown: {ended:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}
