//! `GET /openapi.json` describes every route the service's router has, with each method, and is
//! a valid OpenAPI 3.1 document by an independent validator (PyPI's `openapi-spec-validator`).

use super::service::{serve_with, stop};

/// Every (method, path) the router's source registers: each `.route("PATH", ...)` of the
/// service's and the console's routers, with the methods chained on it.
fn routed() -> Vec<(String, String)> {
    let dir = super::support::manifest_dir().join("src/service");
    let mut routes = Vec::new();
    for file in ["mod.rs", "console/mod.rs"] {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's text, to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &rest[..end];
            let path = call.split('"').nth(1).unwrap().to_string();
            // `routing::post(`, `.post(`, `segment::post(`: the method's name called.
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = call.match_indices(&format!("{method}(")).any(|(at, _)| {
                    !call[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                });
                if called {
                    routes.push((method.to_string(), path.clone()));
                }
            }
        }
    }
    routes
}

#[test]
fn the_route_reader_finds_the_routes_it_should() {
    let routes = routed();
    for expected in [
        ("post", "/v1/events"),
        ("post", "/v1/batch"),
        ("get", "/v1/push/{connector}"),
        ("post", "/v1/push/{connector}"),
        ("get", "/wechat/push/{connector}"),
        ("post", "/wechat/push/{connector}"),
        ("delete", "/v1/users/{id}"),
        ("get", "/metrics"),
        ("post", "/rules"),
        ("get", "/assets/console.js"),
    ] {
        assert!(
            routes
                .iter()
                .any(|(m, p)| (m.as_str(), p.as_str()) == expected),
            "{expected:?} not found in {routes:?}"
        );
    }
    assert!(routes.len() >= 38, "{} routes: {routes:?}", routes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_describes_every_route_and_is_valid_openapi_3_1() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(
        dir.path(),
        "[server]\nkeys = [{ env = 'NUDGE_TEST_KEY', scope = 'admin' }]\n",
        &[],
    );
    // Open to anyone, as the routes it lists are in the README: no key.
    let answer = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    stop(child);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut missing = Vec::new();
    for (method, path) in routed() {
        if document["paths"][&path][&method].is_null() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes of the router missing from /openapi.json (describe them in engine/src/service/openapi.rs): {missing:?}"
    );
    // Each route that needs a key says so.
    for (path, method) in [
        ("/v1/events", "post"),
        ("/v1/users/{id}", "delete"),
        ("/metrics", "get"),
    ] {
        assert!(
            document["paths"][path][method]["security"].is_array(),
            "{method} {path} has no security"
        );
    }

    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let validated = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        validated.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator==0.9.0):\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
}
