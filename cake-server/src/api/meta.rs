//! Health.

use poem::web::Data;
use poem_openapi::{OpenApi, payload::Json};

use super::ApiTags;
use super::dto::HealthBody;
use std::sync::Arc;

use crate::state::AppState;

/// `GET /api/health`.
pub struct MetaApi;

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Liveness: answers 200 while the process serves HTTP (no authentication).
    ///
    /// Load balancers probe this; `/readyz` (outside the API) also checks PostgreSQL and the runtime.
    #[oai(path = "/health", method = "get", operation_id = "get_health")]
    async fn get_health(&self, state: Data<&Arc<AppState>>) -> Json<HealthBody> {
        let _ = state;
        Json(HealthBody { status: "ok".into() })
    }
}
