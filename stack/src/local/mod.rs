//! The local target's stand-ins for the cloud's data plane, run from what was
//! deployed: the API Gateway fronts (the uploaded Lambda zip behind each HTTP API).

pub mod apigw;
pub mod process;
