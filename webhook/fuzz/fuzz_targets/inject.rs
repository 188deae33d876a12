//! Arbitrary Pod JSON (or an AdmissionReview, whose `request.object` is the Pod, so the
//! webhook fixtures are seeds) through the injector. Never a panic; when injection
//! succeeds, injecting the result again gives the same Pod (idempotence), and the
//! JSONPatch the webhook sends (`inject::patch`) applied to the original gives the
//! injected Pod.
#![no_main]

use kruntimes_webhook::inject::{InjectConfig, inject_pod, patch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let pod = match value.pointer("/request/object") {
        Some(object) => object.clone(),
        None => value,
    };
    let config = InjectConfig::default();
    let Ok(injected) = inject_pod(&pod, &config) else {
        return;
    };
    let again = inject_pod(&injected, &config)
        .unwrap_or_else(|e| panic!("an injected Pod is refused on a second injection: {e}"));
    assert_eq!(again, injected, "injection is not idempotent");
    let patch = patch(pod.clone(), injected.clone());
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch.0)
        .unwrap_or_else(|e| panic!("the patch does not apply to the original: {e}"));
    assert_eq!(patched, injected, "original + patch != injected Pod");
});
