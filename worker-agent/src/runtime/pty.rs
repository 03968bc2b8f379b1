//! The pty runtime (portable-pty): the agent runs on a pseudo-terminal owned by the worker
//! agent. Output is read on a blocking thread; the child is reaped on another. A pty runtime
//! does not survive a restart of the worker agent.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::{mpsc, watch};

use super::{OutputSource, Runtime, SpawnSpec, process};

pub struct PtyRuntime {
    id: String,
    pid: i32,
    writer: Mutex<Box<dyn Write + Send>>,
    exit: watch::Receiver<Option<i32>>,
    _master: Mutex<Box<dyn MasterPty + Send>>,
}

pub fn spawn(spec: &SpawnSpec) -> std::io::Result<(Arc<PtyRuntime>, OutputSource)> {
    let err = |e: anyhow_like::Error| std::io::Error::other(e.0);
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 50,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| err(anyhow_like::Error(format!("openpty: {e}"))))?;
    let mut cmd = CommandBuilder::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..]);
    cmd.cwd(&spec.cwd);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = pair.slave.spawn_command(cmd).map_err(|e| {
        err(anyhow_like::Error(format!(
            "spawning {:?}: {e}",
            spec.argv[0]
        )))
    })?;
    drop(pair.slave);
    let pid = child.process_id().map(|p| p as i32).unwrap_or(0);
    let mut reader = pair
        .master
        .try_clone_reader()
        .map_err(|e| err(anyhow_like::Error(format!("pty reader: {e}"))))?;
    let writer = pair
        .master
        .take_writer()
        .map_err(|e| err(anyhow_like::Error(format!("pty writer: {e}"))))?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    std::thread::Builder::new()
        .name(format!("pty-read-{pid}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    let (exit_tx, exit_rx) = watch::channel(None);
    std::thread::Builder::new()
        .name(format!("pty-wait-{pid}"))
        .spawn(move || {
            let code = match child.wait() {
                Ok(s) => i32::try_from(s.exit_code()).unwrap_or(-1),
                Err(_) => -1,
            };
            let _ = exit_tx.send(Some(code));
        })?;
    Ok((
        Arc::new(PtyRuntime {
            id: format!("pty:{pid}"),
            pid,
            writer: Mutex::new(writer),
            exit: exit_rx,
            _master: Mutex::new(pair.master),
        }),
        OutputSource::Channel(rx),
    ))
}

/// portable-pty returns `anyhow::Error`; this keeps anyhow out of the library.
mod anyhow_like {
    pub struct Error(pub String);
}

#[async_trait::async_trait]
impl Runtime for PtyRuntime {
    fn id(&self) -> &str {
        &self.id
    }

    fn pgid(&self) -> Option<i32> {
        (self.pid > 1).then_some(self.pid)
    }

    async fn type_text(&self, text: &str, submit: bool) -> std::io::Result<()> {
        // One write, its return included: on a terminal that echoes, output the agent
        // prints between two writes would land after the echoed text on its line, so a
        // signal it printed then would not start a line.
        let mut bytes = Vec::with_capacity(text.len().saturating_add(1));
        bytes.extend_from_slice(text.as_bytes());
        if submit {
            bytes.push(b'\r');
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&bytes)?;
        w.flush()
    }

    async fn keys(&self, keys: &[String]) -> std::io::Result<()> {
        for k in keys {
            match k.as_str() {
                "Enter" => self.type_text("", true).await?,
                "C-c" => self.type_text("\u{3}", false).await?,
                "Escape" => self.type_text("\u{1b}", false).await?,
                text => self.type_text(text, false).await?,
            }
        }
        Ok(())
    }

    async fn screen(&self) -> Option<String> {
        None
    }

    async fn exited(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    async fn terminate(&self, grace: Duration) -> process::Ended {
        match self.pgid() {
            Some(pgid) => process::terminate_group(pgid, grace).await,
            None => process::Ended::AlreadyGone,
        }
    }

    async fn cleanup(&self) {}
}
