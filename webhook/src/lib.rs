//! kruntimes admission webhook.
