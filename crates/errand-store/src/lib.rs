//! The one interface every errand store implements, and the contract suite
//! that proves a store keeps errand's guarantees.
//!
//! # Layout
//! - [`store`]: the [`Store`] trait, one method per operation.
//! - [`params`]: the parameter and reply structs of those methods.
//! - [`counts`]: jobs by command and status, kept by the writes.
//! - [`error`]: [`StoreError`], typed so callers can tell a fenced stale
//!   worker ([`StoreError::LeaseLost`]) from an illegal request
//!   ([`StoreError::Conflict`]) or an unreachable database.
//! - [`observed`]: [`Observed`], a store seen through a hook (counting
//!   calls, unplugging it in tests).
//! - `contract` (feature `contract`): the test suite, and the
//!   [`store_contract_tests!`] macro that runs it against a store.

pub mod counts;
pub mod error;
pub mod observed;
pub mod params;
pub mod store;
pub mod webhook_sql;
pub mod webhooks;

#[cfg(feature = "contract")]
pub mod contract;

pub use error::StoreError;
pub use observed::Observed;
pub use params::*;
pub use store::{finish_then_claim, ChangeFeed, Store};
pub use webhooks::{DeliveryAttempt, TakeDeliveries, WebhookDelivery};

#[cfg(feature = "contract")]
#[doc(hidden)]
pub use errand_core::ManualClock as __ManualClock;
