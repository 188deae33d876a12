//! `krt review -f REVIEW.json`: feeds an AdmissionReview to the webhook's handlers
//! (`/mutate` for Pods, `/validate` for everything else, as the apiserver would) and
//! prints the response review.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use kruntimes_pss::Level;
use kruntimes_webhook::admission::{
    AnswerJson, Endpoint, Handlers, MAX_REVIEW_BYTES, parse_review,
};
use kruntimes_webhook::inject::{InjectConfig, default_image};

use crate::Status;

/// Arguments of `krt review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// AdmissionReview (admission.k8s.io/v1) JSON file; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// Pod Security level Runtime templates must meet (namespaces are treated as
    /// unlabeled, as in the webhook's standalone mode).
    #[arg(long, value_name = "LEVEL", default_value = "baseline")]
    pss_floor: String,
    /// The runtimed image injected into Pods: a version tag or a digest, never latest.
    #[arg(long, value_name = "IMAGE", default_value_t = default_image())]
    image: String,
}

/// Runs `krt review`: 0 allowed, 1 denied, 2 when the review is unreadable or broken
/// (what the server answers with HTTP 400 or 413).
pub fn run(args: &ReviewArgs) -> Status {
    let floor = match args.pss_floor.parse::<Level>() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("krt review: --pss-floor: {e}");
            return Status::BadInput;
        }
    };
    let config = match InjectConfig::new(args.image.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("krt review: {e}");
            return Status::BadInput;
        }
    };
    let file = args.file.display().to_string();
    let body = match read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{file}: {e}");
            return Status::BadInput;
        }
    };
    let review = match parse_review(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{file}: {e}");
            return Status::BadInput;
        }
    };
    let endpoint = Endpoint::for_review(&review);
    let handlers = Handlers::standalone(config, floor);
    let answer = match handlers.review(endpoint, review) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{file}: {e}");
            return Status::BadInput;
        }
    };
    let allowed = answer.response.as_ref().is_some_and(|r| r.allowed);
    match serde_json::to_string_pretty(&AnswerJson(&answer)) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("{file}: cannot print the response: {e}");
            return Status::BadInput;
        }
    }
    eprintln!(
        "krt review: /{} {}",
        endpoint.as_str(),
        if allowed { "allowed" } else { "denied" }
    );
    if allowed {
        Status::Ok
    } else {
        Status::Violations
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    let limit = MAX_REVIEW_BYTES as u64;
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
    };
    result.map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_REVIEW_BYTES {
        return Err(format!(
            "larger than {MAX_REVIEW_BYTES} bytes, the webhook's limit (it would answer 413)"
        ));
    }
    Ok(bytes)
}
