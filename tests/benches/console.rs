//! Benchmark (not a test): the web console at scale. A board of N tickets (default 10,000):
//! the time to render the board page and a ticket page and their size, against listing
//! the cards the board shows over gRPC (`ListTickets`) in the same run; then one event
//! fanned out to S open console event streams (default 200): latency p50/p99 from the
//! commit to each browser-facing stream, against the same event to S `WatchEvents` streams
//! over mTLS, measured in the same rounds.
//!
//! `cargo bench -p mc-tests --bench console [-- --tickets 10000 --streams 200 --rounds 20]`

use std::time::Duration;

use futures::StreamExt;
use mc_common::identity::Role;
use mc_control_plane::console::auth::ensure_key_file;
use mc_proto as pb;
use mc_tests::cp::{Backend, TestCp, create};
use mc_tests::sim::pct;
use tokio::time::Instant;

use mc_tests::bench_args::number as arg;

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let tickets = arg("--tickets", 10_000);
    let streams = arg("--streams", 200);
    let rounds = arg("--rounds", 20);
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("console.key");
        let key = ensure_key_file(&key_file).unwrap();
        let cp = TestCp::start_with(Backend::Sqlite, |c| {
            c.console_listen = "127.0.0.1:0".into();
            c.console.key_file = key_file.clone();
        })
        .await;
        cp.add_project("bench", "dev_review_qa").await;
        println!("console benchmark: {tickets} tickets on SQLite, {streams} event streams, {rounds} rounds, release build");
        // The board: N tickets, queued and finished (a few hundred cards are shown).
        let made = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let ch = cp.channel(Role::Operator, "bench").await;
            tasks.push(tokio::spawn(async move {
                let mut c = pb::ticket_service_client::TicketServiceClient::new(ch);
                let mut i = w;
                while i < tickets {
                    let t = c
                        .create_ticket(create("bench", &format!("Ticket number {i}")))
                        .await
                        .unwrap()
                        .into_inner()
                        .ticket
                        .unwrap();
                    if i % 3 == 0 {
                        c.cancel_ticket(pb::CancelTicketRequest {
                            ticket_id: t.id,
                            reason: "bench".into(),
                        })
                        .await
                        .unwrap();
                    }
                    i += 8;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!("  made the board in {:.1}s", made.elapsed().as_secs_f64());
        let console = cp.cp.console.clone().unwrap();
        let base = console.url("127.0.0.1");
        let auth = mc_control_plane::console::auth::Auth::new(&key, Duration::from_secs(3600)).unwrap();
        let now = cp.cp.board.now();
        let link = format!(
            "{base}/login?{}",
            auth.link_query("bench", mc_common::Timestamp(now.millis() + 600_000)).unwrap()
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(streams + 8)
            .build()
            .unwrap();
        let r = http.get(&link).send().await.unwrap();
        let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();

        // Render times against listing the shown cards over gRPC.
        let mut c = cp.tickets().await;
        let (mut board, mut ticket, mut list) = (Vec::new(), Vec::new(), Vec::new());
        let (mut board_size, mut ticket_size) = (0, 0);
        for _ in 0..rounds {
            let t = Instant::now();
            let body = http.get(format!("{base}/")).header("cookie", &cookie).send().await.unwrap().bytes().await.unwrap();
            board.push(t.elapsed());
            board_size = body.len();
            let t = Instant::now();
            let body = http.get(format!("{base}/tickets/1")).header("cookie", &cookie).send().await.unwrap().bytes().await.unwrap();
            ticket.push(t.elapsed());
            ticket_size = body.len();
            let t = Instant::now();
            for states in [vec![pb::TicketState::Queued as i32], vec![pb::TicketState::Cancelled as i32]] {
                let _ = c
                    .list_tickets(pb::ListTicketsRequest {
                        states,
                        page_size: 50,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            list.push(t.elapsed());
        }
        let (b50, t50, l50) = (pct(&mut board, 0.5), pct(&mut ticket, 0.5), pct(&mut list, 0.5));
        println!(
            "  board page    p50 {:>9}  p99 {:>9}  {:>6} KiB",
            ms(b50), ms(pct(&mut board, 0.99)), board_size / 1024
        );
        println!(
            "  ticket page   p50 {:>9}  p99 {:>9}  {:>6} KiB",
            ms(t50), ms(pct(&mut ticket, 0.99)), ticket_size / 1024
        );
        println!(
            "  ListTickets of the shown cards (gRPC) p50 {:>9}   board/list {:.1}x   ticket/list {:.1}x",
            ms(l50),
            b50.as_secs_f64() / l50.as_secs_f64(),
            t50.as_secs_f64() / l50.as_secs_f64()
        );

        // Fan-out: S console streams and S WatchEvents streams, one event per round.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, i64, Instant)>();
        let mut readers = Vec::new();
        let max_event = max_event_id(&cp).await;
        for _ in 0..streams {
            let mut r = http
                .get(format!("{base}/live/events?after={max_event}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = String::new();
                while let Ok(Some(chunk)) = r.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(i) = buf.find("\n\n") {
                        let ev: String = buf.drain(..i + 2).collect();
                        if let Some(id) = ev.lines().find_map(|l| l.strip_prefix("data: ")).and_then(ticket_of) {
                            let _ = tx.send((true, id, Instant::now()));
                        }
                    }
                }
            }));
        }
        let ch = cp.channel(Role::Operator, "watch").await;
        for _ in 0..streams {
            let mut w = pb::ticket_service_client::TicketServiceClient::new(ch.clone());
            let mut s = w
                .watch_events(pb::WatchEventsRequest { after_event_id: max_event, ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                while let Some(Ok(m)) = s.next().await {
                    if let Some(e) = m.event {
                        let _ = tx.send((false, e.ticket_id, Instant::now()));
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut sse, mut grpc) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = Instant::now();
            let id = c.create_ticket(create("bench", "Fan me out")).await.unwrap().into_inner().ticket.unwrap().id;
            let (mut got_sse, mut got_grpc) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(30);
            while got_sse < streams || got_grpc < streams {
                let Ok(Some((is_sse, tid, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                    panic!("round lost events: {got_sse} console, {got_grpc} WatchEvents of {streams}");
                };
                if tid != id {
                    continue;
                }
                if is_sse {
                    got_sse += 1;
                    sse.push(at - t0);
                } else {
                    got_grpc += 1;
                    grpc.push(at - t0);
                }
            }
        }
        let (s50, s99, g50, g99) = (pct(&mut sse, 0.5), pct(&mut sse, 0.99), pct(&mut grpc, 0.5), pct(&mut grpc, 0.99));
        println!(
            "  one event to {streams} console streams   p50 {:>9}  p99 {:>9}",
            ms(s50), ms(s99)
        );
        println!(
            "  one event to {streams} WatchEvents       p50 {:>9}  p99 {:>9}   console/watch p50 {:.2}x p99 {:.2}x",
            ms(g50), ms(g99),
            s50.as_secs_f64() / g50.as_secs_f64(),
            s99.as_secs_f64() / g99.as_secs_f64()
        );
        for r in readers {
            r.abort();
        }
    });
}

fn ticket_of(json: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(json).ok()?["ticket_id"].as_i64()
}

async fn max_event_id(cp: &TestCp) -> i64 {
    let mut after = 0;
    loop {
        let page = cp
            .cp
            .board
            .store()
            .events_after(after, &Default::default(), 5000)
            .await
            .unwrap();
        match page.last() {
            Some(e) => after = e.id,
            None => return after,
        }
    }
}
