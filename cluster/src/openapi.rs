//! The OpenAPI 3.1 document served at `/openapi.json`. Written by hand rather than
//! derived (utoipa and friends): six routes do not justify a proc-macro dependency, and
//! the integration tests check that every served route is documented.

use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

pub fn document() -> Value {
    let timing = |what: &str| json!({"description": format!("{what}, in milliseconds"), "schema": {"type": "string"}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sentiment-server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "DistilBERT sentiment classification with dynamic batching."
        },
        "paths": {
            "/predict": {"post": {
                "summary": "Classify one text or a list of texts",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "oneOf": [
                        {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}},
                        {"type": "object", "required": ["inputs"], "properties": {"inputs": {
                            "type": "array", "minItems": 1, "maxItems": sentiment_api::MAX_BATCH_INPUTS,
                            "items": {"type": "string", "minLength": 1}}}}
                    ]}}}},
                "responses": {
                    "200": {
                        "description": "One prediction for `text`, a list in request order for `inputs`",
                        "headers": {
                            "x-queue-time": timing("Time waiting for a batch"),
                            "x-inference-time": timing("Tokenization and forward pass of the batch"),
                            "x-total-time": timing("Time in the server")
                        },
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/Prediction"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}
                        ]}}}
                    },
                    "400": error("Body is not UTF-8 JSON"),
                    "405": error("Method other than POST"),
                    "413": error("Body over --max-body-bytes"),
                    "415": error("Content type is not application/json"),
                    "422": error("Empty text, wrong field types, or too many inputs"),
                    "500": error("Inference failed"),
                    "503": error("Queue full or model not ready; see Retry-After"),
                    "504": error("No answer within --request-timeout-ms")
                }
            }},
            "/healthz": {"get": {"summary": "The process is alive",
                "responses": {"200": json_ok("Alive", json!({"type": "object"}))}}},
            "/readyz": {"get": {"summary": "Model loaded, one forward pass succeeded, not draining",
                "responses": {"200": json_ok("Ready", json!({"type": "object"})), "503": error("Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (OpenMetrics text)",
                "responses": {"200": {"description": "Metrics",
                    "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
            "/info": {"get": {"summary": "Model, checkpoint sha256, dimensions, threads, batching settings, version",
                "responses": {"200": json_ok("Server and model description", json!({"type": "object"}))}}},
            "/openapi.json": {"get": {"summary": "This document",
                "responses": {"200": json_ok("OpenAPI 3.1 document", json!({"type": "object"}))}}}
        },
        "components": {"schemas": {
            "Prediction": {"type": "object", "required": ["label", "score"], "properties": {
                "label": {"type": "string", "examples": ["POSITIVE", "NEGATIVE"]},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "truncated": {"type": "boolean", "description": "Present and true when only the beginning of the text fit the model"}
            }},
            "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                "error": {"type": "string", "enum": [
                    "invalid_json", "invalid_input", "payload_too_large", "unsupported_media_type",
                    "not_found", "method_not_allowed", "overloaded", "not_ready", "timeout", "internal"]},
                "detail": {"type": "string"}
            }}
        }}
    })
}
