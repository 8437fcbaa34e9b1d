//! A statement in a function's resource policy.

use crate::providers::aws::prelude::*;
use serde_json::Value;

/// A statement in a function's resource policy (e.g. letting API Gateway invoke it).
/// Every property forces replacement: a statement cannot be changed in place.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Resource)]
#[resource(kind = "aws:lambda:Permission")]
pub struct Permission {
    /// Function name.
    #[resource(replace)]
    pub function: Input<String>,
    /// Statement id.
    #[resource(replace, word(Charset::WORD))]
    pub statement_id: String,
    /// Action, e.g. `lambda:InvokeFunction`.
    #[resource(replace)]
    pub action: String,
    /// Service principal, e.g. `apigateway.amazonaws.com`.
    #[resource(replace)]
    pub principal: String,
    /// Source ARN condition.
    #[resource(replace)]
    pub source_arn: Input<String>,
}

/// Provider for [`Permission`]; its id is `function|statement_id`.
pub struct PermissionProvider(pub Arc<Clients>);

#[async_trait]
impl ResourceProvider for PermissionProvider {
    type Resource = Permission;

    async fn read(&self, at: Lookup<'_, Permission>) -> Found<Permission> {
        let key = join_id(at.desired.function.as_str(), &at.desired.statement_id);
        let (function, sid) = at.id_or(&key).split_once('|').unwrap_or((&key, ""));
        let r = self
            .0
            .lambda
            .get_policy()
            .function_name(function)
            .send()
            .await;
        let Some(r) = r.aws("lambda:GetPolicy").none_if_missing()? else {
            return Ok(None);
        };
        let policy: Value = serde_json::from_str(r.policy().unwrap_or("{}")).unwrap_or(Value::Null);
        let stmts = policy.get("Statement").and_then(Value::as_array);
        let Some(s) = stmts
            .into_iter()
            .flatten()
            .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
        else {
            return Ok(None);
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let principal = s
            .pointer("/Principal/Service")
            .or_else(|| s.get("Principal"));
        Ok(Some(Read {
            id: join_id(function, sid),
            props: Permission {
                function: Input::Value(function.to_string()),
                statement_id: sid.to_string(),
                action: text(s.get("Action")),
                principal: text(principal),
                source_arn: Input::Value(text(s.pointer("/Condition/ArnLike/AWS:SourceArn"))),
            },
            outputs: Outputs::new(),
        }))
    }

    async fn create(&self, d: &Permission) -> Result<Created, ProviderError> {
        let r = self
            .0
            .lambda
            .add_permission()
            .function_name(d.function.as_str())
            .statement_id(&d.statement_id)
            .action(&d.action)
            .principal(&d.principal)
            .source_arn(d.source_arn.as_str());
        r.send().await.aws("lambda:AddPermission")?;
        let id = join_id(d.function.as_str(), &d.statement_id);
        Ok(Created::new(id, Outputs::new()))
    }

    // Every property forces replacement: the default `update` (nothing to change in
    // place) serves.

    async fn delete(&self, id: &str, _last: &Permission) -> Result<(), ProviderError> {
        let (function, sid) = split_id(id);
        let r = self.0.lambda.remove_permission().function_name(function);
        let r = r.statement_id(sid).send().await;
        r.aws("lambda:RemovePermission").missing_ok()
    }
}
