//! End-to-end tests against a real cluster live in `tests/tests/`.
