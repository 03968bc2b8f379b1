//! A TCP relay that adds latency and jitter to everything it forwards, for testing the
//! worker stream over a slow link (this kernel has no netem).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Relay {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    jitter: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut n: u64 = 0;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                n += 1;
                // Deterministic jitter: delivery order is kept (times never go backwards).
                let j = jitter.mul_f64(((n * 7919) % 100) as f64 / 100.0);
                if tx
                    .send((tokio::time::Instant::now() + delay + j, buf[..k].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

impl Relay {
    /// Listens on `listen` and forwards to `target`, each direction delayed by `delay`
    /// plus up to `jitter`.
    pub async fn start(listen: &str, target: String, delay: Duration, jitter: Duration) -> Relay {
        let l = TcpListener::bind(listen).await.expect("relay listens");
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, delay, jitter), pipe(sr, cw, delay, jitter));
                });
            }
        });
        Relay { addr, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
