//! One module per CLI command.
pub mod compact;
pub mod consensus;
pub mod export;
pub mod feed;
pub mod keygen;
pub mod keys;
pub mod reindex;
pub mod serve;
pub mod verify;
