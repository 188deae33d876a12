//! Every bound runtimed enforces, in one place: name, default and why.

use std::time::Duration;

/// Time between SIGTERM and SIGKILL on timeout or cancel: long enough for a program to
/// flush and clean up, short enough that a stuck Run frees its slot quickly.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Output kept per stream (stdout and stderr each): half from the head, half from the
/// tail, the middle dropped and counted. Bounds memory whatever a program writes.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// Output a follower (Logs with follow, ExecuteAndFollow) may lag behind the program,
/// per stream, beyond the retained tail (half of [`DEFAULT_OUTPUT_LIMIT`]), before the
/// program waits for it (backpressure: the pipe fills and its `write` blocks). Absorbs
/// the follower's bursts without holding the program back at each chunk; bounds what
/// one stream holds at the retained limit plus this, whatever the follower does.
pub const FOLLOW_BUFFER_BYTES: usize = 1024 * 1024;

/// How long the program waits for a follower that takes nothing (a client that stopped
/// reading but not the call): then that follower is detached, the program goes on, and
/// the follower's next read jumps over what it missed (one gap, counted in its offsets).
/// Long enough for a client's pause (a terminal scrolled back, a collector restarting
/// its read), short enough that a stuck client holds a Run up only briefly.
pub const FOLLOW_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout used when a request gives none (the controller always sends the Run's
/// timeout or the Runtime's `defaultTimeout`).
pub const DEFAULT_TIMEOUT: Duration =
    Duration::from_millis(kruntimes_runtimed_api::DEFAULT_TIMEOUT_MS);

/// Longest timeout accepted: the API's limit.
pub const MAX_TIMEOUT: Duration =
    Duration::from_secs(kruntimes_api::v1alpha1::limits::MAX_TIMEOUT_SECONDS);

/// How long a terminal execution stays queryable (Status, Logs) before it is forgotten.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(10 * 60);

/// How often the agent applies retention when no call comes in.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Terminal executions kept at most; beyond it the oldest are forgotten first. Each
/// keeps up to two [`DEFAULT_OUTPUT_LIMIT`]s of output, so this bounds retained output
/// at 256 MiB with the defaults; the controller copies what it needs and Forgets.
pub const DEFAULT_MAX_RETAINED: usize = 128;

/// Executions running at once; Execute beyond it is refused (`RESOURCE_EXHAUSTED`).
pub const DEFAULT_MAX_RUNNING: usize = 64;

/// Largest `run_uid` accepted (Kubernetes uids are 36 bytes).
pub use kruntimes_runtimed_api::request::MAX_RUN_UID_BYTES;

/// Largest input accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Largest read from a process pipe (reads start at 4 KiB and double while full) and
/// largest log chunk sent to a client.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long to keep draining pipes after every process of a Run is gone (plus what a
/// follower may hold the output up, [`FOLLOW_STALL_TIMEOUT`]); a pipe still open after
/// that belongs to a process that escaped detection and is abandoned.
pub const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Rounds of "find the Run's processes, SIGKILL them" before giving up (each round
/// waits [`KILL_ROUND_PAUSE`]).
pub const MAX_KILL_ROUNDS: usize = 200;

/// Pause between kill rounds, so the reaper can collect the killed processes.
pub const KILL_ROUND_PAUSE: Duration = Duration::from_millis(10);

/// PATH given to every process (the environment is scrubbed).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long `runtimed probe` waits for an answer: below the one-second
/// `timeoutSeconds` of the injected probes, so a slow answer fails the probe cleanly.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// How often the agent measures each running Run's workspace against the workspace size
/// limit (`--workspace-size-limit`): often enough to stop a Run filling the disk before
/// the kubelet evicts the whole pod (it checks every 10 s by default), rarely enough
/// that the walk costs little.
pub const WORKSPACE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Mode of each Run's workspace directory: readable by the sidecar, which runs as
/// another uid in a Pod and uploads artifacts from it; writable only by the Run's uid.
pub const WORKSPACE_MODE: u32 = 0o755;

/// Emptied workspace directories an agent keeps for the next Runs (see
/// [`crate::agent::spares`]): renaming one into place costs a tenth of making a new one. As
/// many as Runs that end close together on a busy agent; each is an empty directory
/// (one inode, one block).
pub const SPARE_WORKSPACES: usize = 16;

/// Emptied Run cgroups an agent keeps for the next Runs (see [`crate::agent::cgroup`]):
/// taking one costs no `mkdir` and `rmdir` (about 120 µs together); as many as spare
/// workspaces, for the same reason.
pub const SPARE_RUN_CGROUPS: usize = SPARE_WORKSPACES;

/// Entries a workspace may hold (files and links, no subdirectory) for the agent to
/// remove it on its own thread when its Run ends; a larger one is removed on the
/// blocking pool. The agent runs on one thread: a Run that left a large tree must not
/// stall every call (and the pod's probes) while it is deleted, and handing the usual
/// small workspace to another thread would cost two thread wake-ups per Run.
pub const INLINE_REMOVAL_ENTRIES: usize = 64;

/// How often `--exit-with-parent` checks whether the parent is still there (one
/// `getppid` call). Rarely enough to cost nothing; often enough that a killed
/// `krt run --local` leaves nothing running for long.
pub const PARENT_POLL_INTERVAL: Duration = Duration::from_millis(500);
