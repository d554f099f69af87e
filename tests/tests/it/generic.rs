//! The engine is generic: a bundle of another domain runs through the same API
//! with no Rust change, and a runaway rule fails only its own command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::{TestApp, fixture};
use serde_json::json;
use std::time::Instant;

fn library() -> TestApp {
    let dir = fixture("library");
    TestApp::start(&dir, Some(&dir), tempfile::tempdir().unwrap())
}

#[tokio::test]
async fn a_library_loan_runs_end_to_end() {
    let mut app = library();
    let bad = app.start_instance("loan", "ada", json!({"isbn": "12"})).await.expect(422);
    assert_eq!(bad["details"][0]["field"], "isbn");
    let loan = app.start_instance("loan", "ada", json!({"isbn": "9780262033848"})).await.expect(201);
    assert_eq!(loan["assignment"]["team"], "front_desk");
    assert_eq!(loan["data"]["weeks"], 2);
    let id = loan["id"].as_str().unwrap().to_string();
    app.transition(&id, "lend", "ada", json!({})).await.expect(403);
    let lent = app.transition(&id, "lend", "bob", json!({})).await.expect(200);
    assert_eq!(lent["data"]["due"], "2026-12-09T01:00:00Z");
    app.clock.advance(jiff::SignedDuration::from_hours(24 * 15));
    let damaged = app.transition(&id, "give_back", "ada", json!({"condition": "damaged"})).await.expect(422);
    assert_eq!(damaged["details"][0]["field"], "damage");
    let done = app.transition(&id, "give_back", "ada", json!({"condition": "damaged", "damage": "coffee stain"})).await.expect(200);
    assert_eq!((done["state"].as_str(), done["data"]["late"].as_bool()), (Some("returned"), Some(true)));
}

#[tokio::test]
async fn a_runaway_rule_fails_one_command_quickly_and_the_rest_keep_working() {
    let mut app = library();
    let a = app.start_instance("loan", "ada", json!({"isbn": "9780262033848"})).await.expect(201);
    let b = app.start_instance("loan", "ada", json!({"isbn": "9780131103627"})).await.expect(201);
    for loan in [&a, &b] {
        app.transition(loan["id"].as_str().unwrap(), "lend", "bob", json!({})).await.expect(200);
    }
    let started = Instant::now();
    let err = app.transition(a["id"].as_str().unwrap(), "give_back", "ada", json!({"condition": "good", "spin": true})).await.expect(422);
    assert!(started.elapsed().as_millis() < 1000, "took {:?}", started.elapsed());
    assert_eq!(err["code"], "rule_failed");
    assert!(err["message"].as_str().unwrap().contains("lateness"), "{err}");
    assert_eq!(err["details"][0]["file"], "rules/lateness.rhai");
    assert_eq!(err["details"][0]["line"], 3);
    assert_eq!(err["details"][0]["kind"], "limit");
    let view = app.get(&format!("/api/v1/instances/{}", a["id"].as_str().unwrap()), "ada").await.expect(200);
    assert_eq!((view["state"].as_str(), view["version"].as_u64()), (Some("lent"), Some(2)), "the failed command changed nothing");
    app.transition(b["id"].as_str().unwrap(), "give_back", "ada", json!({"condition": "good"})).await.expect(200);
}
