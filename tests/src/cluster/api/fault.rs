//! Fault injection: every non-watch request is answered with a chosen code (500 or
//! 429) and a `Status` until the fault expires, after a time or a number of requests.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ApiError;

/// How long or how often a fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultLength {
    /// For this long from now.
    For(Duration),
    /// For this many requests.
    Requests(u64),
}

#[derive(Debug)]
struct Fault {
    code: u16,
    until: Option<Instant>,
    remaining: Option<u64>,
}

/// The active fault, if any, and how many requests faults have answered.
#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<Option<Fault>>, std::sync::atomic::AtomicU64);

/// The codes a fault may answer with.
pub const FAULT_CODES: &[u16] = &[429, 500, 503];

impl Faults {
    pub(crate) fn set(&self, code: u16, length: FaultLength) {
        let fault = match length {
            FaultLength::For(d) => Fault {
                code,
                until: Some(Instant::now() + d),
                remaining: None,
            },
            FaultLength::Requests(n) => Fault {
                code,
                until: None,
                remaining: Some(n),
            },
        };
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
    }

    /// How many requests were answered with a fault so far.
    pub(crate) fn answered(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The error to answer this request with, while a fault lasts.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(fault) = guard.as_mut() else {
            return Ok(());
        };
        if fault.until.is_some_and(|t| Instant::now() >= t) || fault.remaining == Some(0) {
            *guard = None;
            return Ok(());
        }
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
        }
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(match fault.code {
            429 => ApiError {
                details: Some(serde_json::json!({"retryAfterSeconds": 1})),
                ..ApiError::new(
                    429,
                    "TooManyRequests",
                    "injected fault: too many requests, please try again later",
                )
            },
            503 => ApiError::new(
                503,
                "ServiceUnavailable",
                "injected fault: the server is currently unable to handle the request",
            ),
            code => ApiError::new(
                code,
                "InternalError",
                "injected fault: an error on the server has prevented the request from succeeding",
            ),
        })
    }
}
