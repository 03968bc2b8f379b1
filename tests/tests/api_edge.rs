//! The operator API's edge: every bad request gets the right gRPC code and a message naming
//! the field, and writes nothing; every caller is identified by its certificate and role.

use futures::StreamExt;
use mc_common::identity::Role;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use tonic::Code;

/// How long a live event may take to arrive on a loaded machine.
const T: std::time::Duration = std::time::Duration::from_secs(60);

async fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{needle}: {}", s.message());
            assert!(
                s.message().contains(needle),
                "message {:?} should mention {needle:?}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_create_requests_are_refused_and_write_nothing() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let mut c = cp.tickets().await;
    let before = cp.event_count().await;

    let cases: Vec<(pb::CreateTicketRequest, Code, &str)> = vec![
        (
            create("web", ""),
            Code::InvalidArgument,
            "title: must not be empty",
        ),
        (
            create("web", "   "),
            Code::InvalidArgument,
            "title: must not be empty",
        ),
        (
            create("web", &"x".repeat(201)),
            Code::InvalidArgument,
            "title: is 201 bytes",
        ),
        (
            create("web", "two\nlines"),
            Code::InvalidArgument,
            "title: must be a single line",
        ),
        (
            create("web", "bell\u{7}"),
            Code::InvalidArgument,
            "title: contains the control character",
        ),
        (
            create("web", "fake row\roverwritten"),
            Code::InvalidArgument,
            "title: contains the control character U+000D",
        ),
        (
            pb::CreateTicketRequest {
                body: "b".repeat(70 * 1024),
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "body: is 71680 bytes, the limit is 65536",
        ),
        (
            create("", "t"),
            Code::InvalidArgument,
            "project: must not be empty",
        ),
        (
            create("Web!", "t"),
            Code::InvalidArgument,
            "project: \"Web!\" is not a slug",
        ),
        (
            create("nope", "t"),
            Code::NotFound,
            "project nope not found",
        ),
        (
            pb::CreateTicketRequest {
                budget_usd: -1.0,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "budget_usd: must not be negative",
        ),
        (
            pb::CreateTicketRequest {
                budget_usd: 1e12,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "budget_usd: 1000000000000 exceeds the maximum of 10",
        ),
        (
            pb::CreateTicketRequest {
                budget_usd: f64::NAN,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "budget_usd: must be a finite number",
        ),
        (
            pb::CreateTicketRequest {
                priority: 5000,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "priority: must be between",
        ),
        (
            pb::CreateTicketRequest {
                priority: i32::MIN,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "priority: must be between -1000 and 1000, got -2147483648",
        ),
        (
            pb::CreateTicketRequest {
                source: 77,
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "source: unknown ticket source 77",
        ),
        (
            pb::CreateTicketRequest {
                labels: vec!["ok".into(), "Not OK".into()],
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "labels[1]: \"Not OK\" is not a label",
        ),
        (
            pb::CreateTicketRequest {
                labels: (0..21).map(|i| format!("l{i}")).collect(),
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "labels: 21 labels, the limit is 20",
        ),
        (
            pb::CreateTicketRequest {
                depends_on: vec![-4],
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "depends_on[0]: must be a positive id",
        ),
        (
            pb::CreateTicketRequest {
                depends_on: vec![12345],
                ..create("web", "t")
            },
            Code::NotFound,
            "ticket 12345 (in depends_on)",
        ),
        (
            pb::CreateTicketRequest {
                workflow: "waterfall".into(),
                ..create("web", "t")
            },
            Code::InvalidArgument,
            "workflow: unknown workflow \"waterfall\"",
        ),
    ];
    for (req, code, needle) in cases {
        expect_code(c.create_ticket(req).await, code, needle).await;
    }
    assert_eq!(
        cp.event_count().await,
        before,
        "no refused request wrote anything"
    );
    let all = c
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.tickets.is_empty());
}

/// A CreateTicketRequest whose title holds raw bytes: the same wire format, but free to
/// carry invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCreate {
    #[prost(string, tag = "1")]
    project: String,
    #[prost(bytes = "vec", tag = "2")]
    title: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_invalid_argument_naming_the_field() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let before = cp.event_count().await;
    let mut grpc = tonic::client::Grpc::new(cp.channel(Role::Operator, "alice").await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/mc.v1.TicketService/CreateTicket");
    let req = RawCreate {
        project: "web".into(),
        title: vec![b'o', b'k', 0xff, 0xfe],
    };
    let res: Result<tonic::Response<pb::CreateTicketResponse>, _> = grpc
        .unary(
            tonic::Request::new(req),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await;
    expect_code(res, Code::InvalidArgument, "CreateTicketRequest.title").await;
    assert_eq!(cp.event_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_enums_transitions_and_paging() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "first"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    expect_code(
        c.get_ticket(pb::GetTicketRequest { ticket_id: 0 }).await,
        Code::InvalidArgument,
        "ticket_id: must be a positive id",
    )
    .await;
    expect_code(
        c.get_ticket(pb::GetTicketRequest { ticket_id: 999 }).await,
        Code::NotFound,
        "ticket 999 not found",
    )
    .await;
    expect_code(
        c.list_tickets(pb::ListTicketsRequest {
            states: vec![1, 99],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "states[1]: unknown ticket state 99",
    )
    .await;
    expect_code(
        c.list_tickets(pb::ListTicketsRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_size: must be between 0 and 500",
    )
    .await;
    expect_code(
        c.list_tickets(pb::ListTicketsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_token",
    )
    .await;
    expect_code(
        c.retry_ticket(pb::RetryTicketRequest { ticket_id: t.id })
            .await,
        Code::FailedPrecondition,
        "cannot retry a ticket that is queued",
    )
    .await;
    expect_code(
        c.answer_ticket(pb::AnswerTicketRequest {
            ticket_id: t.id,
            text: "yes".into(),
        })
        .await,
        Code::FailedPrecondition,
        "is queued, not waiting for an answer",
    )
    .await;
    expect_code(
        c.answer_ticket(pb::AnswerTicketRequest {
            ticket_id: t.id,
            text: "".into(),
        })
        .await,
        Code::InvalidArgument,
        "text: must not be empty",
    )
    .await;
    expect_code(
        c.resolve_escalation(pb::ResolveEscalationRequest {
            ticket_id: t.id,
            decision: 42,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "decision: unknown decision 42",
    )
    .await;
    expect_code(
        c.resolve_escalation(pb::ResolveEscalationRequest {
            ticket_id: t.id,
            decision: pb::DecisionKind::Advance as i32,
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "is queued, not escalated",
    )
    .await;

    let cancelled = c
        .cancel_ticket(pb::CancelTicketRequest {
            ticket_id: t.id,
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(cancelled.state, pb::TicketState::Cancelled as i32);
    assert!(cancelled.state_reason.contains("not needed"));
    let before = cp.event_count().await;
    expect_code(
        c.cancel_ticket(pb::CancelTicketRequest {
            ticket_id: t.id,
            reason: String::new(),
        })
        .await,
        Code::FailedPrecondition,
        "cannot cancel a ticket that is cancelled",
    )
    .await;
    assert_eq!(
        cp.event_count().await,
        before,
        "a forbidden transition writes nothing"
    );
    let retried = c
        .retry_ticket(pb::RetryTicketRequest { ticket_id: t.id })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(retried.state, pb::TicketState::Queued as i32);

    // Paging and filters.
    for i in 0..4 {
        let mut r = create("web", &format!("t{i}"));
        r.labels = if i % 2 == 0 {
            vec!["even".into()]
        } else {
            vec![]
        };
        c.create_ticket(r).await.unwrap();
    }
    let p1 = c
        .list_tickets(pb::ListTicketsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.tickets.len(), 2);
    assert!(!p1.next_page_token.is_empty());
    let p2 = c
        .list_tickets(pb::ListTicketsRequest {
            page_size: 2,
            page_token: p1.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p3 = c
        .list_tickets(pb::ListTicketsRequest {
            page_size: 2,
            page_token: p2.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p3.tickets.len(), 1);
    assert!(p3.next_page_token.is_empty());
    let even = c
        .list_tickets(pb::ListTicketsRequest {
            label: "even".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        even.tickets
            .iter()
            .map(|t| t.title.as_str())
            .collect::<Vec<_>>(),
        ["t0", "t2"]
    );

    // Idempotent create.
    let key = pb::CreateTicketRequest {
        idempotency_key: "chat-7".into(),
        ..create("web", "once")
    };
    let a = c
        .create_ticket(key.clone())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let b = c
        .create_ticket(key)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(a.id, b.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_validate_and_refuse_removal_with_open_tickets() {
    let cp = TestCp::start(Backend::Sqlite).await;
    let mut p = cp.projects().await;
    let add = |proj: pb::Project| pb::AddProjectRequest {
        project: Some(proj),
    };
    expect_code(
        p.add_project(pb::AddProjectRequest { project: None }).await,
        Code::InvalidArgument,
        "project: is required",
    )
    .await;
    expect_code(
        p.add_project(add(pb::Project {
            slug: "a b".into(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "project.slug",
    )
    .await;
    expect_code(
        p.add_project(add(pb::Project {
            slug: "web".into(),
            default_workflow: "nope".into(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "project.default_workflow: unknown workflow \"nope\"",
    )
    .await;
    expect_code(
        p.add_project(add(pb::Project {
            slug: "web".into(),
            github_repo: "no-slash".into(),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "project.github_repo",
    )
    .await;
    expect_code(
        p.add_project(add(pb::Project {
            slug: "web".into(),
            acceptance: vec![pb::AcceptanceGate {
                lane: 99,
                commands: vec!["true".into()],
            }],
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "project.acceptance[0].lane: unknown lane 99",
    )
    .await;
    let mut env = std::collections::HashMap::new();
    env.insert("lower".to_string(), "x".to_string());
    expect_code(
        p.add_project(add(pb::Project {
            slug: "web".into(),
            env,
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        "project.env.lower",
    )
    .await;
    assert!(
        p.list_projects(pb::ListProjectsRequest {})
            .await
            .unwrap()
            .into_inner()
            .projects
            .is_empty()
    );

    cp.add_project("web", "dev_review_qa").await;
    expect_code(
        p.add_project(add(pb::Project {
            slug: "web".into(),
            ..Default::default()
        }))
        .await,
        Code::AlreadyExists,
        "project web already exists",
    )
    .await;
    let mut c = cp.tickets().await;
    let t = c
        .create_ticket(create("web", "open"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(t.workflow, "dev_review_qa");
    expect_code(
        p.remove_project(pb::RemoveProjectRequest { slug: "web".into() })
            .await,
        Code::FailedPrecondition,
        "1 unfinished ticket",
    )
    .await;
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: t.id,
        reason: String::new(),
    })
    .await
    .unwrap();
    p.remove_project(pb::RemoveProjectRequest { slug: "web".into() })
        .await
        .unwrap();
    expect_code(
        p.get_project(pb::GetProjectRequest { slug: "web".into() })
            .await,
        Code::NotFound,
        "project web",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_identified_by_certificate_and_role() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let before = cp.event_count().await;

    // No certificate at all.
    let ca_only = mc_common::tls::TlsMaterial {
        cert_pem: Vec::new(),
        key_pem: Vec::new(),
        ..cp.pki.material(Role::Operator, "alice")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(cp.url())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca_only.ca_pem))
                .domain_name("localhost"),
        )
        .unwrap();
    let mut anon =
        pb::ticket_service_client::TicketServiceClient::new(endpoint.connect().await.unwrap());
    expect_code(
        anon.create_ticket(create("web", "x")).await,
        Code::Unauthenticated,
        "no client certificate presented",
    )
    .await;

    // A certificate from another CA.
    let foreign = cp
        .channel_with(&cp.pki.foreign(Role::Operator, "mallory"))
        .await;
    let mut c = pb::ticket_service_client::TicketServiceClient::new(foreign);
    expect_code(
        c.create_ticket(create("web", "x")).await,
        Code::Unauthenticated,
        "not signed by this installation's CA",
    )
    .await;

    // An expired certificate.
    let expired = cp
        .channel_with(&cp.pki.expired(Role::Operator, "bob"))
        .await;
    let mut c = pb::ticket_service_client::TicketServiceClient::new(expired);
    expect_code(
        c.create_ticket(create("web", "x")).await,
        Code::Unauthenticated,
        "client certificate expired at",
    )
    .await;

    // The wrong role, both ways.
    let mut w = pb::ticket_service_client::TicketServiceClient::new(
        cp.channel(Role::Worker, "host-a").await,
    );
    expect_code(
        w.create_ticket(create("web", "x")).await,
        Code::PermissionDenied,
        "role worker) may not call /mc.v1.TicketService/CreateTicket",
    )
    .await;
    let mut b = pb::project_service_client::ProjectServiceClient::new(
        cp.channel(Role::Brain, "rules").await,
    );
    expect_code(
        b.list_projects(pb::ListProjectsRequest {}).await,
        Code::PermissionDenied,
        "allowed roles: operator",
    )
    .await;
    let mut op = pb::worker_service_client::WorkerServiceClient::new(
        cp.channel(Role::Operator, "alice").await,
    );
    let hello = pb::AttachRequest {
        msg: Some(pb::attach_request::Msg::Hello(pb::WorkerHello {
            host: "x".into(),
            ..Default::default()
        })),
    };
    expect_code(
        op.attach(futures::stream::iter(vec![hello])).await,
        Code::PermissionDenied,
        "may not call /mc.v1.WorkerService/Attach",
    )
    .await;
    assert_eq!(
        cp.event_count().await,
        before,
        "no refused caller wrote anything"
    );

    // Health is public; reflection needs any valid certificate.
    let mut h =
        tonic_health::pb::health_client::HealthClient::new(endpoint.connect().await.unwrap());
    let s = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_live_and_resumable() {
    let cp = TestCp::start(Backend::Sqlite).await;
    cp.add_project("web", "solo").await;
    let mut c = cp.tickets().await;
    let t1 = c
        .create_ticket(create("web", "one"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let mut live = c
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(T, live.next())
        .await
        .expect("the first event arrives on the open watch")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(
        (first.ticket_id, first.kind),
        (t1.id, pb::EventKind::Created as i32)
    );

    let t2 = c
        .create_ticket(create("web", "two"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let second = tokio::time::timeout(T, live.next())
        .await
        .expect("the second event arrives on the open watch")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(second.ticket_id, t2.id, "new events arrive live");
    c.cancel_ticket(pb::CancelTicketRequest {
        ticket_id: t2.id,
        reason: String::new(),
    })
    .await
    .unwrap();
    let third = tokio::time::timeout(T, live.next())
        .await
        .expect("the third event arrives on the open watch")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(
        (third.from_state, third.to_state),
        (
            pb::TicketState::Queued as i32,
            pb::TicketState::Cancelled as i32
        )
    );

    // Resume after the first event: exactly the rest, in order.
    let resumed: Vec<i64> = c
        .watch_events(pb::WatchEventsRequest {
            after_event_id: first.id,
            no_follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().event.unwrap().id)
        .collect()
        .await;
    assert_eq!(resumed, [second.id, third.id]);
    let only_t2: Vec<i64> = c
        .watch_events(pb::WatchEventsRequest {
            ticket_id: t2.id,
            no_follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().event.unwrap().ticket_id)
        .collect()
        .await;
    assert_eq!(only_t2, [t2.id, t2.id]);
    expect_code(
        c.watch_events(pb::WatchEventsRequest {
            after_event_id: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "after_event_id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_block_and_wake() {
    let cp = TestCp::start(Backend::Postgres).await;
    cp.add_project("web", "solo").await;
    let mut c = cp.tickets().await;
    let dep = c
        .create_ticket(create("web", "dependency"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let child = c
        .create_ticket(pb::CreateTicketRequest {
            depends_on: vec![dep.id],
            ..create("web", "child")
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(child.state, pb::TicketState::Blocked as i32);
    assert!(child.state_reason.contains(&dep.id.to_string()));
    let h = c
        .get_ticket_history(pb::GetTicketHistoryRequest {
            ticket_id: child.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.events.len(), 1, "born blocked: never visible as queued");
    assert_eq!(h.events[0].to_state, pb::TicketState::Blocked as i32);
}
