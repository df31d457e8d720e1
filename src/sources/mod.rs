//! The driving side: sources that feed the pipeline (Kafka topics, a watched directory,
//! stdin). Each turns input into `Pipeline` calls and acknowledges only what is durable.

pub mod files;
pub mod kafka;
