//! Arbitrary bytes as an AdmissionReview body: `parse_review`, then both endpoints.
//! Never a panic; a body that parses is always answered (never an error), every answer
//! carries a response echoing the request's uid, and it serializes (the server sends it
//! as JSON).
#![no_main]

use std::sync::LazyLock;

use kruntimes_pss::Level;
use kruntimes_webhook::admission::{AnswerJson, Endpoint, Handlers, parse_review};
use kruntimes_webhook::inject::InjectConfig;
use libfuzzer_sys::fuzz_target;

static HANDLERS: LazyLock<Handlers> =
    LazyLock::new(|| Handlers::standalone(InjectConfig::default(), Level::Baseline));

fuzz_target!(|data: &[u8]| {
    let Ok(review) = parse_review(data) else {
        return;
    };
    let uid = review
        .request
        .as_ref()
        .map(|r| r.uid.clone())
        .expect("parse_review accepts only reviews with a request");
    let _ = Endpoint::for_review(&review);
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        let answer = HANDLERS
            .review(endpoint, review.clone())
            .unwrap_or_else(|e| panic!("{endpoint:?}: a parsed review was not answered: {e}"));
        let response = answer
            .response
            .as_ref()
            .unwrap_or_else(|| panic!("{endpoint:?}: answer without a response"));
        assert_eq!(response.uid, uid, "{endpoint:?}: uid not echoed");
        serde_json::to_vec(&AnswerJson(&answer))
            .unwrap_or_else(|e| panic!("{endpoint:?}: answer does not serialize: {e}"));
    }
});
