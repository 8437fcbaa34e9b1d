//! Lambda functions and resource-based permissions.

mod function;
mod permission;

pub use function::{Code, DIRECT_UPLOAD_MAX, Function, FunctionProvider, ZipFacts, b64};
pub use permission::{Permission, PermissionProvider};

// Lambda tags by function ARN.
super::map_tagging!(
    aws_sdk_lambda::Client,
    "lambda",
    resource,
    list_tags,
    "ListTags"
);
