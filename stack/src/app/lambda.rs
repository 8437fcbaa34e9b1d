//! The Lambda side: execution role, log group, the function (zip, S3 object or image)
//! and the HTTP API in front of it (`POST /predict`, `$default` stage).

use std::collections::BTreeMap;

use crate::artifacts::image::ServerImage;
use crate::config::Config;
use crate::engine::{Handle, Stack, UNKNOWN};
use crate::providers::aws::{apigw, ecr, iam, lambda, logs, s3};

use super::{BuildOptions, managed_policy};

const LAMBDA_BASIC: &str = "service-role/AWSLambdaBasicExecutionRole";

/// What the rest of the stack uses of the Lambda side.
pub struct Lambda {
    /// The function.
    pub function: Handle<lambda::Function>,
    /// The API's `$default` stage (its invoke URL is the stack's `api_url`).
    pub stage: Handle<apigw::Stage>,
}

/// Declares the function behind its HTTP API; images go to `repo`.
pub fn declare(
    s: &mut Stack,
    cfg: &Config,
    opts: BuildOptions,
    repo: &Handle<ecr::Repository>,
) -> Lambda {
    let p = &cfg.prefix;
    let lambda_role = s.add(
        "lambda-role",
        iam::Role::for_service(format!("{p}-lambda-exec"), "lambda.amazonaws.com"),
    );
    s.add(
        "lambda-role-basic",
        iam::RolePolicyAttachment {
            role: lambda_role.output("name").into(),
            policy_arn: managed_policy(&cfg.region, LAMBDA_BASIC),
        },
    );
    let fn_name = format!("{p}-predict");
    let log_group = s.add(
        "lambda-logs",
        logs::LogGroup {
            name: format!("/aws/lambda/{fn_name}"),
            retention_days: cfg.log_retention_days,
            tags: Default::default(),
        },
    );
    let code = code(s, cfg, opts, repo);
    let mut f = lambda::Function::new(fn_name, lambda_role.output::<String>("arn"), code);
    f.memory_mb = cfg.lambda.memory_mb;
    f.timeout_s = cfg.lambda.timeout_s;
    f.architecture = cfg.lambda.architecture.clone();
    f.env = cfg.lambda.env.clone();
    let function = s.add("lambda-function", f);
    // The log group must exist first so Lambda does not create it without retention.
    s.depends_on(&function, &log_group);

    let http = s.add(
        "http-api",
        apigw::Api {
            name: format!("{p}-http"),
            protocol_type: "HTTP".into(),
            tags: Default::default(),
        },
    );
    let integration = s.add(
        "http-integration",
        apigw::Integration {
            api_id: http.output("id").into(),
            integration_type: "AWS_PROXY".into(),
            integration_uri: function.output("arn").into(),
            integration_method: "POST".into(),
            payload_format_version: "2.0".into(),
        },
    );
    s.add(
        "http-route-predict",
        apigw::Route {
            api_id: http.output("id").into(),
            route_key: "POST /predict".into(),
            target: integration.output("target").into(),
        },
    );
    let stage = s.add(
        "http-stage",
        apigw::Stage {
            api_id: http.output("id").into(),
            name: "$default".into(),
            auto_deploy: true,
            tags: Default::default(),
        },
    );
    // Source ARN: any stage, POST /predict (the execution ARN is account-qualified).
    let perm = lambda::Permission {
        function: function.output("name").into(),
        statement_id: "allow-apigateway-invoke".into(),
        action: "lambda:InvokeFunction".into(),
        principal: "apigateway.amazonaws.com".into(),
        source_arn: http.output("every_route_arn").into(),
    };
    s.add("lambda-permission-apigw", perm);

    Lambda { function, stage }
}

/// The Lambda function's code: an existing image, an image built from `bootstrap`, or
/// the zip, directly or (over 50 MB) through a content-addressed S3 object.
fn code(
    s: &mut Stack,
    cfg: &Config,
    opts: BuildOptions,
    repo: &Handle<ecr::Repository>,
) -> lambda::Code {
    let lc = &cfg.lambda;
    if let Some(uri) = &lc.image_uri {
        return lambda::Code::Image {
            uri: uri.clone().into(),
        };
    }
    match lc.package.as_str() {
        "image" => {
            let img = ServerImage::lambda(
                repo.output("url").into(),
                &lc.bootstrap,
                lc.model_dir.as_deref(),
                BTreeMap::new(),
            );
            match img {
                Ok(img) => {
                    let img = s.add("lambda-image", img.on_base(lc.base_image.clone()));
                    lambda::Code::Image {
                        uri: img.output::<String>("uri").into(),
                    }
                }
                Err(e) => {
                    if opts.artifacts {
                        s.invalid(format!(
                            "{e} (build it first with `cargo lambda build --release -p sentiment-lambda`, or set lambda.bootstrap)"
                        ));
                    }
                    lambda::Code::Image {
                        uri: UNKNOWN.to_string().into(),
                    }
                }
            }
        }
        "zip" => match lambda::ZipFacts::of(&lc.zip_path) {
            Ok(z) if z.needs_s3() => {
                let p = &cfg.prefix;
                let bucket = s.add(
                    "lambda-artifacts",
                    s3::Bucket {
                        name: lc
                            .s3_bucket
                            .clone()
                            .unwrap_or_else(|| format!("{p}-lambda-artifacts")),
                        account_suffix: true,
                        tags: Default::default(),
                    },
                );
                let object = s.add(
                    "lambda-zip",
                    s3::Object {
                        bucket: bucket.output("name").into(),
                        key: z.s3_key(),
                        source: lc.zip_path.clone(),
                        sha256: z.sha256_b64.clone(),
                    },
                );
                lambda::Code::S3 {
                    bucket: object.output("bucket").into(),
                    key: object.output("key").into(),
                    sha256: z.sha256_b64,
                }
            }
            Ok(z) => lambda::Code::Zip {
                path: lc.zip_path.clone(),
                sha256: z.sha256_b64,
            },
            Err(e) => {
                if opts.artifacts {
                    s.invalid(format!(
                        "{e} (build it first, or set lambda.zip_path / lambda.image_uri in the config)"
                    ));
                }
                lambda::Code::Zip {
                    path: lc.zip_path.clone(),
                    sha256: String::new(),
                }
            }
        },
        other => {
            s.invalid(format!("lambda.package `{other}` must be zip or image"));
            lambda::Code::Zip {
                path: lc.zip_path.clone(),
                sha256: String::new(),
            }
        }
    }
}
