//! Wiring: configuration in, a running registry out. Shared by the CLI and
//! by tests that start the real server.

pub mod accounts;
pub mod app;
pub mod backends;
pub mod backup;
pub mod files;
pub mod health;
pub mod maintenance;
pub mod progress;
pub mod scheduler;
pub mod scrub;
pub mod sync;
pub mod telemetry;
pub mod usage;

pub use app::{App, run};
