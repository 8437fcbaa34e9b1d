//! API Gateway v2 (HTTP APIs): the API, a Lambda proxy integration, routes and stages.

mod api;
mod integration;
mod route;
mod stage;

pub use api::{Api, ApiProvider};
pub use integration::{Integration, IntegrationProvider};
pub use route::{Route, RouteProvider};
pub use stage::{Stage, StageProvider};

use super::Clients;

/// The ARN API Gateway tags an API by.
fn api_arn(c: &Clients, id: &str) -> String {
    format!("arn:{}:apigateway:{}::/apis/{id}", c.partition(), c.region)
}

// API Gateway tags by ARN.
super::map_tagging!(
    aws_sdk_apigatewayv2::Client,
    "apigateway",
    resource_arn,
    get_tags,
    "GetTags"
);
