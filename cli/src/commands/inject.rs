//! `krt inject -f FILE`: the webhook's injection, offline. Prints every document of the
//! file, with runtimed injected into each Pod and each pod template.

use std::path::PathBuf;

use clap::Args;
use kruntimes_webhook::inject::{
    DEFAULT_WORKSPACE_SIZE_LIMIT, InjectConfig, InjectError, default_image, inject_object,
};

use crate::Status;
use crate::manifest;

/// Arguments of `krt inject`.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifest file (YAML, several documents); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The runtimed image: a version tag or a digest, never latest.
    #[arg(long, value_name = "IMAGE", default_value_t = default_image())]
    image: String,
    /// sizeLimit of the workspace emptyDir for pods without the
    /// kruntimes.io/workspace-size-limit annotation.
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_WORKSPACE_SIZE_LIMIT)]
    workspace_size_limit: String,
}

/// Runs `krt inject`: 0 when every document was printed (injected or passed through),
/// 1 when a pod was refused (it is printed unchanged), 2 on bad input.
pub fn run(args: &InjectArgs) -> Status {
    let config = match InjectConfig::new(args.image.clone())
        .and_then(|c| c.with_default_workspace_size_limit(args.workspace_size_limit.clone()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("krt inject: {e}");
            return Status::BadInput;
        }
    };
    let file = args.file.display().to_string();
    let documents = match manifest::load(&args.file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{file}: {e}");
            return Status::BadInput;
        }
    };
    let mut status = Status::Ok;
    let mut out = String::new();
    for document in &documents {
        let (kind, name) = kruntimes_pss::kind_and_name(&document.value);
        let printed = match inject_object(&document.value, &config) {
            Ok(injected) => injected,
            Err(InjectError::NoPodTemplate(why)) => {
                eprintln!(
                    "{file}: document {} ({kind}/{name}): passed through unchanged: {why}",
                    document.index
                );
                document.value.clone()
            }
            Err(e) => {
                eprintln!(
                    "{file}: document {} ({kind}/{name}): refused, printed unchanged: {e}",
                    document.index
                );
                status = Status::Violations;
                document.value.clone()
            }
        };
        match serde_norway::to_string(&printed) {
            Ok(yaml) => {
                if !out.is_empty() {
                    out.push_str("---\n");
                }
                out.push_str(&yaml);
            }
            Err(e) => {
                eprintln!("{file}: document {}: cannot print: {e}", document.index);
                return Status::BadInput;
            }
        }
    }
    print!("{out}");
    status
}
