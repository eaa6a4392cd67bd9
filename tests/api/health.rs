use crate::helpers::spawn_app;

#[actix_web::test]
async fn health_and_readiness_answer_when_the_database_is_up() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["database"], true);
    assert_eq!(body["shards"], true);
}

#[actix_web::test]
async fn unknown_endpoints_answer_404_in_the_error_format() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].is_string());
}
