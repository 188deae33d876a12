//! What can go wrong talking to a cluster, each case worded to say what failed and
//! what to do, and the exit status it ends krt with (docs/cli.md, "Exit statuses").

use crate::error::{EXIT_BAD_INPUT, EXIT_PLATFORM_ERROR};

/// A cluster command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig and not in a pod.
    #[error(
        "no cluster configured: {reason}; pass --kubeconfig FILE, set KUBECONFIG, or run krt in a pod with a service account"
    )]
    NoConfig {
        /// Why neither a kubeconfig nor the in-cluster configuration could be used.
        reason: String,
    },
    /// The kubeconfig exists but cannot be used (bad file, unknown context).
    #[error("cannot use the kubeconfig: {0}")]
    BadConfig(String),
    /// The API server could not be reached.
    #[error(
        "cannot reach the Kubernetes API server {server}: {detail}; check that the cluster is up and that the kubeconfig's server address is right"
    )]
    Unreachable {
        /// The server's URL.
        server: String,
        /// The transport's error.
        detail: String,
    },
    /// The credentials were refused.
    #[error(
        "the API server refused the credentials (401 Unauthorized): {0}; log in again or check the kubeconfig's user"
    )]
    Unauthorized(String),
    /// RBAC refused a request.
    #[error(
        "forbidden: you may not {verb} {resource} in namespace {namespace}: {message}; ask for a Role granting it (docs/cli.md, \"RBAC\")"
    )]
    Forbidden {
        /// `get`, `create`, `patch`, `list`...
        verb: String,
        /// `runs.kruntimes.io`, `pods/log`...
        resource: String,
        /// The namespace (`all namespaces` for a list across them).
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The object does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace}{hint}")]
    NotFound {
        /// `Run`, `Workflow`, `Runtime`, `Pod`.
        kind: String,
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What to try (`; list them with krt get runs -n NS`).
        hint: String,
    },
    /// The API server refused the request for another reason (invalid, conflict...).
    #[error("{action}: {message}")]
    Refused {
        /// What krt was doing.
        action: String,
        /// The API server's message (with its code and reason).
        message: String,
        /// Whether the request itself was wrong (422 Invalid, 400): bad input.
        bad_input: bool,
    },
    /// Bad input: a flag or file.
    #[error("{0}")]
    BadInput(String),
    /// Anything else on krt's side or the cluster's.
    #[error("{0}")]
    Platform(String),
}

impl ClusterError {
    /// The exit status this error ends krt with: 2 for bad input, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::BadInput(_)
            | Self::Refused {
                bad_input: true, ..
            } => EXIT_BAD_INPUT,
            _ => EXIT_PLATFORM_ERROR,
        }
    }
}

/// What a request was: its verb, its resource, where, and the object it names, so
/// that an error can say what was refused.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `get`, `list`, `create`, `patch`, `watch`.
    pub verb: &'a str,
    /// The resource as RBAC names it: `runs.kruntimes.io`, `pods/log`, `events`.
    pub resource: &'a str,
    /// The kind for a not-found message (`Run`).
    pub kind: &'a str,
    /// The object's name, when one is named.
    pub name: Option<&'a str>,
    /// The namespace; `None` for all namespaces.
    pub namespace: Option<&'a str>,
}

impl Request<'_> {
    /// The typed error for `error`, a failure of this request against `server`.
    pub fn error(&self, server: &str, error: kube::Error) -> ClusterError {
        let namespace = self.namespace.unwrap_or("(all namespaces)").to_owned();
        match error {
            kube::Error::Api(status) => match status.code {
                401 => ClusterError::Unauthorized(status.message),
                403 => ClusterError::Forbidden {
                    verb: self.verb.to_owned(),
                    resource: self.resource.to_owned(),
                    namespace,
                    message: status.message,
                },
                404 if self.name.is_some() => ClusterError::NotFound {
                    kind: self.kind.to_owned(),
                    name: self.name.unwrap_or_default().to_owned(),
                    namespace: namespace.clone(),
                    hint: format!(
                        "; list them with `krt get {} -n {namespace}`",
                        plural_of(self.kind)
                    ),
                },
                code => ClusterError::Refused {
                    action: self.action(),
                    message: format!("{code} {}: {}", status.reason, status.message),
                    bad_input: matches!(code, 400 | 409 | 422),
                },
            },
            kube::Error::HyperError(e) => ClusterError::Unreachable {
                server: server.to_owned(),
                detail: chain(&e),
            },
            kube::Error::Service(e) => ClusterError::Unreachable {
                server: server.to_owned(),
                detail: chain(e.as_ref()),
            },
            other => ClusterError::Platform(format!("{}: {}", self.action(), chain(&other))),
        }
    }

    fn action(&self) -> String {
        let what = match self.name {
            Some(name) => format!("{} {name}", self.kind),
            None => self.resource.to_owned(),
        };
        format!("{} {what}", self.verb)
    }
}

fn plural_of(kind: &str) -> &'static str {
    match kind {
        "Workflow" => "workflows",
        "Runtime" => "runtimes",
        _ => "runs",
    }
}

/// An error and its causes, joined: a transport error's own message is often only
/// "client error (Connect)", and the cause says "Connection refused".
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
