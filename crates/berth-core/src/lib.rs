//! Berth's shared vocabulary: identifiers formatted exactly as AgentCore formats them, parsed
//! ARNs, account ids, the injected clock, opaque pagination tokens and the error kinds that every
//! service maps its errors onto.
//!
//! This crate does no I/O and knows nothing about HTTP, SQL or any one service.

pub mod arn;
pub mod clock;
pub mod error;
pub mod ids;
pub mod page;

pub use arn::{AccountId, Arn};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ErrorKind, FieldError};
pub use page::PageToken;
