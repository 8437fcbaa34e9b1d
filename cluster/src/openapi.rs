//! The OpenAPI 3.1 document served at `/openapi.json`, derived by utoipa from the
//! handlers' `#[utoipa::path]` annotations (in `http.rs`) and the wire types'
//! schemas (`sentiment-api`, feature `openapi`), so it cannot drift from them. The
//! integration tests check that every served route is documented.

use sentiment_api::{ErrorBody, ErrorKind, PredictRequest, PredictResponse, Prediction};
use serde_json::Value;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sentiment-server",
        description = "DistilBERT sentiment classification with dynamic batching."
    ),
    paths(
        crate::http::predict,
        crate::http::healthz,
        crate::http::readyz,
        crate::http::metrics_text,
        crate::http::info,
        crate::http::openapi
    ),
    components(schemas(PredictRequest, PredictResponse, Prediction, ErrorBody, ErrorKind))
)]
struct ApiDoc;

pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_carries_the_api_limits_and_every_error_kind() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let request = schemas["PredictRequest"].to_string();
        assert!(
            request.contains(&format!("\"maxItems\":{}", sentiment_api::MAX_BATCH_INPUTS)),
            "{request}"
        );
        assert!(
            request.contains(&format!("\"maxLength\":{}", sentiment_api::MAX_TEXT_BYTES)),
            "{request}"
        );
        let kinds = schemas["ErrorKind"]["enum"].as_array().unwrap();
        for kind in [
            "invalid_input",
            "overloaded",
            "throttled",
            "unsupported_media_type",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
        }
        let responses = &doc["paths"]["/predict"]["post"]["responses"];
        for status in ["200", "400", "413", "415", "422", "503", "504"] {
            assert!(
                responses[status].is_object(),
                "/predict {status} undocumented"
            );
        }
        assert!(responses["200"]["headers"]["x-queue-time"].is_object());
    }
}
