//! The local target's stand-ins for the cloud's data plane, run from what was
//! deployed: the API Gateway fronts (the uploaded Lambda zip behind each HTTP API),
//! the kubelet (each Deployment's pods from its pushed image, under runc) and the
//! HPA's algorithm for the local control plane.

pub mod apigw;
pub mod hpa;
pub mod kubelet;
pub mod process;
