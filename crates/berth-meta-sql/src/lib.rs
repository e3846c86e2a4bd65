//! The part of the SQL metadata stores that is not SQL dialect.
//!
//! `berth-meta-sqlite` and `berth-meta-postgres` each keep their SQL strings
//! and their dialect's locking and connection handling; everything else they
//! would otherwise both write lives here once:
//!
//! - [`error`]: the one error idiom (`StoreResult` inside a backend, `?` on
//!   sqlx calls) and the classification of database errors into
//!   [`berth_meta::MetaError`], parameterized by a [`Dialect`];
//! - [`convert`]: integers, digests, repository names, the clock;
//! - [`rows`]: row structs (decoded by column name, so both drivers read
//!   them) and their conversions into `berth-meta` records;
//! - [`gc`]: assembling the garbage collector's view from query rows.
//!
//! A new table needs its SQL in each backend; its row struct and conversion
//! go here.

pub mod convert;
pub mod error;
pub mod gc;
pub mod proxy;
pub mod rows;
pub mod scrub;
pub mod usage;

pub use convert::{from_sql_int, now_ms, parse_digest, parse_repository, to_sql_int};
pub use error::{Dialect, StoreError, StoreResult};
