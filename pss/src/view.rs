//! A lenient, typed view of the parts of a pod spec the checks read.
//!
//! Upstream decodes the whole object into Go structs first; a field of the wrong JSON
//! type makes that decoding (and so the admission request) fail. Here every field the
//! checks read is type-checked: a mismatch is recorded as a [`DecodeError`] (which the
//! evaluation turns into a denial, see [`crate::DECODE_CHECK_ID`]) and the field is
//! treated as absent for the checks. `null` is the same as absent, as in Go. Fields the
//! checks do not read are not validated.

use std::fmt::Display;

use serde_json::{Map, Value};

/// A field of the wrong JSON type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    pub(crate) field: String,
    pub(crate) message: String,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct SeLinux<'a> {
    pub(crate) type_: &'a str,
    pub(crate) user: &'a str,
    pub(crate) role: &'a str,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Capabilities<'a> {
    pub(crate) add: Vec<&'a str>,
    pub(crate) drop: Vec<&'a str>,
}

/// Pod- or container-level security context (fields not valid at a level stay `None`).
#[derive(Debug, Default, Clone)]
pub(crate) struct SecurityContext<'a> {
    pub(crate) privileged: Option<bool>,
    pub(crate) allow_privilege_escalation: Option<bool>,
    pub(crate) capabilities: Option<Capabilities<'a>>,
    pub(crate) proc_mount: Option<&'a str>,
    pub(crate) run_as_non_root: Option<bool>,
    pub(crate) run_as_user: Option<i64>,
    pub(crate) se_linux: Option<SeLinux<'a>>,
    /// `Some("")` when `seccompProfile` is set without a type (Go's zero value).
    pub(crate) seccomp_type: Option<&'a str>,
    pub(crate) app_armor_type: Option<&'a str>,
    pub(crate) host_process: Option<bool>,
    /// Pod level only: `(index, name)`.
    pub(crate) sysctls: Vec<(usize, &'a str)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Container<'a> {
    /// Path of the container from the object root, e.g. `spec.containers[0]`.
    pub(crate) path: String,
    pub(crate) name: &'a str,
    pub(crate) sc: Option<SecurityContext<'a>>,
    /// Non-zero host ports: `(index in ports, hostPort)`.
    pub(crate) host_ports: Vec<(usize, i64)>,
    /// Non-empty probe or lifecycle hosts: `(path below the container, host)`.
    pub(crate) probe_hosts: Vec<(&'static str, &'a str)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Volume<'a> {
    pub(crate) index: usize,
    pub(crate) name: &'a str,
    pub(crate) host_path: bool,
    /// `None` when the volume uses an allowed (or, defaulted, `emptyDir`) source;
    /// otherwise the first restricted source key set.
    pub(crate) restricted_type: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) struct PodView<'a> {
    /// Path of the pod spec from the object root, e.g. `spec.template.spec`.
    pub(crate) base: String,
    /// Path of the pod metadata from the object root, e.g. `spec.template.metadata`.
    pub(crate) meta_base: String,
    /// Annotations, sorted by key.
    pub(crate) annotations: Vec<(&'a str, &'a str)>,
    pub(crate) host_network: bool,
    pub(crate) host_pid: bool,
    pub(crate) host_ipc: bool,
    pub(crate) host_users: Option<bool>,
    pub(crate) os_name: Option<&'a str>,
    pub(crate) sc: Option<SecurityContext<'a>>,
    pub(crate) volumes: Vec<Volume<'a>>,
    /// Init containers, then containers, then ephemeral containers (upstream's order).
    pub(crate) containers: Vec<Container<'a>>,
    pub(crate) errors: Vec<DecodeError>,
}

impl PodView<'_> {
    /// `spec.os.name == "windows"`.
    pub(crate) fn is_windows(&self) -> bool {
        self.os_name == Some("windows")
    }

    /// `spec.hostUsers == false` (upstream's `relaxPolicyForUserNamespacePod`).
    pub(crate) fn user_namespaced(&self) -> bool {
        self.host_users == Some(false)
    }
}

/// Volume sources allowed at `restricted`.
const ALLOWED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every other volume source of the core API, in upstream's reporting order.
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "portworxVolume",
    "photonPersistentDisk",
    "scaleIO",
    "storageos",
];

const PROBES: [(&str, [&str; 2]); 3] = [
    (
        "livenessProbe",
        ["livenessProbe.httpGet.host", "livenessProbe.tcpSocket.host"],
    ),
    (
        "readinessProbe",
        [
            "readinessProbe.httpGet.host",
            "readinessProbe.tcpSocket.host",
        ],
    ),
    (
        "startupProbe",
        ["startupProbe.httpGet.host", "startupProbe.tcpSocket.host"],
    ),
];

const LIFECYCLE: [(&str, [&str; 2]); 2] = [
    (
        "postStart",
        [
            "lifecycle.postStart.httpGet.host",
            "lifecycle.postStart.tcpSocket.host",
        ],
    ),
    (
        "preStop",
        [
            "lifecycle.preStop.httpGet.host",
            "lifecycle.preStop.tcpSocket.host",
        ],
    ),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The non-null value at `key`.
fn get<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

#[derive(Default)]
struct Decoder {
    errors: Vec<DecodeError>,
}

impl Decoder {
    fn mismatch(&mut self, path: impl Display, expected: &str, got: &Value) {
        self.errors.push(DecodeError {
            field: path.to_string(),
            message: format!("expected {expected}, got {}", json_type(got)),
        });
    }

    fn object<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        parent: &str,
    ) -> Option<&'v Map<String, Value>> {
        match get(map, key)? {
            Value::Object(m) => Some(m),
            other => {
                self.mismatch(format_args!("{parent}.{key}"), "an object", other);
                None
            }
        }
    }

    fn array<'v>(&mut self, map: &'v Map<String, Value>, key: &str, parent: &str) -> &'v [Value] {
        match get(map, key) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.mismatch(format_args!("{parent}.{key}"), "an array", other);
                &[]
            }
        }
    }

    fn boolean(&mut self, map: &Map<String, Value>, key: &str, parent: &str) -> Option<bool> {
        match get(map, key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.mismatch(format_args!("{parent}.{key}"), "a boolean", other);
                None
            }
        }
    }

    fn string<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        parent: &str,
    ) -> Option<&'v str> {
        match get(map, key)? {
            Value::String(s) => Some(s),
            other => {
                self.mismatch(format_args!("{parent}.{key}"), "a string", other);
                None
            }
        }
    }

    /// An integer within `[min, max]` (Go's int32/int64 fields).
    fn integer(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        parent: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = get(map, key)?;
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let expected = if max == i64::from(i32::MAX) {
                    "a 32-bit integer"
                } else {
                    "a 64-bit integer"
                };
                self.mismatch(format_args!("{parent}.{key}"), expected, v);
                None
            }
        }
    }

    /// An array of strings; non-string items are errors and skipped.
    fn strings<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        parent: &str,
    ) -> Vec<&'v str> {
        let items = self.array(map, key, parent);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.as_str()),
                // Go decodes a null item of a []string as "".
                Value::Null => out.push(""),
                other => self.mismatch(format_args!("{parent}.{key}[{i}]"), "a string", other),
            }
        }
        out
    }

    fn security_context<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        parent: &str,
        pod_level: bool,
    ) -> Option<SecurityContext<'v>> {
        let sc = self.object(map, "securityContext", parent)?;
        let path = format!("{parent}.securityContext");
        let p = path.as_str();
        let mut out = SecurityContext {
            run_as_non_root: self.boolean(sc, "runAsNonRoot", p),
            run_as_user: self.integer(sc, "runAsUser", p, i64::MIN, i64::MAX),
            ..SecurityContext::default()
        };
        if let Some(se) = self.object(sc, "seLinuxOptions", p) {
            let sp = format!("{p}.seLinuxOptions");
            out.se_linux = Some(SeLinux {
                type_: self.string(se, "type", &sp).unwrap_or(""),
                user: self.string(se, "user", &sp).unwrap_or(""),
                role: self.string(se, "role", &sp).unwrap_or(""),
            });
        }
        if let Some(prof) = self.object(sc, "seccompProfile", p) {
            let sp = format!("{p}.seccompProfile");
            out.seccomp_type = Some(self.string(prof, "type", &sp).unwrap_or(""));
        }
        if let Some(prof) = self.object(sc, "appArmorProfile", p) {
            let sp = format!("{p}.appArmorProfile");
            out.app_armor_type = Some(self.string(prof, "type", &sp).unwrap_or(""));
        }
        if let Some(win) = self.object(sc, "windowsOptions", p) {
            out.host_process = self.boolean(win, "hostProcess", &format!("{p}.windowsOptions"));
        }
        if pod_level {
            let items = self.array(sc, "sysctls", p);
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(s) => {
                        let name = self
                            .string(s, "name", &format!("{p}.sysctls[{i}]"))
                            .unwrap_or("");
                        out.sysctls.push((i, name));
                    }
                    Value::Null => out.sysctls.push((i, "")),
                    other => self.mismatch(format_args!("{p}.sysctls[{i}]"), "an object", other),
                }
            }
        } else {
            out.privileged = self.boolean(sc, "privileged", p);
            out.allow_privilege_escalation = self.boolean(sc, "allowPrivilegeEscalation", p);
            out.proc_mount = self.string(sc, "procMount", p);
            if let Some(caps) = self.object(sc, "capabilities", p) {
                let cp = format!("{p}.capabilities");
                out.capabilities = Some(Capabilities {
                    add: self.strings(caps, "add", &cp),
                    drop: self.strings(caps, "drop", &cp),
                });
            }
        }
        Some(out)
    }

    fn handler_hosts<'v>(
        &mut self,
        handler: &'v Map<String, Value>,
        parent: &str,
        paths: &[&'static str; 2],
        out: &mut Vec<(&'static str, &'v str)>,
    ) {
        for (key, path) in ["httpGet", "tcpSocket"].into_iter().zip(paths) {
            if let Some(action) = self.object(handler, key, parent) {
                let ap = format!("{parent}.{key}");
                if let Some(host) = self.string(action, "host", &ap)
                    && !host.is_empty()
                {
                    out.push((path, host));
                }
            }
        }
    }

    fn container<'v>(&mut self, c: &'v Map<String, Value>, path: String) -> Container<'v> {
        let p = path.as_str();
        let name = self.string(c, "name", p).unwrap_or("");
        let sc = self.security_context(c, p, false);
        let mut host_ports = Vec::new();
        for (i, port) in self.array(c, "ports", p).iter().enumerate() {
            match port {
                Value::Object(port) => {
                    let pp = format!("{p}.ports[{i}]");
                    let hp = self.integer(
                        port,
                        "hostPort",
                        &pp,
                        i64::from(i32::MIN),
                        i64::from(i32::MAX),
                    );
                    if let Some(hp) = hp
                        && hp != 0
                    {
                        host_ports.push((i, hp));
                    }
                }
                Value::Null => {}
                other => self.mismatch(format_args!("{p}.ports[{i}]"), "an object", other),
            }
        }
        let mut probe_hosts = Vec::new();
        for (key, paths) in &PROBES {
            if let Some(probe) = self.object(c, key, p) {
                self.handler_hosts(probe, &format!("{p}.{key}"), paths, &mut probe_hosts);
            }
        }
        if let Some(lc) = self.object(c, "lifecycle", p) {
            let lp = format!("{p}.lifecycle");
            for (key, paths) in &LIFECYCLE {
                if let Some(h) = self.object(lc, key, &lp) {
                    self.handler_hosts(h, &format!("{lp}.{key}"), paths, &mut probe_hosts);
                }
            }
        }
        Container {
            path,
            name,
            sc,
            host_ports,
            probe_hosts,
        }
    }

    fn volume<'v>(&mut self, index: usize, v: &'v Map<String, Value>, path: &str) -> Volume<'v> {
        let name = self.string(v, "name", path).unwrap_or("");
        let is_set = |key: &str, dec: &mut Decoder| dec.object(v, key, path).is_some();
        // Every key is visited (not `any`) so each mistyped source is reported.
        let mut allowed = false;
        for key in ALLOWED_VOLUME_SOURCES {
            allowed |= is_set(key, self);
        }
        let mut restricted_type = None;
        let mut host_path = false;
        for key in RESTRICTED_VOLUME_SOURCES {
            if is_set(key, self) {
                host_path |= *key == "hostPath";
                restricted_type = restricted_type.or(Some(*key));
            }
        }
        Volume {
            index,
            name,
            host_path,
            // A volume with no (known) source is defaulted to emptyDir by the API server.
            restricted_type: if allowed { None } else { restricted_type },
        }
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// Decodes the checked parts of `spec` (at `base` from the object root) and
/// `metadata` (at `meta_base`).
pub(crate) fn decode<'a>(
    metadata: Option<&'a Value>,
    spec: &'a Map<String, Value>,
    base: &str,
    meta_base: &str,
) -> PodView<'a> {
    let mut d = Decoder::default();
    let mut annotations = Vec::new();
    match metadata {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => {
            if let Some(ann) = d.object(meta, "annotations", meta_base) {
                for (k, v) in ann {
                    match v {
                        Value::String(s) => annotations.push((k.as_str(), s.as_str())),
                        Value::Null => annotations.push((k.as_str(), "")),
                        other => d.mismatch(
                            format_args!("{meta_base}.annotations[{k}]"),
                            "a string",
                            other,
                        ),
                    }
                }
            }
        }
        Some(other) => d.mismatch(meta_base, "an object", other),
    }
    annotations.sort_unstable();

    let host_network = d.boolean(spec, "hostNetwork", base).unwrap_or(false);
    let host_pid = d.boolean(spec, "hostPID", base).unwrap_or(false);
    let host_ipc = d.boolean(spec, "hostIPC", base).unwrap_or(false);
    let host_users = d.boolean(spec, "hostUsers", base);
    let os_name = d
        .object(spec, "os", base)
        .and_then(|os| d.string(os, "name", &format!("{base}.os")));
    let sc = d.security_context(spec, base, true);

    let mut volumes = Vec::new();
    for (i, v) in d.array(spec, "volumes", base).iter().enumerate() {
        let path = format!("{base}.volumes[{i}]");
        match v {
            Value::Object(v) => volumes.push(d.volume(i, v, &path)),
            Value::Null => {}
            other => d.mismatch(&path, "an object", other),
        }
    }

    let mut containers = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in d.array(spec, list, base).iter().enumerate() {
            let path = format!("{base}.{list}[{i}]");
            match c {
                Value::Object(c) => containers.push(d.container(c, path)),
                // Go decodes a null list item as a zero-value container, which is checked.
                Value::Null => containers.push(d.container(&EMPTY, path)),
                other => d.mismatch(&path, "an object", other),
            }
        }
    }

    PodView {
        base: base.to_owned(),
        meta_base: meta_base.to_owned(),
        annotations,
        host_network,
        host_pid,
        host_ipc,
        host_users,
        os_name,
        sc,
        volumes,
        containers,
        errors: d.errors,
    }
}
