//! Client library for `settled`.
//!
//! Not built yet: the TCP protocol and the client arrive with the network issue. The crate
//! exists so that the workspace has its final shape and dependency direction
//! (`protocol` <- `client` <- `bench`).
