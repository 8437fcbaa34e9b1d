//! A route, e.g. `POST /predict` → an integration.

use crate::providers::aws::prelude::*;

/// A route, e.g. `POST /predict` → an integration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:apigatewayv2:Route", checks = Self::checks)]
pub struct Route {
    /// API id.
    #[resource(replace)]
    pub api_id: Input<String>,
    /// Route key, e.g. `POST /predict`.
    pub route_key: String,
    /// Target, `integrations/<id>`.
    pub target: Input<String>,
}

impl Route {
    /// The route key's syntax.
    fn checks(&self, c: Checks) -> Checks {
        let valid = self.route_key == "$default"
            || self
                .route_key
                .split_once(' ')
                .is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
        c.require(valid, || {
            format!(
                "route_key `{}` must be `METHOD /path` or $default",
                self.route_key
            )
        })
    }
}

/// Provider for [`Route`]; id `api|route`.
pub struct RouteProvider(pub Arc<Clients>);

fn route_outputs(rid: &str) -> Outputs {
    obj(json!({ "id": rid }))
}

#[async_trait]
impl ResourceProvider for RouteProvider {
    type Resource = Route;

    async fn read(&self, at: Lookup<'_, Route>) -> Found<Route> {
        let d = at.desired;
        let (api_id, rid, key, target) = match at.id {
            Some(id) => {
                let (api_id, rid) = split_id(id);
                let r = self.0.apigw.get_route().api_id(api_id).route_id(rid);
                let r = r.send().await;
                let Some(r) = r.aws("apigateway:GetRoute").none_if_missing()? else {
                    return Ok(None);
                };
                (api_id, rid.to_string(), r.route_key, r.target)
            }
            None => {
                let api_id = d.api_id.as_str();
                let r = self.0.apigw.get_routes().api_id(api_id).send().await;
                let Some(l) = r.aws("apigateway:GetRoutes").none_if_missing()? else {
                    return Ok(None);
                };
                let key = Some(d.route_key.as_str());
                let Some(r) = l.items().iter().find(|r| r.route_key() == key) else {
                    return Ok(None);
                };
                let rid = r.route_id().unwrap_or_default().to_string();
                (api_id, rid, r.route_key.clone(), r.target.clone())
            }
        };
        Ok(Some(Read {
            id: join_id(api_id, &rid),
            props: Route {
                api_id: Input::Value(api_id.to_string()),
                route_key: key.unwrap_or_default(),
                target: Input::Value(target.unwrap_or_default()),
            },
            outputs: route_outputs(&rid),
        }))
    }

    async fn create(&self, d: &Route) -> Result<Created, ProviderError> {
        let r = self.0.apigw.create_route().api_id(d.api_id.as_str());
        let r = r.route_key(&d.route_key).target(d.target.as_str());
        let r = r.send().await.aws("apigateway:CreateRoute")?;
        let rid = r.route_id().unwrap_or_default();
        let id = join_id(d.api_id.as_str(), rid);
        Ok(Created::new(id, route_outputs(rid)))
    }

    async fn update(&self, id: &str, _o: &Route, d: &Route) -> Result<Applied, ProviderError> {
        let (api_id, rid) = split_id(id);
        let r = self.0.apigw.update_route().api_id(api_id).route_id(rid);
        let r = r.route_key(&d.route_key).target(d.target.as_str());
        r.send().await.aws("apigateway:UpdateRoute")?;
        Ok(route_outputs(rid).into())
    }

    async fn delete(&self, id: &str, _last: &Route) -> Result<(), ProviderError> {
        let (api_id, rid) = split_id(id);
        let r = self.0.apigw.delete_route().api_id(api_id).route_id(rid);
        r.send().await.aws("apigateway:DeleteRoute").missing_ok()
    }
}
