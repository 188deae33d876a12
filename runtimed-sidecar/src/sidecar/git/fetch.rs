//! The fetch itself, on a blocking thread: a temporary bare repository, one ref at
//! depth 1 over https with the sidecar's TLS trust and no credentials, the pack bytes
//! counted against the limit, then the tree under `git.path` walked into files.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use gix::protocol::transport::client::blocking_io::http;
use kruntimes_api::validation::paths::{PathKind, check_relative_path};

use super::{Fetched, GitError, Source, TreeFile, bounded};

/// The ref the fetched commit is stored under in the temporary repository.
const TARGET: &str = "refs/krt/fetched";

/// Counts pack bytes as gix reads them and raises the interrupt flag past the limit.
#[derive(Debug, Clone)]
struct PackMeter {
    id: gix::progress::Id,
    limit: u64,
    received: Arc<AtomicUsize>,
    interrupt: Arc<AtomicBool>,
    too_large: Arc<AtomicBool>,
}

const READ_PACK_BYTES: gix::progress::Id = *b"BWRB";

impl gix::progress::Count for PackMeter {
    fn set(&self, _step: gix::progress::Step) {}
    fn step(&self) -> gix::progress::Step {
        0
    }
    fn inc_by(&self, step: gix::progress::Step) {
        if self.id != READ_PACK_BYTES {
            return;
        }
        let total = self.received.fetch_add(step, Ordering::SeqCst) + step;
        if total as u64 > self.limit {
            self.too_large.store(true, Ordering::SeqCst);
            self.interrupt.store(true, Ordering::SeqCst);
        }
    }
    fn counter(&self) -> gix::progress::StepShared {
        Default::default()
    }
}

impl gix::Progress for PackMeter {
    fn init(&mut self, _max: Option<gix::progress::Step>, _unit: Option<gix::progress::Unit>) {}
    fn set_name(&mut self, _name: String) {}
    fn name(&self) -> Option<String> {
        None
    }
    fn id(&self) -> gix::progress::Id {
        self.id
    }
    fn message(&self, _level: gix::progress::MessageLevel, _message: String) {}
}

impl gix::NestedProgress for PackMeter {
    type SubProgress = Self;
    fn add_child(&mut self, _name: impl Into<String>) -> Self {
        Self {
            id: gix::progress::UNKNOWN,
            ..self.clone()
        }
    }
    fn add_child_with_id(&mut self, _name: impl Into<String>, id: gix::progress::Id) -> Self {
        Self { id, ..self.clone() }
    }
}

fn fetch_failed(context: &str) -> impl Fn(gix::Error) -> GitError + '_ {
    move |e| GitError::FetchFailed(bounded(&format!("{context}: {e:#}")))
}

/// Fetches `source` into a temporary bare repository (deleted on return) and returns
/// the files under its `path`. Stops when `interrupt` is raised (the time limit) or the
/// pack goes over the byte limit (`too_large` raised too).
pub(super) fn fetch_blocking(
    source: &Source,
    tls: Arc<rustls::ClientConfig>,
    interrupt: &Arc<AtomicBool>,
    too_large: &Arc<AtomicBool>,
) -> Result<Fetched, GitError> {
    use gix::remote::Direction;
    let (_dir, repo) = temporary_repository()?;
    let wanted = match &source.git_ref {
        None => "HEAD".to_owned(),
        Some(r) => r.clone(),
    };
    let spec = format!("+{wanted}:{TARGET}");
    let remote = repo
        .remote_at_without_url_rewrite(source.url.as_str())
        .map_err(fetch_failed("remote"))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(Some(spec.as_str()), Direction::Fetch)
        .map_err(|e| GitError::SourceInvalid(bounded(&format!("git.ref {wanted:?}: {e:#}"))))?;
    let options = transport_options(&repo, source, tls)?;
    let connection = remote
        .connect(Direction::Fetch)
        .map_err(fetch_failed("cannot connect"))?
        .with_transport_options(Box::new(options))
        // No credentials: a repository that asks for them fails instead of prompting.
        .with_credentials(|_| Ok(None));
    let meter = PackMeter {
        id: gix::progress::UNKNOWN,
        limit: source.max_bytes,
        received: Arc::new(AtomicUsize::new(0)),
        interrupt: interrupt.clone(),
        too_large: too_large.clone(),
    };
    let classify = |e: gix::Error| classify(e, source, &wanted, too_large, interrupt);
    let prepare = connection
        .prepare_fetch(meter.clone(), gix::remote::ref_map::Options::default())
        .map_err(classify)?;
    let mapping = prepare.ref_map().mappings.iter().min_by_key(|m| {
        precedence(
            m.remote.as_name().map(|n| n.to_str_lossy()).as_deref(),
            &wanted,
        )
    });
    let Some(mapping) = mapping else {
        return Err(GitError::RefNotFound(match &source.git_ref {
            Some(r) => format!("no branch, tag or commit {r:?} on {}", source.url),
            None => format!("{} has no default branch (empty repository?)", source.url),
        }));
    };
    let target = mapping
        .remote
        .as_id()
        .map(gix::ObjectId::from)
        .ok_or_else(|| GitError::RefNotFound(format!("{wanted:?} names no object")))?;
    let outcome = prepare
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN))
        .receive(meter.clone(), interrupt)
        .map_err(classify)?;
    let pack_bytes = meter.received.load(Ordering::SeqCst) as u64;
    if let gix::remote::fetch::Status::NoPackReceived { .. } = outcome.status {
        tracing::debug!("no pack received (the objects were already present)");
    }
    let (commit, start, prefix) = requested_tree(&repo, target, source, &wanted)?;
    let mut walk = Walk {
        repo: &repo,
        limit: source.max_bytes,
        bytes: 0,
        files: Vec::new(),
        skipped_submodules: Vec::new(),
        max_files: source.max_files,
        interrupt,
    };
    walk.tree(&start, &prefix)?;
    Ok(Fetched {
        commit,
        files: walk.files,
        skipped_submodules: walk.skipped_submodules,
        pack_bytes,
    })
}

/// The error of a failed fetch step: over the byte limit, over the time limit, a
/// commit id the server does not have, or any other failure of the fetch.
fn classify(
    e: gix::Error,
    source: &Source,
    wanted: &str,
    too_large: &AtomicBool,
    interrupt: &AtomicBool,
) -> GitError {
    if too_large.load(Ordering::SeqCst) {
        return GitError::TooLarge(format!(
            "the pack is larger than the limit of {} bytes",
            source.max_bytes
        ));
    }
    if interrupt.load(Ordering::SeqCst) {
        return GitError::Timeout(format!("fetch interrupted after {:?}", source.timeout));
    }
    let text = format!("{e:#}");
    let is_commit_id = wanted.len() == 40 && wanted.bytes().all(|b| b.is_ascii_hexdigit());
    if is_commit_id && (text.contains("not our ref") || text.contains("not found")) {
        GitError::RefNotFound(bounded(&format!(
            "commit {wanted} is not on {}: {text}",
            source.url
        )))
    } else {
        GitError::FetchFailed(bounded(&format!("fetching {}: {text}", source.url)))
    }
}

/// A new bare repository in a temporary directory (removed when the directory is
/// dropped), opened isolated: no system, global or environment configuration (no url
/// rewrites, no credential helpers, no proxies or hooks configured for someone else).
fn temporary_repository() -> Result<(tempfile::TempDir, gix::Repository), GitError> {
    let dir = tempfile::Builder::new()
        .prefix("krt-git-")
        .tempdir()
        .map_err(|e| GitError::FetchFailed(format!("cannot create a temporary directory: {e}")))?;
    let open = gix::open::Options::isolated().config_overrides([
        "http.followRedirects=false",
        "core.logAllRefUpdates=false",
        "user.name=runtimed",
        "user.email=runtimed@kruntimes.invalid",
    ]);
    let repo = gix::ThreadSafeRepository::init_opts(
        dir.path(),
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        open,
    )
    .map_err(fetch_failed("cannot create the temporary repository"))?
    .to_thread_local();
    Ok((dir, repo))
}

/// HTTP options for `source`: no redirects, the sidecar's TLS trust, and the fetch's
/// time limit on every connection and request.
fn transport_options(
    repo: &gix::Repository,
    source: &Source,
    tls: Arc<rustls::ClientConfig>,
) -> Result<http::Options, GitError> {
    let mut options = repo
        .transport_options(source.url.as_str(), None)
        .map_err(fetch_failed("transport options"))?
        .and_then(|o| o.downcast::<http::Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    options.follow_redirects = http::options::FollowRedirects::None;
    let timeout = source.timeout;
    let reqwest_options = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder
                .tls_backend_preconfigured((*tls).clone())
                .timeout(timeout)
                .connect_timeout(timeout))
        })),
        configure_request: None,
    };
    options.backend = Some(Arc::new(std::sync::Mutex::new(reqwest_options)));
    Ok(options)
}

/// The fetched commit (hex), the tree to deliver (the root, or `git.path`'s) and the
/// prefix of its paths in the repository.
fn requested_tree<'r>(
    repo: &'r gix::Repository,
    target: gix::ObjectId,
    source: &Source,
    wanted: &str,
) -> Result<(String, gix::Tree<'r>, String), GitError> {
    let commit = repo
        .find_object(target)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            GitError::RefNotFound(bounded(&format!("{wanted:?} is not a commit: {e:#}")))
        })?;
    let commit_id = commit.id.to_string();
    let root = commit
        .tree()
        .map_err(fetch_failed("reading the commit's tree"))?;
    let Some(path) = &source.path else {
        return Ok((commit_id, root, String::new()));
    };
    let entry = root
        .lookup_entry_by_path(path)
        .map_err(fetch_failed("looking up git.path"))?
        .filter(|e| e.mode().is_tree())
        .ok_or_else(|| {
            GitError::PathNotFound(format!(
                "git.path {path:?} is not a directory at {wanted} ({commit_id})"
            ))
        })?;
    let tree = repo
        .find_tree(entry.object_id())
        .map_err(fetch_failed("reading git.path"))?;
    Ok((commit_id, tree, format!("{path}/")))
}

/// git's order for resolving a short name: `refs/NAME`, then tags, then branches.
fn precedence(remote_name: Option<&str>, wanted: &str) -> usize {
    let Some(name) = remote_name else {
        return 0; // an object id
    };
    [
        wanted.to_owned(),
        format!("refs/{wanted}"),
        format!("refs/tags/{wanted}"),
        format!("refs/heads/{wanted}"),
    ]
    .iter()
    .position(|candidate| candidate == name)
    .unwrap_or(usize::MAX)
}

struct Walk<'r> {
    repo: &'r gix::Repository,
    limit: u64,
    bytes: u64,
    files: Vec<TreeFile>,
    skipped_submodules: Vec<String>,
    max_files: usize,
    interrupt: &'r AtomicBool,
}

impl Walk<'_> {
    fn tree(&mut self, tree: &gix::Tree<'_>, prefix: &str) -> Result<(), GitError> {
        if self.interrupt.load(Ordering::SeqCst) {
            return Err(GitError::Timeout(
                "interrupted while reading the tree".into(),
            ));
        }
        // Collected first: the tree's buffer is borrowed by its entries.
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(fetch_failed("reading a tree"))?;
            entries.push((
                entry.mode().kind(),
                entry.filename().to_owned(),
                entry.object_id(),
            ));
        }
        for (kind, name, id) in entries {
            let Ok(name) = name.to_str() else {
                return Err(GitError::TreeRefused(format!(
                    "{prefix}{:?}: the name is not UTF-8",
                    name.to_str_lossy()
                )));
            };
            let path = format!("{prefix}{name}");
            match kind {
                EntryKind::Tree => {
                    let sub = self
                        .repo
                        .find_tree(id)
                        .map_err(fetch_failed("reading a tree"))?;
                    self.tree(&sub, &format!("{path}/"))?;
                }
                EntryKind::Commit => self.skipped_submodules.push(path),
                EntryKind::Link => {
                    return Err(GitError::TreeRefused(format!(
                        "{path} is a symlink; symlinks are not delivered (choose a git.path without them)"
                    )));
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    check_relative_path(&path, PathKind::Plain)
                        .map_err(|reason| GitError::TreeRefused(format!("{path:?}: {reason}")))?;
                    if self.files.len() >= self.max_files {
                        return Err(GitError::TooLarge(format!(
                            "more than {} files to deliver",
                            self.max_files
                        )));
                    }
                    // Checked from the header before the content is inflated.
                    let size = self
                        .repo
                        .find_header(id)
                        .map_err(fetch_failed("reading a blob"))?
                        .size();
                    self.add(path.len() as u64 + size)?;
                    let blob = self
                        .repo
                        .find_blob(id)
                        .map_err(fetch_failed("reading a blob"))?;
                    self.files.push(TreeFile {
                        path,
                        content: blob.data.clone(),
                        executable: kind == EntryKind::BlobExecutable,
                    });
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, bytes: u64) -> Result<(), GitError> {
        self.bytes += bytes;
        if self.bytes > self.limit {
            return Err(GitError::TooLarge(format!(
                "the files to deliver (paths and contents) exceed the limit of {} bytes",
                self.limit
            )));
        }
        Ok(())
    }
}
