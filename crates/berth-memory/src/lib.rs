//! AgentCore Memory.
//!
//! * Control plane: CreateMemory, GetMemory, UpdateMemory, DeleteMemory, ListMemories, with
//!   strategies stored in their output form ([`strategies`]). Create/Update/Delete answer with
//!   the transitional status and a durable job moves the memory on.
//! * Data plane, short-term memory: CreateEvent, GetEvent, DeleteEvent, ListEvents (newest
//!   first, branches, metadata filters), ListActors, ListSessions; an expiry sweep deletes
//!   events older than the memory's `eventExpiryDuration`.
//! * Data plane, long-term records ([`records`]): written directly, read, listed, deleted and
//!   retrieved by hybrid full-text and embedding search.
//! * Long-term extraction ([`extraction`]): strategies run a chat model over new conversational
//!   events and consolidate what it extracts into records; failed extractions are jobs.
//!
//! This crate knows nothing about HTTP: the server hands it validated, typed inputs and a
//! [`berth_core::Caller`].

pub mod error;
pub mod extraction;
pub mod model;
pub mod record_filters;
pub mod records;
pub mod service;
pub mod store;
pub mod strategies;
pub mod vector_index;

pub use error::MemoryError;
pub use extraction::ExtractionSettings;
pub use service::MemoryService;
