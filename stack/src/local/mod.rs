//! The local target's stand-ins for the cloud's data plane, run from what was
//! deployed: the API Gateway fronts (the uploaded Lambda zip behind each HTTP API),
//! the control plane (the Kubernetes API, the kubelet running each Deployment's pods
//! from its pushed image under runc, and the HPA controller), and the router in front
//! of both.

pub mod apigw;
pub mod control_plane;
pub mod daemon;
pub mod hpa;
pub mod kubelet;
pub mod process;
pub mod router;
