//! API Gateway v2 (HTTP APIs): the API, a Lambda proxy integration, routes and stages.

use async_trait::async_trait;
use aws_sdk_apigatewayv2::types::{IntegrationType, ProtocolType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use super::{Clients, Tags, api, none_if_missing, obj, ok_if_missing, split_id, tag_delta};
use crate::engine::{Input, Resource, TAG_RESOURCE, TAG_STACK};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, props, to_value};

/// Kind name of [`Api`].
pub const API_KIND: &str = "aws:apigatewayv2:Api";
/// Kind name of [`Integration`].
pub const INTEGRATION_KIND: &str = "aws:apigatewayv2:Integration";
/// Kind name of [`Route`].
pub const ROUTE_KIND: &str = "aws:apigatewayv2:Route";
/// Kind name of [`Stage`].
pub const STAGE_KIND: &str = "aws:apigatewayv2:Stage";

/// An HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Api {
    /// Display name.
    pub name: String,
    /// `HTTP` (forces replacement).
    pub protocol_type: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for Api {
    const KIND: &'static str = API_KIND;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if self.name.is_empty() || self.name.len() > 128 {
            e.push(format!("name `{}` must be 1-128 chars", self.name));
        }
        if !["HTTP", "WEBSOCKET"].contains(&self.protocol_type.as_str()) {
            e.push(format!(
                "protocol_type `{}` must be HTTP or WEBSOCKET",
                self.protocol_type
            ));
        }
        e
    }
}

/// A Lambda proxy integration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Integration {
    /// API id.
    pub api_id: Input<String>,
    /// `AWS_PROXY`.
    pub integration_type: String,
    /// The Lambda function ARN.
    pub integration_uri: Input<String>,
    /// `POST` for Lambda proxies.
    pub integration_method: String,
    /// `2.0` for HTTP APIs.
    pub payload_format_version: String,
}

impl Resource for Integration {
    const KIND: &'static str = INTEGRATION_KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        let mut e = vec![];
        if !["1.0", "2.0"].contains(&self.payload_format_version.as_str()) {
            e.push(format!(
                "payload_format_version `{}` must be 1.0 or 2.0",
                self.payload_format_version
            ));
        }
        if self.integration_type != "AWS_PROXY" && self.integration_type != "HTTP_PROXY" {
            e.push(format!(
                "integration_type `{}` must be AWS_PROXY or HTTP_PROXY",
                self.integration_type
            ));
        }
        e
    }
}

/// A route, e.g. `POST /predict` → an integration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Route {
    /// API id.
    pub api_id: Input<String>,
    /// Route key, e.g. `POST /predict`.
    pub route_key: String,
    /// Target, `integrations/<id>`.
    pub target: Input<String>,
}

impl Resource for Route {
    const KIND: &'static str = ROUTE_KIND;
    const TAGGABLE: bool = false;
    fn validate(&self) -> Vec<String> {
        let valid = self.route_key == "$default"
            || self
                .route_key
                .split_once(' ')
                .is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
        if valid {
            vec![]
        } else {
            vec![format!(
                "route_key `{}` must be `METHOD /path` or $default",
                self.route_key
            )]
        }
    }
}

/// A stage (`$default` with auto-deploy serves at the API's root URL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    /// API id.
    pub api_id: Input<String>,
    /// Stage name.
    pub name: String,
    /// Deploy automatically on every change.
    pub auto_deploy: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

impl Resource for Stage {
    const KIND: &'static str = STAGE_KIND;
    fn validate(&self) -> Vec<String> {
        if self.name.is_empty() {
            vec!["stage name must not be empty".into()]
        } else {
            vec![]
        }
    }
}

fn api_arn(c: &Clients, id: &str) -> String {
    format!("arn:aws:apigateway:{}::/apis/{id}", c.region)
}

async fn retag(c: &Clients, arn: &str, old: &Tags, new: &Tags) -> Result<(), ProviderError> {
    let (set, rm) = tag_delta(old, new);
    if !set.is_empty() {
        let r = c
            .apigw
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("apigateway:TagResource", e))?;
    }
    if !rm.is_empty() {
        let r = c
            .apigw
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(rm))
            .send()
            .await;
        r.map_err(|e| api("apigateway:UntagResource", e))?;
    }
    Ok(())
}

/// Provider for [`Api`]. AWS assigns the id; an API made by an interrupted run is
/// adopted by its stack and resource tags.
pub struct ApiProvider(pub Arc<Clients>);

impl ApiProvider {
    async fn outputs(&self, id: &str, endpoint: &str) -> Result<Map<String, Value>, ProviderError> {
        let account = self.0.account_id().await?;
        let exec = format!("arn:aws:execute-api:{}:{account}:{id}", self.0.region);
        Ok(obj(
            json!({ "id": id, "endpoint": endpoint, "execution_arn": exec }),
        ))
    }
}

#[async_trait]
impl Provider for ApiProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["protocol_type"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Api = props(desired)?;
        let id = match id {
            Some(id) => id.to_string(),
            None => {
                let mut token = None;
                let found = loop {
                    let r = self.0.apigw.get_apis().set_next_token(token).send().await;
                    let r = r.map_err(|e| api("apigateway:GetApis", e))?;
                    let found = r
                        .items()
                        .iter()
                        .find(|a| {
                            let t = a.tags();
                            t.and_then(|t| t.get(TAG_STACK)) == d.tags.get(TAG_STACK)
                                && t.and_then(|t| t.get(TAG_RESOURCE)) == d.tags.get(TAG_RESOURCE)
                        })
                        .and_then(|a| a.api_id().map(str::to_string));
                    token = r.next_token().map(str::to_string);
                    if found.is_some() || token.is_none() {
                        break found;
                    }
                };
                match found {
                    Some(id) => id,
                    None => return Ok(None),
                }
            }
        };
        let r = self.0.apigw.get_api().api_id(&id).send().await;
        let Some(a) = none_if_missing(r.map_err(|e| api("apigateway:GetApi", e)))? else {
            return Ok(None);
        };
        let obs = Api {
            name: a.name().unwrap_or_default().to_string(),
            protocol_type: a.protocol_type().map_or("HTTP", |p| p.as_str()).to_string(),
            tags: super::user_tags(a.tags().cloned().unwrap_or_default()),
        };
        let outs = self
            .outputs(&id, a.api_endpoint().unwrap_or_default())
            .await?;
        Ok(Some(Observed {
            id,
            props: to_value(&obs)?,
            outputs: outs,
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Api = props(desired)?;
        let r = self
            .0
            .apigw
            .create_api()
            .name(&d.name)
            .protocol_type(ProtocolType::from(d.protocol_type.as_str()))
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| api("apigateway:CreateApi", e))?;
        let id = r.api_id().unwrap_or_default().to_string();
        let outs = self
            .outputs(&id, r.api_endpoint().unwrap_or_default())
            .await?;
        Ok(Observed {
            id,
            props: desired.clone(),
            outputs: outs,
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Api = props(observed)?;
        let d: Api = props(desired)?;
        if o.name != d.name {
            let r = self
                .0
                .apigw
                .update_api()
                .api_id(id)
                .name(&d.name)
                .send()
                .await;
            r.map_err(|e| api("apigateway:UpdateApi", e))?;
        }
        retag(&self.0, &api_arn(&self.0, id), &o.tags, &d.tags).await?;
        let now = self.read(Some(id), desired, None).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: now.map(|n| n.outputs).unwrap_or_default(),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let r = self.0.apigw.delete_api().api_id(id).send().await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("apigateway:DeleteApi", e)))
    }
}

/// Provider for [`Integration`]; id `api|integration`.
pub struct IntegrationProvider(pub Arc<Clients>);

fn integ_outputs(id: &str) -> Map<String, Value> {
    obj(json!({ "id": id, "target": format!("integrations/{id}") }))
}

#[async_trait]
impl Provider for IntegrationProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["api_id", "integration_type"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Integration = props(desired)?;
        let r = match id {
            Some(id) => {
                let (api_id, iid) = split_id(id);
                let r = self
                    .0
                    .apigw
                    .get_integration()
                    .api_id(api_id)
                    .integration_id(iid)
                    .send()
                    .await;
                let Some(i) = none_if_missing(r.map_err(|e| api("apigateway:GetIntegration", e)))?
                else {
                    return Ok(None);
                };
                (
                    api_id.to_string(),
                    i.integration_id,
                    i.integration_type,
                    i.integration_uri,
                    i.integration_method,
                    i.payload_format_version,
                )
            }
            None => {
                let api_id = d.api_id.as_str();
                let r = self.0.apigw.get_integrations().api_id(api_id).send().await;
                let Some(l) = none_if_missing(r.map_err(|e| api("apigateway:GetIntegrations", e)))?
                else {
                    return Ok(None);
                };
                let Some(i) = l
                    .items()
                    .iter()
                    .find(|i| i.integration_uri() == Some(d.integration_uri.as_str()))
                else {
                    return Ok(None);
                };
                let i = i.clone();
                (
                    api_id.to_string(),
                    i.integration_id,
                    i.integration_type,
                    i.integration_uri,
                    i.integration_method,
                    i.payload_format_version,
                )
            }
        };
        let (api_id, iid, itype, uri, method, pfv) = r;
        let iid = iid.unwrap_or_default();
        let obs = Integration {
            api_id: Input::Value(api_id.clone()),
            integration_type: itype.map_or(String::new(), |t| t.as_str().to_string()),
            integration_uri: Input::Value(uri.unwrap_or_default()),
            integration_method: method.unwrap_or_else(|| d.integration_method.clone()),
            payload_format_version: pfv.unwrap_or_default(),
        };
        Ok(Some(Observed {
            id: format!("{api_id}|{iid}"),
            props: to_value(&obs)?,
            outputs: integ_outputs(&iid),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Integration = props(desired)?;
        let r = self
            .0
            .apigw
            .create_integration()
            .api_id(d.api_id.as_str())
            .integration_type(IntegrationType::from(d.integration_type.as_str()))
            .integration_uri(d.integration_uri.as_str())
            .integration_method(&d.integration_method)
            .payload_format_version(&d.payload_format_version)
            .send()
            .await
            .map_err(|e| api("apigateway:CreateIntegration", e))?;
        let iid = r.integration_id().unwrap_or_default();
        Ok(Observed {
            id: format!("{}|{iid}", d.api_id.as_str()),
            props: desired.clone(),
            outputs: integ_outputs(iid),
        })
    }

    async fn update(
        &self,
        id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let d: Integration = props(desired)?;
        let (api_id, iid) = split_id(id);
        let r = self
            .0
            .apigw
            .update_integration()
            .api_id(api_id)
            .integration_id(iid)
            .integration_uri(d.integration_uri.as_str())
            .integration_method(&d.integration_method)
            .payload_format_version(&d.payload_format_version)
            .send()
            .await;
        r.map_err(|e| api("apigateway:UpdateIntegration", e))?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: integ_outputs(iid),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (api_id, iid) = split_id(id);
        let r = self
            .0
            .apigw
            .delete_integration()
            .api_id(api_id)
            .integration_id(iid)
            .send()
            .await;
        ok_if_missing(
            r.map(|_| ())
                .map_err(|e| api("apigateway:DeleteIntegration", e)),
        )
    }
}

/// Provider for [`Route`]; id `api|route`.
pub struct RouteProvider(pub Arc<Clients>);

#[async_trait]
impl Provider for RouteProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["api_id"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Route = props(desired)?;
        let (api_id, rid, key, target) = match id {
            Some(id) => {
                let (api_id, rid) = split_id(id);
                let r = self
                    .0
                    .apigw
                    .get_route()
                    .api_id(api_id)
                    .route_id(rid)
                    .send()
                    .await;
                let Some(r) = none_if_missing(r.map_err(|e| api("apigateway:GetRoute", e)))? else {
                    return Ok(None);
                };
                (api_id.to_string(), rid.to_string(), r.route_key, r.target)
            }
            None => {
                let api_id = d.api_id.as_str();
                let r = self.0.apigw.get_routes().api_id(api_id).send().await;
                let Some(l) = none_if_missing(r.map_err(|e| api("apigateway:GetRoutes", e)))?
                else {
                    return Ok(None);
                };
                let Some(r) = l
                    .items()
                    .iter()
                    .find(|r| r.route_key() == Some(d.route_key.as_str()))
                else {
                    return Ok(None);
                };
                (
                    api_id.to_string(),
                    r.route_id().unwrap_or_default().to_string(),
                    r.route_key.clone(),
                    r.target.clone(),
                )
            }
        };
        let obs = Route {
            api_id: Input::Value(api_id.clone()),
            route_key: key.unwrap_or_default(),
            target: Input::Value(target.unwrap_or_default()),
        };
        Ok(Some(Observed {
            id: format!("{api_id}|{rid}"),
            props: to_value(&obs)?,
            outputs: obj(json!({ "id": rid })),
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Route = props(desired)?;
        let r = self
            .0
            .apigw
            .create_route()
            .api_id(d.api_id.as_str())
            .route_key(&d.route_key)
            .target(d.target.as_str())
            .send()
            .await
            .map_err(|e| api("apigateway:CreateRoute", e))?;
        let rid = r.route_id().unwrap_or_default();
        Ok(Observed {
            id: format!("{}|{rid}", d.api_id.as_str()),
            props: desired.clone(),
            outputs: obj(json!({ "id": rid })),
        })
    }

    async fn update(
        &self,
        id: &str,
        _observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let d: Route = props(desired)?;
        let (api_id, rid) = split_id(id);
        let r = self
            .0
            .apigw
            .update_route()
            .api_id(api_id)
            .route_id(rid)
            .route_key(&d.route_key)
            .target(d.target.as_str())
            .send()
            .await;
        r.map_err(|e| api("apigateway:UpdateRoute", e))?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: obj(json!({ "id": rid })),
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (api_id, rid) = split_id(id);
        let r = self
            .0
            .apigw
            .delete_route()
            .api_id(api_id)
            .route_id(rid)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("apigateway:DeleteRoute", e)))
    }
}

/// Provider for [`Stage`]; id `api|stage`.
pub struct StageProvider(pub Arc<Clients>);

impl StageProvider {
    async fn outputs(&self, api_id: &str, name: &str) -> Result<Map<String, Value>, ProviderError> {
        let r = self.0.apigw.get_api().api_id(api_id).send().await;
        let a = r.map_err(|e| api("apigateway:GetApi", e))?;
        let base = a
            .api_endpoint()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let url = if name == "$default" {
            format!("{base}/")
        } else {
            format!("{base}/{name}/")
        };
        Ok(obj(json!({ "name": name, "invoke_url": url })))
    }
}

#[async_trait]
impl Provider for StageProvider {
    fn replace_fields(&self) -> &'static [&'static str] {
        &["api_id", "name"]
    }

    async fn read(
        &self,
        id: Option<&str>,
        desired: &Value,
        _prior: Option<&Value>,
    ) -> Result<Option<Observed>, ProviderError> {
        let d: Stage = props(desired)?;
        let key = format!("{}|{}", d.api_id.as_str(), d.name);
        let (api_id, name) = split_id(id.unwrap_or(&key));
        let r = self
            .0
            .apigw
            .get_stage()
            .api_id(api_id)
            .stage_name(name)
            .send()
            .await;
        let Some(s) = none_if_missing(r.map_err(|e| api("apigateway:GetStage", e)))? else {
            return Ok(None);
        };
        let obs = Stage {
            api_id: Input::Value(api_id.to_string()),
            name: s.stage_name().unwrap_or(name).to_string(),
            auto_deploy: s.auto_deploy().unwrap_or(false),
            tags: super::user_tags(s.tags().cloned().unwrap_or_default()),
        };
        let outs = self.outputs(api_id, name).await?;
        Ok(Some(Observed {
            id: format!("{api_id}|{name}"),
            props: to_value(&obs)?,
            outputs: outs,
        }))
    }

    async fn create(&self, desired: &Value) -> Result<Observed, ProviderError> {
        let d: Stage = props(desired)?;
        let api_id = d.api_id.as_str();
        let r = self
            .0
            .apigw
            .create_stage()
            .api_id(api_id)
            .stage_name(&d.name)
            .auto_deploy(d.auto_deploy)
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .send()
            .await;
        r.map_err(|e| api("apigateway:CreateStage", e))?;
        let outs = self.outputs(api_id, &d.name).await?;
        Ok(Observed {
            id: format!("{api_id}|{}", d.name),
            props: desired.clone(),
            outputs: outs,
        })
    }

    async fn update(
        &self,
        id: &str,
        observed: &Value,
        desired: &Value,
    ) -> Result<Observed, ProviderError> {
        let o: Stage = props(observed)?;
        let d: Stage = props(desired)?;
        let (api_id, name) = split_id(id);
        if o.auto_deploy != d.auto_deploy {
            let r = self
                .0
                .apigw
                .update_stage()
                .api_id(api_id)
                .stage_name(name)
                .auto_deploy(d.auto_deploy)
                .send()
                .await;
            r.map_err(|e| api("apigateway:UpdateStage", e))?;
        }
        let arn = format!("{}/stages/{name}", api_arn(&self.0, api_id));
        retag(&self.0, &arn, &o.tags, &d.tags).await?;
        let outs = self.outputs(api_id, name).await?;
        Ok(Observed {
            id: id.into(),
            props: desired.clone(),
            outputs: outs,
        })
    }

    async fn delete(&self, id: &str, _props: &Value) -> Result<(), ProviderError> {
        let (api_id, name) = split_id(id);
        let r = self
            .0
            .apigw
            .delete_stage()
            .api_id(api_id)
            .stage_name(name)
            .send()
            .await;
        ok_if_missing(r.map(|_| ()).map_err(|e| api("apigateway:DeleteStage", e)))
    }
}
