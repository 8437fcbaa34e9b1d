//! A stage (`$default` with auto-deploy serves at the API's root URL).

use super::api_arn;
use crate::providers::aws::prelude::*;

/// A stage (`$default` with auto-deploy serves at the API's root URL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:apigatewayv2:Stage")]
pub struct Stage {
    /// API id.
    #[resource(replace)]
    pub api_id: Input<String>,
    /// Stage name.
    #[resource(replace, non_empty, label = "stage name")]
    pub name: String,
    /// Deploy automatically on every change.
    pub auto_deploy: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Provider for [`Stage`]; id `api|stage`.
pub struct StageProvider(pub Arc<Clients>);

impl StageProvider {
    async fn outputs(&self, api_id: &str, name: &str) -> Result<Outputs, ProviderError> {
        let r = self.0.apigw.get_api().api_id(api_id).send().await;
        let a = r.aws("apigateway:GetApi")?;
        let base = a.api_endpoint().unwrap_or_default().trim_end_matches('/');
        let url = if name == "$default" {
            format!("{base}/")
        } else {
            format!("{base}/{name}/")
        };
        Ok(obj(json!({ "name": name, "invoke_url": url })))
    }
}

#[async_trait]
impl ResourceProvider for StageProvider {
    type Resource = Stage;

    async fn read(&self, at: Lookup<'_, Stage>) -> Found<Stage> {
        let key = join_id(at.desired.api_id.as_str(), &at.desired.name);
        let (api_id, name) = split_id(at.id_or(&key));
        let r = self.0.apigw.get_stage().api_id(api_id).stage_name(name);
        let Some(s) = r
            .send()
            .await
            .aws("apigateway:GetStage")
            .none_if_missing()?
        else {
            return Ok(None);
        };
        Ok(Some(Read {
            id: join_id(api_id, name),
            props: Stage {
                api_id: Input::Value(api_id.to_string()),
                name: s.stage_name().unwrap_or(name).to_string(),
                auto_deploy: s.auto_deploy().unwrap_or(false),
                tags: crate::providers::aws::user_tags(s.tags().cloned().unwrap_or_default()),
            },
            outputs: self.outputs(api_id, name).await?,
        }))
    }

    async fn create(&self, d: &Stage) -> Result<Created, ProviderError> {
        let api_id = d.api_id.as_str();
        let r = self
            .0
            .apigw
            .create_stage()
            .api_id(api_id)
            .stage_name(&d.name)
            .auto_deploy(d.auto_deploy)
            .set_tags(Some(d.tags.clone().into_iter().collect()));
        r.send().await.aws("apigateway:CreateStage")?;
        let outputs = self.outputs(api_id, &d.name).await?;
        Ok(Created::new(join_id(api_id, &d.name), outputs))
    }

    async fn update(&self, id: &str, o: &Stage, d: &Stage) -> Result<Applied, ProviderError> {
        let (api_id, name) = split_id(id);
        if o.auto_deploy != d.auto_deploy {
            let r = self.0.apigw.update_stage().api_id(api_id).stage_name(name);
            r.auto_deploy(d.auto_deploy)
                .send()
                .await
                .aws("apigateway:UpdateStage")?;
        }
        let arn = format!("{}/stages/{name}", api_arn(&self.0, api_id));
        sync_tags(&self.0.apigw, &arn, &o.tags, &d.tags).await?;
        Ok(self.outputs(api_id, name).await?.into())
    }

    async fn delete(&self, id: &str, _last: &Stage) -> Result<(), ProviderError> {
        let (api_id, name) = split_id(id);
        let r = self.0.apigw.delete_stage().api_id(api_id).stage_name(name);
        r.send().await.aws("apigateway:DeleteStage").missing_ok()
    }
}
