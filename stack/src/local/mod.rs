//! The local target's stand-ins for the cloud's data plane, run from what was
//! deployed: the API Gateway fronts (the uploaded Lambda zip behind each HTTP API) and
//! the HPA's algorithm for the local control plane.

pub mod apigw;
pub mod hpa;
pub mod process;
