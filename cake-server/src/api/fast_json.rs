//! [`FastJson`]: a JSON response payload serialised with serde directly. poem-openapi's `Json`
//! first builds a `serde_json::Value` tree of the whole response; for the hottest route (listing
//! sessions) that tree costs more than the database query. The schema in the spec is the same
//! as `Json<T>`'s, and a test checks both produce the same JSON.

use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, payload::Payload};
use serde::Serialize;

/// A JSON response body serialised without an intermediate value tree.
pub struct FastJson<T>(pub T);

impl<T: Type + Serialize + Send> Payload for FastJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Serialize + Send> IntoResponse for FastJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder().content_type(Self::CONTENT_TYPE).body(body),
            Err(e) => {
                tracing::error!(error = %e, "response serialisation failed");
                crate::error::response(poem::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl<T: Type + Serialize + Send> ApiResponse for FastJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType { content_type: Self::CONTENT_TYPE, schema: Self::schema_ref() }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::super::dto::{ActivityDto, OwnerDto, SessionDto, SessionPage, StatusDto};
    use poem_openapi::types::ToJSON;

    #[test]
    fn serde_output_equals_poem_openapi_output() {
        let owner = OwnerDto { id: uuid::Uuid::nil(), name: "N".into(), email: "n@example.com".into() };
        let page = SessionPage {
            items: vec![SessionDto {
                id: uuid::Uuid::from_u128(7),
                title: "t \"quoted\"".into(),
                private: true,
                owner_id: owner.id,
                owner,
                status: StatusDto::Failed,
                activity: ActivityDto::Retry,
                status_reason: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                updated_at: "2026-01-01T00:00:01Z".into(),
            }],
            next_cursor: Some("1_x".into()),
        };
        let via_serde: serde_json::Value = serde_json::to_value(&page).unwrap();
        assert_eq!(via_serde, page.to_json().unwrap());
    }
}
