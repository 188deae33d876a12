//! Arbitrary documents through the api crate's checks (`check_document`: kind dispatch,
//! decoding with field paths, unknown fields, the Runtime/Run/Workflow rules). Input is
//! JSON (an AdmissionReview's `request.object` is checked too, so the webhook fixtures
//! are seeds) or multi-document YAML, as `krt check` reads it. Never a panic; every
//! violation names a field; `check_json` (the webhook's path from JSON text) answers
//! exactly as `check_document` does on the tree.
#![no_main]

use kruntimes_api::validation::{check_document, check_json, check_json_as};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

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
        // The webhook's path from JSON text gives exactly the tree path's answer.
        // So does the path told which kind to expect, whatever it is told.
        let text = RawValue::from_string(document.to_string()).expect("a tree always encodes");
        let tree = check_document(&document);
        let claimed = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Run");
        for fast in [
            check_json(&text),
            check_json_as(claimed, &text),
            check_json_as("Workflow", &text),
        ] {
            match (&tree, &fast) {
                (Ok(t), Ok(f)) => {
                    assert_eq!((t.kind, &t.name), (f.kind, &f.name));
                    assert_eq!(t.violations, f.violations);
                }
                (Err(t), Err(f)) => assert_eq!(t, f),
                _ => panic!("check_document {tree:?} but check_json(_as) {fast:?}"),
            }
        }
        let Ok(checked) = tree else {
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
