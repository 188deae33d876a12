//! `krt check`: every admission rule on Runtime, Run and Workflow manifests, offline;
//! and `krt check pss`: the Pod Security engine on anything holding a pod spec.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use kruntimes_api::validation::pod_security::check_pod_security;
use kruntimes_api::validation::{check_document, document::describe};
use kruntimes_pss::{Level, Policy, Version};

use crate::Status;
use crate::manifest;

/// Arguments of `krt check`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CheckArgs {
    #[command(subcommand)]
    command: Option<CheckCommand>,

    /// Pod Security level every Runtime template must meet: privileged, baseline or
    /// restricted. The webhook uses the namespace's enforce level when it is stricter.
    #[arg(long, value_name = "LEVEL", default_value = "baseline")]
    pss_floor: String,

    /// Manifest files (YAML, several documents each); `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CheckCommand {
    /// Evaluate Pod Security Standards on any object holding a pod spec (Pod, workloads,
    /// CronJob, PodTemplate, Runtime).
    Pss(PssArgs),
}

/// Arguments of `krt check pss`. Its `--version` is the policy version, so the
/// program's own version flag is left to `krt --version`.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
struct PssArgs {
    /// privileged, baseline or restricted.
    #[arg(long, value_name = "LEVEL")]
    level: String,
    /// Policy version: v1.0 to v1.37, or latest.
    #[arg(long = "version", value_name = "VERSION", default_value = "latest")]
    policy_version: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Files (YAML, several documents each); `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per object.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs `krt check` or `krt check pss`.
pub fn run(args: CheckArgs) -> Status {
    match args.command {
        Some(CheckCommand::Pss(pss)) => run_pss(&pss),
        None => run_rules(&args),
    }
}

/// Combines per-file outcomes: the worst wins (bad input over violations over ok).
fn worst(a: Status, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Ok => 0,
        Status::Violations => 1,
        Status::BadInput => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn run_rules(args: &CheckArgs) -> Status {
    let floor = match args.pss_floor.parse::<Level>() {
        Ok(level) => Policy {
            level,
            version: Version::Latest,
        },
        Err(e) => {
            eprintln!("krt check: --pss-floor: {e}");
            return Status::BadInput;
        }
    };
    let mut status = Status::Ok;
    let (mut objects, mut invalid) = (0usize, 0usize);
    for path in &args.files {
        let file = path.display().to_string();
        let documents = match manifest::load(path) {
            Ok(documents) => documents,
            Err(e) => {
                eprintln!("{}", manifest::printable(&format!("{file}: {e}")));
                status = worst(status, Status::BadInput);
                continue;
            }
        };
        for document in documents {
            objects += 1;
            let lines = check_one(&document.value, floor);
            if !lines.is_empty() {
                invalid += 1;
                status = worst(status, Status::Violations);
            }
            for line in lines {
                // Names, keys and values come from the file: no raw control character
                // reaches the terminal.
                println!("{}", manifest::printable(&format!("{file}: {line}")));
            }
        }
    }
    eprintln!(
        "krt check: {objects} object(s), {invalid} with violations (Runtime templates evaluated at Pod Security {}:{})",
        floor.level, floor.version
    );
    status
}

/// The report lines (`Kind/name: field: reason: detail`) of one document; empty when valid.
fn check_one(document: &serde_json::Value, floor: Policy) -> Vec<String> {
    let checked = match check_document(document) {
        Ok(checked) => checked,
        Err(e) => {
            let (kind, name) = describe(document);
            return vec![format!("{kind}/{name}: {e}")];
        }
    };
    let mut violations = checked.violations;
    if checked.kind == "Runtime" && checked.object.is_some() {
        violations.extend(check_pod_security(document, floor));
    }
    violations
        .iter()
        .map(|v| format!("{}/{}: {}", checked.kind, checked.name, v))
        .collect()
}

fn run_pss(args: &PssArgs) -> Status {
    let level = match args.level.parse::<Level>() {
        Ok(level) => level,
        Err(e) => {
            eprintln!("krt check pss: --level: {e}");
            return Status::BadInput;
        }
    };
    let version = match args.policy_version.parse::<Version>() {
        Ok(version) => version,
        Err(e) => {
            eprintln!("krt check pss: --version: {e}");
            return Status::BadInput;
        }
    };
    let policy = Policy { level, version };
    let mut status = Status::Ok;
    for path in &args.files {
        let file = path.display().to_string();
        let documents = match manifest::load(path) {
            Ok(documents) => documents,
            Err(e) => {
                eprintln!("{}", manifest::printable(&format!("{file}: {e}")));
                status = worst(status, Status::BadInput);
                continue;
            }
        };
        for document in documents {
            match kruntimes_pss::report(&file, document.index, &document.value, policy) {
                Ok(line) => {
                    if !line.allowed {
                        status = worst(status, Status::Violations);
                    }
                    match args.output {
                        Output::Text => println!("{}", manifest::printable(&line.to_string())),
                        Output::Json => match serde_json::to_string(&line) {
                            Ok(json) => println!("{json}"),
                            Err(e) => {
                                eprintln!("{file}[{}]: cannot encode report: {e}", document.index);
                                status = worst(status, Status::BadInput);
                            }
                        },
                    }
                }
                Err(no_pod_spec) => match args.output {
                    Output::Text => println!(
                        "{}",
                        manifest::printable(&kruntimes_pss::render_skipped(
                            &file,
                            document.index,
                            &document.value,
                            &no_pod_spec
                        ))
                    ),
                    Output::Json => {
                        let (kind, name) = kruntimes_pss::kind_and_name(&document.value);
                        println!(
                            "{}",
                            serde_json::json!({
                                "file": file, "index": document.index, "kind": kind, "name": name,
                                "skipped": no_pod_spec.to_string(),
                            })
                        );
                    }
                },
            }
        }
    }
    status
}
