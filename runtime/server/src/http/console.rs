//! The web console at `/`: the files of `runtime/console`'s Vite build,
//! embedded at build time (see `build.rs`), or a page saying how to build
//! them when this binary was built without the console.
//!
//! The files hold no data and need no token: the page asks for the token
//! (when the server has one) and calls the same `/v1` API as every other
//! client. Nothing here is an API route, so none is in the OpenAPI
//! document.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiError, Plane};

/// `(path relative to the build directory, bytes)` of every built file;
/// empty when the console was not built.
static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Only same-origin scripts, styles, images and calls: the console loads
/// nothing from outside the server. Inline styles are allowed for the
/// chart library's positioning.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Served at `/` when this binary has no console.
const PLACEHOLDER: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weir: console not built</title></head>
<body data-weir-placeholder>
<h1>Weir</h1>
<p>This <code>weir</code> binary was built without its web console.
Build it with <code>cargo xtask console</code> (needs Node.js and npm), then
build <code>weir</code> again: the console is embedded at build time.</p>
<p>The API answers meanwhile: <a href=\"/v1/openapi.json\">/v1/openapi.json</a>,
<a href=\"/healthz\">/healthz</a>.</p>
</body></html>
";

/// Whether this binary carries the built console.
pub fn console_built() -> bool {
    !ASSETS.is_empty()
}

/// `GET /` and `GET /assets/{file}`.
pub(super) fn routes() -> Router<Plane> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

fn find(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn file(path: &str, bytes: &'static [u8], cache: &'static str) -> Response {
    let mut res = bytes.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `GET /`: the console's page (always revalidated: it names the current
/// bundle), or the placeholder.
async fn index() -> Response {
    match find("index.html") {
        Some(bytes) => file("index.html", bytes, "no-cache"),
        None => file("index.html", PLACEHOLDER.as_bytes(), "no-cache"),
    }
}

/// `GET /assets/{file}`: a bundle file; their names carry a content hash,
/// so they are cached for good.
async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let path = format!("assets/{name}");
    match find(&path) {
        Some(bytes) => Ok(file(&path, bytes, "public, max-age=31536000, immutable")),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "the console has no file `{path}`: reload the page (the server may have been upgraded)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let dir = tempfile::tempdir().unwrap();
        let plane = crate::ControlPlane::open(crate::ServerConfig {
            data_dir: dir.path().to_path_buf(),
            token: Some("secret".into()),
            ..crate::ServerConfig::default()
        })
        .unwrap();
        let res = super::super::router(plane)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_page_needs_no_token_and_loads_nothing_from_elsewhere() {
        let (status, headers, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        if console_built() {
            assert!(!body.contains("data-weir-placeholder"), "{body}");
            assert!(body.contains("/assets/"), "{body}");
        } else {
            assert!(body.contains("cargo xtask console"), "{body}");
        }
    }

    #[tokio::test]
    async fn every_embedded_asset_is_served_and_others_are_json_404s() {
        for (path, bytes) in ASSETS.iter().filter(|(p, _)| p.starts_with("assets/")) {
            let (status, headers, body) = get(&format!("/{path}")).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body.len(), bytes.len(), "{path}");
            assert!(
                headers[header::CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
        }
        let (status, _, body) = get("/assets/nothing-here.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"not_found\""), "{body}");
        let (status, _, _) = get("/assets/..%2Fbuild.rs").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
