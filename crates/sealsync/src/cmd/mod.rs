//! One module per subcommand.

pub mod contacts;
pub mod export;
pub mod import;
pub mod init;
pub mod keys;
pub mod quickstart;
pub mod workspace;
