//! The setup script of a container. It runs as PID 1 of the container's fresh PID and
//! mount namespaces (made by `unshare` inside the pod's sandbox namespaces) and builds
//! the container's root:
//!
//! - a tmpfs as `/`, and for every top-level directory of the host an overlay whose lower
//!   layer is the host's directory and whose upper layer is a private tmpfs: the
//!   container sees the host's files as its image and may write over them (or not, with
//!   `readOnlyRootFilesystem`), and the host's directories are never changed. Overlays
//!   rather than read-only bind mounts so that a mount point anywhere (`/usr/local/bin/
//!   runtimed`, `/etc/config`) can be created without touching the host.
//! - `/proc` of the container's PID namespace, a read-only `/sys`, a minimal `/dev`
//!   (null, zero, full, random, urandom, tty; its own devpts and shm), tmpfs `/tmp` and
//!   `/run`, `/etc/hostname` and `/etc/hosts` for the pod;
//! - the image binaries of the node's configuration and the volumes, bind-mounted;
//!
//! then `exec`s `chroot`, `setpriv` (uid, gid, groups, capability bounding set,
//! no_new_privs) and `env -i -C workingDir` into the container's command, which so
//! keeps PID 1.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plan::ContainerPlan;
use super::process::quote;
use super::volumes::Prepared;

/// Top-level host entries a container never sees from the host: the kernel's and
/// runtime state it gets its own of.
const OWN_TOP_LEVEL: [&str; 6] = ["proc", "sys", "dev", "tmp", "run", "lost+found"];

/// Everything the script needs besides the plan.
#[derive(Debug)]
pub(super) struct ScriptInput<'a> {
    pub(super) plan: &'a ContainerPlan,
    /// The container's argv and environment, expanded.
    pub(super) argv: &'a [String],
    pub(super) env: &'a BTreeMap<String, String>,
    /// The (empty) directory the root is built on, and one for the overlay layers.
    pub(super) root: &'a Path,
    pub(super) layer: &'a Path,
    pub(super) volumes: &'a BTreeMap<String, Prepared>,
    /// Image path -> host file, bind-mounted read-only.
    pub(super) image_binaries: &'a BTreeMap<String, PathBuf>,
    pub(super) hostname: &'a str,
    pub(super) pod_ip: &'a str,
}

/// The script's text.
pub(super) fn render(input: &ScriptInput<'_>) -> String {
    let mut s = String::from("set -eu\n");
    let root = quote(&input.root.to_string_lossy());
    let layer = quote(&input.layer.to_string_lossy());
    let _ = writeln!(s, "R={root}\nL={layer}");
    s.push_str("mount -t tmpfs -o mode=0755 krt-root \"$R\"\nmount -t tmpfs -o mode=0700 krt-layer \"$L\"\n");
    image_layer(&mut s);
    kernel_filesystems(&mut s);
    pod_files(&mut s, input);
    for (image_path, host) in input.image_binaries {
        bind(&mut s, &host.to_string_lossy(), image_path, true, false);
    }
    for m in &input.plan.mounts {
        let Some(volume) = input.volumes.get(&m.volume) else {
            continue;
        };
        let mut source = volume.path.clone();
        if let Some(sub) = &m.sub_path {
            source = source.join(sub);
        }
        let source = source.to_string_lossy().into_owned();
        if volume.empty_dir && m.sub_path.is_some() {
            let _ = writeln!(s, "mkdir -p {}", quote(&source));
        }
        bind(&mut s, &source, &m.mount_path, m.read_only, true);
    }
    let _ = writeln!(s, "mkdir -p \"$R\"{}", quote(&input.plan.working_dir));
    if input.plan.read_only_root {
        s.push_str("for d in \"$R\"/*; do if mountpoint -q \"$d\" && [ \"$(stat -f -c %T \"$d\")\" = overlayfs ]; then mount -o remount,ro \"$d\"; fi; done\n");
        s.push_str("mount -o remount,ro \"$R\"\n");
    }
    exec_line(&mut s, input);
    s
}

/// The overlays of the host's top-level directories, and its top-level symlinks.
fn image_layer(s: &mut String) {
    let Ok(entries) = std::fs::read_dir("/") else {
        return;
    };
    let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        if OWN_TOP_LEVEL.contains(&name.as_str()) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let q = quote(&name);
        if kind.is_symlink() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let _ = writeln!(s, "ln -s {} \"$R\"/{q}", quote(&target.to_string_lossy()));
            }
        } else if kind.is_dir() {
            let _ = writeln!(
                s,
                "mkdir -p \"$L\"/up/{q} \"$L\"/work/{q} \"$R\"/{q}\nmount -t overlay krt-image -o lowerdir=/{q},upperdir=\"$L\"/up/{q},workdir=\"$L\"/work/{q} \"$R\"/{q}"
            );
        }
    }
}

fn kernel_filesystems(s: &mut String) {
    s.push_str(
        r#"mkdir -p "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/run
mount -t proc -o nosuid,nodev,noexec proc "$R"/proc
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R"/sys
mount -t tmpfs -o mode=0755,nosuid krt-dev "$R"/dev
for n in null zero full random urandom tty; do touch "$R"/dev/$n; mount --bind /dev/$n "$R"/dev/$n; done
mkdir -p "$R"/dev/pts "$R"/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R"/dev/pts
ln -s pts/ptmx "$R"/dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev krt-shm "$R"/dev/shm
ln -s /proc/self/fd "$R"/dev/fd
ln -s /proc/self/fd/0 "$R"/dev/stdin
ln -s /proc/self/fd/1 "$R"/dev/stdout
ln -s /proc/self/fd/2 "$R"/dev/stderr
mount -t tmpfs -o mode=1777,nosuid,nodev krt-tmp "$R"/tmp
mount -t tmpfs -o mode=0755,nosuid,nodev krt-run "$R"/run
"#,
    );
}

/// `/etc/hostname` and `/etc/hosts` of the pod, as the kubelet writes them.
fn pod_files(s: &mut String, input: &ScriptInput<'_>) {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        input.pod_ip, input.hostname
    );
    let _ = writeln!(
        s,
        "printf %s {} > \"$L\"/hosts\nprintf '%s\\n' {} > \"$L\"/hostname",
        quote(&hosts),
        quote(input.hostname)
    );
    bind(s, "$L/hosts", "/etc/hosts", false, false);
    bind(s, "$L/hostname", "/etc/hostname", false, false);
}

/// Bind-mounts `source` (a host path, or `$L/...`) at `target` inside the root,
/// creating the mount point as a directory or file like the source.
fn bind(s: &mut String, source: &str, target: &str, read_only: bool, recursive: bool) {
    let src = match source.strip_prefix("$L/") {
        Some(rest) => format!("\"$L\"/{}", quote(rest)),
        None => quote(source),
    };
    let dst = format!("\"$R\"{}", quote(target));
    let flag = if recursive { "--rbind" } else { "--bind" };
    let _ = writeln!(
        s,
        "if [ -d {src} ]; then mkdir -p {dst}; else mkdir -p \"$(dirname {dst})\"; [ -e {dst} ] || touch {dst}; fi\nmount {flag} {src} {dst}"
    );
    if read_only {
        let _ = writeln!(s, "mount -o remount,bind,ro {dst}");
    }
}

fn exec_line(s: &mut String, input: &ScriptInput<'_>) {
    let plan = input.plan;
    let mut words = vec![
        "exec".to_owned(),
        "chroot".to_owned(),
        "\"$R\"".to_owned(),
        "/usr/bin/setpriv".to_owned(),
        format!("--reuid={}", plan.uid),
        format!("--regid={}", plan.gid),
    ];
    if plan.groups.is_empty() {
        words.push("--clear-groups".to_owned());
    } else {
        let groups: Vec<String> = plan.groups.iter().map(u32::to_string).collect();
        words.push(format!("--groups={}", groups.join(",")));
    }
    let mut bounding = String::from("-all");
    for cap in &plan.capabilities {
        bounding.push_str(&format!(",+{cap}"));
    }
    words.push(quote(&format!("--bounding-set={bounding}")));
    words.push("--inh-caps=-all".to_owned());
    if plan.no_new_privs {
        words.push("--no-new-privs".to_owned());
    }
    words.extend(["--".to_owned(), "/usr/bin/env".to_owned(), "-i".to_owned()]);
    words.push("-C".to_owned());
    words.push(quote(&plan.working_dir));
    words.push("--".to_owned());
    words.extend(input.env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
    words.extend(input.argv.iter().map(|a| quote(a)));
    s.push_str(&words.join(" "));
    s.push('\n');
}
