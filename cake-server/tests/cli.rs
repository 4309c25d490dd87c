//! The binary's contract: `cake serve --help` documents every setting, and the committed
//! `openapi.json` is exactly what the code generates.

use std::process::Command;

fn cake(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cake")).args(args).output().expect("run cake");
    assert!(out.status.success(), "cake {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn serve_help_documents_every_setting() {
    let help = cake(&["serve", "--help"]);
    for var in [
        "CAKE_LISTEN",
        "CAKE_PUBLIC_URL",
        "CAKE_DATA_DIR",
        "DATABASE_URL",
        "CAKE_DATABASE_MAX_CONNECTIONS",
        "CAKE_RUNTIME",
        "CAKE_OPENCODE_BIN",
        "CAKE_OPENCODE_START_TIMEOUT",
        "PGHOST",
        "CAKE_SESSION_NAMESPACE",
        "CAKE_DATA_PLANE_IMAGE",
        "CAKE_DATA_PLANE_INIT_IMAGE",
        "CAKE_DATA_PLANE_IMAGE_PULL_POLICY",
        "CAKE_DATA_PLANE_SERVICE_ACCOUNT",
        "CAKE_DATA_PLANE_RESOURCES",
        "CAKE_DATA_PLANE_NODE_SELECTOR",
        "CAKE_DATA_PLANE_TOLERATIONS",
        "CAKE_DATA_PLANE_IMAGE_PULL_SECRETS",
        "CAKE_DATA_PLANE_START_TIMEOUT",
        "CAKE_INSTANCE",
        "CAKE_RECONCILE_INTERVAL",
        "CAKE_KUBE_API_URL",
        "BETTER_AUTH_SECRET",
        "CAKE_ADMIN_EMAILS",
        "CAKE_EMAIL_AND_PASSWORD_ENABLED",
        "CAKE_EVENT_BUFFER",
        "CAKE_LOG",
        "CAKE_LOG_JSON",
        "CAKE_INTERNAL_EMAIL_DOMAINS",
        "CAKE_SESSION_MAX_AGE",
        "CAKE_SESSION_UPDATE_AGE",
        "CAKE_SIGN_IN_LIMIT_PER_ACCOUNT",
        "CAKE_SIGN_IN_LIMIT_PER_IP",
        "CAKE_TRUSTED_ORIGINS",
        // Seed 002, exactly.
        "CAKE_HEADER_AUTH_ENABLED",
        "CAKE_HEADER_AUTH_EMAIL_HEADER",
        "CAKE_HEADER_AUTH_EMAIL_CLAIM",
        "CAKE_HEADER_AUTH_JWT_HEADER",
        "CAKE_HEADER_AUTH_USER",
        "CAKE_HEADER_AUTH_USER_CLAIM",
        "CAKE_HEADER_AUTH_TRUSTED_PROXIES",
        "CAKE_HEADER_AUTH_JWKS_URL",
        "CAKE_HEADER_AUTH_JWT_ISSUER",
        "CAKE_HEADER_AUTH_JWT_AUDIENCE",
        "CAKE_TRUSTED_PROXIES",
        "CAKE_PATH_PREFIX",
        "CAKE_OIDC_ENABLED",
        "CAKE_OIDC_PROVIDER_ID",
        "CAKE_OIDC_ISSUER",
        "CAKE_OIDC_CLIENT_ID",
        "CAKE_OIDC_CLIENT_SECRET",
        "CAKE_OIDC_SCOPES",
    ] {
        assert!(help.contains(&format!("[env: {var}")), "`cake serve --help` does not document {var}");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    for line in help.lines().filter_map(|l| l.trim().strip_prefix("[env: ")) {
        let var = line.trim_end_matches(']').split('=').next().unwrap_or_default();
        assert!(readme.contains(var), "README.md does not document {var}");
    }
}

#[test]
fn committed_openapi_json_matches_the_code() {
    let generated = cake(&["openapi"]);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json")).expect("openapi.json");
    assert!(
        generated == committed,
        "openapi.json is out of date: regenerate it with `cargo run -p cake-server -- openapi > openapi.json`"
    );
}
