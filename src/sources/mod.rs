//! The driving side: sources that feed the pipeline (Kafka topics, a watched directory,
//! stdin). Each is thin: it turns what it reads into a document (bytes and ingest
//! context) for the ingest flow (`crate::ingest`) and acknowledges only what the flow
//! says is settled; none imports a store or the actors' writer.

pub mod feeds;
pub mod files;
pub mod kafka;
pub mod scan;
