//! sea-orm entities, one module per table of the `mailshift-migrations` schema. They are
//! the only Rust description of the tables; `SeaStore` converts them to and from the core
//! types (`FolderState`, `CopiedMessage`, `FailedMessage`).

pub mod api_token;
pub mod batch;
pub mod domain;
pub mod failure;
pub mod folder;
pub mod host_limit;
pub mod host_slot;
pub mod job;
pub mod mailbox;
pub mod message;
pub mod migration;
pub mod provision_alias;
pub mod provision_backend;
pub mod provision_mailbox;
