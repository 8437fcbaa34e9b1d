//! Deployable artifacts: OCI images built without a Docker daemon and pushed through
//! the registry HTTP API.

pub mod bundle;
pub mod image;
pub mod oci;
