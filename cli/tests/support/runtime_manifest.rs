//! The Runtime document krt's git and artifacts tests put next to their Run.

/// A Runtime named `bash` (restricted Pod Security, so it validates), its `spec` open
/// at the end: a test appends its `git` or `artifacts` section, indented two spaces,
/// then `---` and its Run.
pub(crate) const RUNTIME_BASH: &str = "apiVersion: kruntimes.io/v1alpha1
kind: Runtime
metadata: {name: bash}
spec:
  template:
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: main
        image: bash:5.2
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
";
