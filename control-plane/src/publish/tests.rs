//! Publishing lost in a crash, on a real board with a manual clock: a done ticket whose push
//! was never asked for is asked for two minutes later, then again every two minutes up to
//! three times, and never again once the host answered (here: the push failed, a reason
//! for a person).
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::board::{Decider, Finished};
use crate::domain::to_worker::ToWorker;
use crate::domain::{AttemptOutcome, Evidence, Project};
use crate::testkit::kit;

const TWO_MIN: Duration = Duration::from_secs(120);

fn pushes(rx: &mut tokio::sync::mpsc::Receiver<ToWorker>) -> Vec<i64> {
    let mut v = Vec::new();
    while let Ok(m) = rx.try_recv() {
        if let ToWorker::Push { ticket_id, .. } = m {
            v.push(ticket_id);
        }
    }
    v
}

#[tokio::test]
async fn a_lost_push_is_asked_again_two_minutes_apart_three_times_and_not_after_an_answer() {
    let k = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ghp_test\n").unwrap();
    let gh = Arc::new(
        Github::new(&crate::github::GithubConfig {
            api_url: "http://127.0.0.1:9".into(),
            token_file: token,
            ..Default::default()
        })
        .unwrap(),
    );
    let base = k.board.project("web").await.unwrap();
    k.board
        .add_project(Project {
            slug: "site".into(),
            github_repo: "acme/site".into(),
            default_workflow: "solo".into(),
            ..base
        })
        .await
        .unwrap();
    let mut rx = k.worker("w1", "h1", 1, &["site"]);
    let t = k.ticket_in("site", "publish me").await;
    // The ticket runs and is verified done on w1's host; the effect that would have asked
    // for the push died with its replica (no reactor runs here).
    let c = k.claim("w1", "site", Duration::from_secs(30)).await;
    let f = k.start(&c, "w1", Duration::from_secs(60)).await;
    k.board
        .attempt_finished(
            t.id,
            f,
            "worker/w1",
            Finished {
                outcome: AttemptOutcome::Exited,
                reason: "exited 0".into(),
                evidence: Some(Evidence {
                    commits: 1,
                    branch_commits: 1,
                    done_claimed: true,
                    done_summary: "done".into(),
                    runtime_identity: "sim@h1".into(),
                    ..Evidence::default()
                }),
                reset_at: None,
            },
        )
        .await
        .unwrap();
    let decider = Decider::new(k.board.clone(), None, TWO_MIN, crate::brain::record_input);
    let done = decider.decide(t.id).await.unwrap().unwrap();
    assert_eq!(done.state, State::Done, "{}", done.state_reason);

    let retry = || retry_lost(&k.board, &k.workers, &gh);
    assert_eq!(
        retry().await.unwrap(),
        0,
        "the effect may still be on its way"
    );
    let mut asked = Vec::new();
    for round in 1..=3 {
        k.advance(TWO_MIN);
        assert_eq!(retry().await.unwrap(), 1, "ask {round}");
        asked.extend(pushes(&mut rx));
        assert_eq!(retry().await.unwrap(), 0, "not again within two minutes");
    }
    assert_eq!(asked, [t.id, t.id, t.id]);
    k.advance(TWO_MIN);
    assert_eq!(retry().await.unwrap(), 0, "three asks, then a person looks");

    // Another round after a reopening would start afresh; an answer ends it: a failed push
    // is a reason to read, not to ask again.
    pushed(
        &k.board,
        &gh,
        "w1",
        Pushed {
            ticket_id: t.id,
            branch: done.branch.clone(),
            head_sha: String::new(),
            error: "remote: Permission denied".into(),
        },
    )
    .await
    .unwrap();
    k.advance(TWO_MIN * 10);
    assert_eq!(retry().await.unwrap(), 0);
    assert!(pushes(&mut rx).is_empty());
    let h = k
        .board
        .store()
        .events_after(
            0,
            &crate::store::EventFilter {
                ticket_id: Some(t.id),
                project: None,
            },
            100,
        )
        .await
        .unwrap();
    let published: Vec<&str> = h
        .iter()
        .filter(|e| e.kind == EventKind::Published)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        published
            .iter()
            .filter(|m| m.starts_with("asked w1 to push"))
            .count(),
        3,
        "{published:?}"
    );
    assert!(
        published
            .last()
            .unwrap()
            .starts_with("push failed on w1: remote: Permission denied"),
        "{published:?}"
    );
}
