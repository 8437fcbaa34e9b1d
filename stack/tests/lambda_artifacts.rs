//! The Lambda's deployable artifacts against moto: a zip over 50 MB goes through a
//! content-addressed S3 object (unchanged zip: no diff; changed zip: new object,
//! UpdateFunctionCode from S3, old object removed), and the container-image package.

mod common;

use common::{Project, assert_has, clients, function, project_on_moto, write_zip};

/// Incompressible bytes (xorshift64*), so the zip really is over the limit.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

const BIG: usize = 51 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_over_50_mb_goes_through_s3() {
    let (m, p) = project_on_moto("big");
    let c = clients(&m.url).await;
    let zip = p.path("bootstrap.zip");
    write_zip(&zip, &noise(BIG, 1));
    let facts = stack::providers::aws::lambda::ZipFacts::of(zip.to_str().unwrap()).unwrap();
    assert!(facts.needs_s3());
    let key = facts.s3_key();
    assert_eq!(key, format!("lambda/{}.zip", facts.sha256_hex));

    // AWS requires a runtime and handler for a zip from S3 too (moto does not).
    let (out, sent) = p.up_following_aws_rules("big");
    let create = sent
        .iter()
        .find(|r| r.operation == "CreateFunction")
        .expect("CreateFunction sent");
    assert!(create.params["Code"]["S3Key"].is_string(), "{create:?}");
    assert_has(
        &out,
        &[
            "+ aws:s3:Bucket `lambda-artifacts`",
            "+ aws:s3:Object `lambda-zip`",
        ],
    );

    // The object is there under its content address, in the account-suffixed bucket.
    let bucket = "big-lambda-artifacts-123456789012";
    let head =
        c.s3.head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
    assert_eq!(
        head.content_length(),
        Some(std::fs::metadata(&zip).unwrap().len() as i64)
    );
    // The function's code came from that object.
    let f = function(&c, "big-predict").await;
    let conf = f.configuration().unwrap();
    assert_eq!(conf.code_sha256(), Some(facts.sha256_b64.as_str()));
    // A zip package from S3 is still a zip package: AWS requires its runtime and
    // handler.
    assert_eq!(conf.runtime().map(|r| r.as_str()), Some("provided.al2023"));
    assert_eq!(conf.handler(), Some("bootstrap"));
    assert_eq!(
        conf.code_size(),
        std::fs::metadata(&zip).unwrap().len() as i64
    );
    let loc = f.code().and_then(|c| c.location()).unwrap_or_default();
    assert!(
        loc.ends_with(&key),
        "code location {loc} is not the S3 object {key}"
    );

    // Unchanged zip: nothing to do.
    p.expect(&["diff"], 0);
    let out = p.expect(&["up", "--yes"], 0);
    assert!(!out.contains("Apply complete"), "{out}");

    // A new zip: a new object, the code updated from it, the old object gone.
    write_zip(&zip, &noise(BIG, 2));
    let facts2 = stack::providers::aws::lambda::ZipFacts::of(zip.to_str().unwrap()).unwrap();
    let out = p.expect(&["diff"], 2);
    assert_has(&out, &["~ aws:lambda:Function `lambda-function`"]);
    p.expect(&["up", "--yes"], 0);
    let f = function(&c, "big-predict").await;
    assert_eq!(
        f.configuration().unwrap().code_sha256(),
        Some(facts2.sha256_b64.as_str())
    );
    assert!(
        f.code()
            .and_then(|c| c.location())
            .unwrap_or_default()
            .ends_with(&facts2.s3_key())
    );
    assert!(
        c.s3.head_object()
            .bucket(bucket)
            .key(facts2.s3_key())
            .send()
            .await
            .is_ok()
    );
    assert!(
        c.s3.head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .is_err()
    );
    p.expect(&["diff"], 0);

    // Down removes object and bucket.
    p.expect(&["down", "--yes"], 0);
    assert!(c.s3.head_bucket().bucket(bucket).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_zip_is_uploaded_directly() {
    let (_moto, p) = project_on_moto("small");
    let out = p.expect(&["diff"], 2);
    assert!(!out.contains("aws:s3:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_from_a_container_image() {
    let (m, p) = project_on_moto("img");
    let c = clients(&m.url).await;
    // Any executable stands in for bootstrap; no zip is needed for this package.
    std::fs::remove_file(p.path("bootstrap.zip")).unwrap();
    let model = p.path("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("config.json"), b"{}").unwrap();
    p.config("img", |v| {
        v["lambda"]["package"] = "image".into();
        v["lambda"]["bootstrap"] = env!("CARGO_BIN_EXE_stack").into();
        v["lambda"]["model_dir"] = model.display().to_string().into();
    });
    let (out, sent) = p.up_following_aws_rules("img");
    assert!(
        sent.iter()
            .any(|r| r.operation == "CreateFunction" && r.param("PackageType") == Some("Image"))
    );
    assert_has(&out, &["+ oci:Image `lambda-image`"]);
    let f = function(&c, "img-predict").await;
    let conf = f.configuration().unwrap();
    assert_eq!(conf.package_type().map(|t| t.as_str()), Some("Image"));
    assert_eq!(conf.runtime(), None);
    let uri = f.code().and_then(|c| c.image_uri()).unwrap().to_string();
    let st = p.state("img");
    let digest = st["resources"]["lambda-image"]["outputs"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(uri.ends_with(&format!("/img/lambda@{digest}")), "{uri}");
    p.expect(&["diff"], 0);

    // A new model: a new image, and in the same run the function's ImageUri follows.
    std::fs::write(model.join("config.json"), b"{\"v\": 2}").unwrap();
    let out = p.expect(&["diff"], 2);
    assert_has(&out, &["~ aws:lambda:Function `lambda-function`"]);
    let out = p.expect(&["up", "--yes"], 0);
    assert_has(&out, &["2 updated"]);
    let f = function(&c, "img-predict").await;
    let uri2 = f.code().and_then(|c| c.image_uri()).unwrap().to_string();
    assert_ne!(uri, uri2);
    p.expect(&["diff"], 0);
}

#[test]
fn synth_k8s_needs_no_lambda_zip() {
    let p = Project::new("http://127.0.0.1:9", "synth");
    std::fs::remove_file(p.path("bootstrap.zip")).unwrap();
    let out = p.expect(&["synth", "--k8s"], 0);
    assert_has(
        &out,
        &[
            "kind: HorizontalPodAutoscaler",
            "stack.sentiment/metrics-source",
        ],
    );
    // Everything else still insists on it, before any API call.
    let (code, _, err) = p.run(&["diff"]);
    assert_eq!(code, 1);
    assert!(err.contains("bootstrap.zip"), "{err}");
}
