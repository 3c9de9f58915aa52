//! AgentCore Memory.
//!
//! * Control plane: CreateMemory, GetMemory, UpdateMemory, DeleteMemory, ListMemories, with
//!   strategies stored in their output form ([`strategies`]). Create/Update/Delete answer with
//!   the transitional status and a durable job moves the memory on.
//! * Data plane, short-term memory: CreateEvent, GetEvent, DeleteEvent, ListEvents (newest
//!   first, branches, metadata filters), ListActors, ListSessions; an expiry sweep deletes
//!   events older than the memory's `eventExpiryDuration`.
//!
//! This crate knows nothing about HTTP: the server hands it validated, typed inputs and a
//! [`berth_core::Caller`].

pub mod error;
pub mod model;
pub mod service;
pub mod store;
pub mod strategies;

pub use error::MemoryError;
pub use service::MemoryService;
