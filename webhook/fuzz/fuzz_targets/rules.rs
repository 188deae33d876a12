//! Arbitrary documents through the api crate's checks (`check_document`: kind dispatch,
//! decoding with field paths, unknown fields, the Runtime/Run/Workflow rules). Input is
//! JSON (an AdmissionReview's `request.object` is checked too, so the webhook fixtures
//! are seeds) or multi-document YAML, as `krt check` reads it. Never a panic; every
//! violation names a field.
#![no_main]

use kruntimes_api::validation::check_document;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

/// YAML documents checked per input: enough for the examples (a handful each), and it
/// bounds the time one input can take.
const MAX_DOCUMENTS: usize = 16;

fn documents(data: &[u8]) -> Vec<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let object = value.pointer("/request/object").cloned();
        return std::iter::once(value).chain(object).collect();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Vec::new();
    };
    serde_norway::Deserializer::from_str(text)
        .take(MAX_DOCUMENTS)
        .map_while(|document| Value::deserialize(document).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    for document in documents(data) {
        let Ok(checked) = check_document(&document) else {
            continue;
        };
        for violation in &checked.violations {
            assert!(
                !violation.field.is_empty(),
                "violation without a field path: {violation:?}"
            );
            // The webhook and krt render every violation; rendering must not panic.
            let _ = violation.to_string();
        }
    }
});
