//! Deterministic random-input test: arbitrary JSON shaped like (broken) pods must never
//! panic, and every result must be self-consistent. A tiny xorshift generator keeps it
//! dependency-free and reproducible.

// Test helpers outside #[test] fns may fail loudly too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kruntimes_pss::{
    DECODE_CHECK_ID, Level, Policy, Version, evaluate_object, evaluate_pod, report,
};
use serde_json::{Map, Value, json};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Field names the checks read, plus a few others.
const KEYS: &[&str] = &[
    "containers",
    "initContainers",
    "ephemeralContainers",
    "securityContext",
    "name",
    "privileged",
    "allowPrivilegeEscalation",
    "capabilities",
    "add",
    "drop",
    "procMount",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxOptions",
    "type",
    "user",
    "role",
    "seccompProfile",
    "appArmorProfile",
    "windowsOptions",
    "hostProcess",
    "sysctls",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "hostUsers",
    "os",
    "volumes",
    "hostPath",
    "nfs",
    "emptyDir",
    "image",
    "ports",
    "hostPort",
    "livenessProbe",
    "httpGet",
    "tcpSocket",
    "host",
    "lifecycle",
    "preStop",
    "metadata",
    "annotations",
    "spec",
    "template",
    "jobTemplate",
    "kind",
    "apiVersion",
    "x",
];

const STRINGS: &[&str] = &[
    "",
    "ALL",
    "Unmasked",
    "Default",
    "RuntimeDefault",
    "Unconfined",
    "windows",
    "NET_RAW",
    "container_t",
    "kernel.x",
    "Pod",
    "Deployment",
    "CronJob",
    "Runtime",
    "v1",
    "apps/v1",
    "batch/v1",
    "kruntimes.io/v1alpha1",
    "a\nb",
    "\u{0}",
    "ü",
];

fn value(rng: &mut Rng, depth: u32) -> Value {
    let leaf = depth == 0 || rng.below(3) == 0;
    match rng.below(if leaf { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => match rng.below(4) {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(1.5),
            _ => json!(rng.next()),
        },
        3 | 4 => Value::String(rng.pick(STRINGS).to_owned()),
        5 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(6) {
                m.insert(rng.pick(KEYS).to_owned(), value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// A mostly well-formed pod spec with random values spliced in.
fn pod_spec(rng: &mut Rng) -> Value {
    let mut spec = json!({
        "containers": [{"name": "a", "securityContext": {}}],
        "initContainers": [{"name": "i"}],
        "securityContext": {},
        "volumes": [{"name": "v"}]
    });
    for _ in 0..rng.below(6) + 1 {
        let pointer = match rng.below(5) {
            0 => "",
            1 => "/containers/0",
            2 => "/containers/0/securityContext",
            3 => "/securityContext",
            _ => "/volumes/0",
        };
        let key = rng.pick(KEYS).to_owned();
        let v = value(rng, 3);
        if let Some(Value::Object(m)) = spec.pointer_mut(pointer) {
            m.insert(key, v);
        }
    }
    spec
}

const POLICIES: [Policy; 5] = [
    Policy::PRIVILEGED,
    Policy::new(Level::Baseline, Version::Minor(0)),
    Policy::new(Level::Baseline, Version::Latest),
    Policy::new(Level::Restricted, Version::Minor(24)),
    Policy::new(Level::Restricted, Version::Latest),
];

#[test]
fn random_input_never_panics_and_is_consistent() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut decoded_badly, mut denied, mut allowed) = (0, 0, 0);
    for round in 0..3000 {
        let candidates = [
            value(&mut rng, 5),
            json!({"kind": "Pod", "metadata": value(&mut rng, 2), "spec": pod_spec(&mut rng)}),
            json!({"apiVersion": "kruntimes.io/v1alpha1", "kind": "Runtime",
                   "spec": {"template": {"metadata": value(&mut rng, 2), "spec": pod_spec(&mut rng)}}}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": value(&mut rng, 5)}),
        ];
        for obj in &candidates {
            for p in POLICIES {
                let Ok(e) = evaluate_object(obj, p) else {
                    continue;
                };
                assert_eq!(e.allowed(), e.violations.is_empty());
                if p.level == Level::Privileged {
                    assert!(e.allowed(), "round {round}: {obj}");
                }
                for v in &e.violations {
                    assert!(!v.reason.is_empty(), "round {round}");
                    assert!(!v.fields.is_empty(), "round {round}: {v:?}");
                    assert!(
                        v.fields.iter().all(|f| f.starts_with(&v.field)),
                        "round {round}: {v:?}"
                    );
                }
                let decode = e
                    .violations
                    .iter()
                    .filter(|v| v.check == DECODE_CHECK_ID)
                    .count();
                assert!(decode <= 1, "round {round}");
                decoded_badly += decode;
                if p.level != Level::Privileged {
                    if e.allowed() {
                        allowed += 1;
                    } else {
                        denied += 1;
                    }
                }
                let line = report("f", 0, obj, p).unwrap();
                assert!(!line.to_string().contains('\n'));
            }
        }
        let spec = value(&mut rng, 4);
        let meta = value(&mut rng, 3);
        let _ = evaluate_pod(Some(&meta), &spec, "spec", POLICIES[4]);
    }
    // The generator must reach all outcomes, or the test proves little.
    assert!(
        decoded_badly > 100 && denied > 100 && allowed > 100,
        "{decoded_badly} {denied} {allowed}"
    );
}
