//! A Lambda proxy integration.

use crate::providers::aws::prelude::*;
use aws_sdk_apigatewayv2::types::IntegrationType;

/// A Lambda proxy integration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:apigatewayv2:Integration")]
pub struct Integration {
    /// API id.
    #[resource(replace)]
    pub api_id: Input<String>,
    /// `AWS_PROXY`.
    #[resource(replace, one_of("AWS_PROXY", "HTTP_PROXY"))]
    pub integration_type: String,
    /// The Lambda function ARN.
    pub integration_uri: Input<String>,
    /// `POST` for Lambda proxies.
    pub integration_method: String,
    /// `2.0` for HTTP APIs.
    #[resource(one_of("1.0", "2.0"))]
    pub payload_format_version: String,
}

/// Provider for [`Integration`]; id `api|integration`.
pub struct IntegrationProvider(pub Arc<Clients>);

fn integ_outputs(id: &str) -> Outputs {
    obj(json!({ "id": id, "target": format!("integrations/{id}") }))
}

/// The fields of an integration as GetIntegration and GetIntegrations report them.
type Fields = (
    Option<String>,
    Option<IntegrationType>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The [`Fields`] of an integration as the SDK returns it: `GetIntegrationOutput`
/// and `Integration` (from `GetIntegrations`) are distinct types with the same fields.
macro_rules! fields {
    ($i:expr) => {{
        let i = $i;
        (
            i.integration_id,
            i.integration_type,
            i.integration_uri,
            i.integration_method,
            i.payload_format_version,
        )
    }};
}

impl IntegrationProvider {
    /// The integration `iid` of API `api_id`.
    async fn get(&self, api_id: &str, iid: &str) -> Result<Option<Fields>, ProviderError> {
        let r = self.0.apigw.get_integration().api_id(api_id);
        let r = r.integration_id(iid).send().await;
        let i = r.aws("apigateway:GetIntegration").none_if_missing()?;
        Ok(i.map(|i| fields!(i)))
    }

    /// The integration of API `api_id` with the given target (adoption).
    async fn find(&self, api_id: &str, uri: &str) -> Result<Option<Fields>, ProviderError> {
        let r = self.0.apigw.get_integrations().api_id(api_id).send().await;
        let Some(l) = r.aws("apigateway:GetIntegrations").none_if_missing()? else {
            return Ok(None);
        };
        let found = l.items().iter().find(|i| i.integration_uri() == Some(uri));
        Ok(found.cloned().map(|i| fields!(i)))
    }
}

#[async_trait]
impl ResourceProvider for IntegrationProvider {
    type Resource = Integration;

    async fn read(&self, at: Lookup<'_, Integration>) -> Found<Integration> {
        let d = at.desired;
        let (api_id, found) = match at.id {
            Some(id) => {
                let (api_id, iid) = split_id(id);
                (api_id, self.get(api_id, iid).await?)
            }
            None => {
                let api_id = d.api_id.as_str();
                (api_id, self.find(api_id, d.integration_uri.as_str()).await?)
            }
        };
        let Some((iid, itype, uri, method, pfv)) = found else {
            return Ok(None);
        };
        let iid = iid.unwrap_or_default();
        Ok(Some(Read {
            id: join_id(api_id, &iid),
            props: Integration {
                api_id: Input::Value(api_id.to_string()),
                integration_type: itype.map_or(String::new(), |t| t.as_str().to_string()),
                integration_uri: Input::Value(uri.unwrap_or_default()),
                integration_method: method.unwrap_or_else(|| d.integration_method.clone()),
                payload_format_version: pfv.unwrap_or_default(),
            },
            outputs: integ_outputs(&iid),
        }))
    }

    async fn create(&self, d: &Integration) -> Result<Created, ProviderError> {
        let r = self
            .0
            .apigw
            .create_integration()
            .api_id(d.api_id.as_str())
            .integration_type(IntegrationType::from(d.integration_type.as_str()))
            .integration_uri(d.integration_uri.as_str())
            .integration_method(&d.integration_method)
            .payload_format_version(&d.payload_format_version);
        let r = r.send().await.aws("apigateway:CreateIntegration")?;
        let iid = r.integration_id().unwrap_or_default();
        let id = join_id(d.api_id.as_str(), iid);
        Ok(Created::new(id, integ_outputs(iid)))
    }

    async fn update(
        &self,
        id: &str,
        _o: &Integration,
        d: &Integration,
    ) -> Result<Applied, ProviderError> {
        let (api_id, iid) = split_id(id);
        let r = self
            .0
            .apigw
            .update_integration()
            .api_id(api_id)
            .integration_id(iid)
            .integration_uri(d.integration_uri.as_str())
            .integration_method(&d.integration_method)
            .payload_format_version(&d.payload_format_version);
        r.send().await.aws("apigateway:UpdateIntegration")?;
        Ok(integ_outputs(iid).into())
    }

    async fn delete(&self, id: &str, _last: &Integration) -> Result<(), ProviderError> {
        let (api_id, iid) = split_id(id);
        let r = self.0.apigw.delete_integration().api_id(api_id);
        let r = r.integration_id(iid).send().await;
        r.aws("apigateway:DeleteIntegration").missing_ok()
    }
}
