//! The signals that end `krt run` early: Ctrl-C (SIGINT), SIGTERM (`timeout`, a CI
//! cancel) and SIGHUP (a closed terminal). Each cancels what runs, waits for it to end
//! and exits with 128 + the signal's number, as a shell reports it. A second signal
//! while the cancel is under way exits at once: the runtimed children stop by
//! themselves (`--exit-with-parent`), and the result file says so (`--result-file`).

use tokio::signal::unix::{SignalKind, signal};

use super::result::{Ending, Reason};
use super::result_file::ResultSink;

/// A signal that asks krt to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// SIGINT (Ctrl-C): exit 130.
    Int,
    /// SIGTERM: exit 143.
    Term,
    /// SIGHUP: exit 129.
    Hup,
}

impl Interrupt {
    /// 128 + the signal's number.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Self::Int => 130,
            Self::Term => 143,
            Self::Hup => 129,
        }
    }

    /// The signal's name (`SIGINT`).
    pub(crate) fn signal_name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
            Self::Hup => "SIGHUP",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int => "interrupted",
            Self::Term => "terminated",
            Self::Hup => "hung up",
        }
    }
}

/// The three signals, installed once: from then on they no longer end krt at once.
#[derive(Debug)]
pub(crate) struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    first: Option<Interrupt>,
    /// Written when a second signal exits at once.
    result: Option<ResultSink>,
}

impl Interrupts {
    /// Installs the handlers.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            first: None,
            result: None,
        })
    }

    /// Writes `sink`'s result (krt's, `Interrupted`) when a second signal exits krt
    /// without waiting for the cancel.
    pub(crate) fn with_result(mut self, sink: ResultSink) -> Self {
        self.result = Some(sink);
        self
    }

    /// The first signal that arrives (the same one again on later calls, at once).
    /// From then on, the next signal exits the process, whatever krt is waiting for.
    pub(crate) async fn first(&mut self) -> Interrupt {
        if let Some(first) = self.first {
            return first;
        }
        let got = self.next().await;
        self.first = Some(got);
        // The watcher listens before krt says "again to exit at once": a second signal
        // sent as soon as that is read must find it (the first handlers, still
        // installed, would take it and nobody would look).
        let watching = Self::install();
        eprintln!(
            "krt run: {}; cancelling (again to exit at once)",
            got.name()
        );
        match watching {
            Ok(mut watcher) => {
                let result = self.result.clone();
                tokio::spawn(async move {
                    let second = watcher.next().await;
                    eprintln!("krt run: exiting without waiting for the cancel");
                    if let Some(sink) = result {
                        sink.finish(&Ending::krt(
                            got.exit_code(),
                            Reason::Interrupted,
                            format!(
                                "krt got {}, then {}, and exited without waiting for the cancel",
                                got.signal_name(),
                                second.signal_name()
                            ),
                        ));
                    }
                    std::process::exit(got.exit_code());
                });
            }
            Err(e) => eprintln!("krt run: a second signal will not force an exit: {e}"),
        }
        got
    }

    async fn next(&mut self) -> Interrupt {
        tokio::select! {
            _ = self.int.recv() => Interrupt::Int,
            _ = self.term.recv() => Interrupt::Term,
            _ = self.hup.recv() => Interrupt::Hup,
        }
    }
}
