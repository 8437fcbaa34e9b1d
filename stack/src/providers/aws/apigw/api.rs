//! An HTTP API.

use super::api_arn;
use crate::engine::{TAG_RESOURCE, TAG_STACK};
use crate::providers::aws::prelude::*;
use aws_sdk_apigatewayv2::types::ProtocolType;

/// An HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:apigatewayv2:Api")]
pub struct Api {
    /// Display name.
    #[resource(len = 1..=128)]
    pub name: String,
    /// `HTTP` (forces replacement).
    #[resource(replace, one_of("HTTP", "WEBSOCKET"))]
    pub protocol_type: String,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Provider for [`Api`]. AWS assigns the id; an API made by an interrupted run is
/// adopted by its stack and resource tags.
pub struct ApiProvider(pub Arc<Clients>);

impl ApiProvider {
    async fn outputs(&self, id: &str, endpoint: &str) -> Result<Outputs, ProviderError> {
        let account = self.0.account_id().await?;
        let (partition, region) = (self.0.partition(), &self.0.region);
        let exec = format!("arn:{partition}:execute-api:{region}:{account}:{id}");
        // What a Lambda permission's SourceArn must match: AWS compares it with
        // `<execution arn>/<stage>/<method>/<path>`, so the bare execution ARN matches
        // no request (every invocation would be refused and answered 500).
        let every_route = format!("{exec}/*/*");
        Ok(obj(json!({
            "id": id,
            "endpoint": endpoint,
            "execution_arn": exec,
            "every_route_arn": every_route,
        })))
    }

    /// The id of the API this stack made for the resource, found by its tags.
    async fn find(&self, tags: &Tags) -> Result<Option<String>, ProviderError> {
        let mut token = None;
        loop {
            let r = self.0.apigw.get_apis().set_next_token(token).send().await;
            let r = r.aws("apigateway:GetApis")?;
            let found = r
                .items()
                .iter()
                .find(|a| {
                    let t = a.tags();
                    t.and_then(|t| t.get(TAG_STACK)) == tags.get(TAG_STACK)
                        && t.and_then(|t| t.get(TAG_RESOURCE)) == tags.get(TAG_RESOURCE)
                })
                .and_then(|a| a.api_id().map(str::to_string));
            token = r.next_token().map(str::to_string);
            if found.is_some() || token.is_none() {
                return Ok(found);
            }
        }
    }
}

#[async_trait]
impl ResourceProvider for ApiProvider {
    type Resource = Api;

    async fn read(&self, at: Lookup<'_, Api>) -> Found<Api> {
        let id = match at.id {
            Some(id) => id.to_string(),
            None => match self.find(&at.desired.tags).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let r = self.0.apigw.get_api().api_id(&id).send().await;
        let Some(a) = r.aws("apigateway:GetApi").none_if_missing()? else {
            return Ok(None);
        };
        let props = Api {
            name: a.name().unwrap_or_default().to_string(),
            protocol_type: a.protocol_type().map_or("HTTP", |p| p.as_str()).to_string(),
            tags: crate::providers::aws::user_tags(a.tags().cloned().unwrap_or_default()),
        };
        let outputs = self
            .outputs(&id, a.api_endpoint().unwrap_or_default())
            .await?;
        Ok(Some(Read { id, props, outputs }))
    }

    async fn create(&self, d: &Api) -> Result<Created, ProviderError> {
        let r = self
            .0
            .apigw
            .create_api()
            .name(&d.name)
            .protocol_type(ProtocolType::from(d.protocol_type.as_str()))
            .set_tags(Some(d.tags.clone().into_iter().collect()));
        let r = r.send().await.aws("apigateway:CreateApi")?;
        let id = r.api_id().unwrap_or_default();
        let outputs = self
            .outputs(id, r.api_endpoint().unwrap_or_default())
            .await?;
        Ok(Created::new(id, outputs))
    }

    async fn update(&self, id: &str, o: &Api, d: &Api) -> Result<Applied, ProviderError> {
        if o.name != d.name {
            let r = self.0.apigw.update_api().api_id(id).name(&d.name);
            r.send().await.aws("apigateway:UpdateApi")?;
        }
        sync_tags(&self.0.apigw, &api_arn(&self.0, id), &o.tags, &d.tags).await?;
        Ok(Applied::ReadBack)
    }

    async fn delete(&self, id: &str, _last: &Api) -> Result<(), ProviderError> {
        let r = self.0.apigw.delete_api().api_id(id).send().await;
        r.aws("apigateway:DeleteApi").missing_ok()
    }
}
