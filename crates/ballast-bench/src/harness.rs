//! The registry server under test, run in-process on a dedicated OS thread with its own
//! multi-threaded tokio runtime, so the load generator's runtime never steals its workers.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::oneshot;

/// A running server and the means to stop it.
pub struct InProcessServer {
    /// The bound address (`127.0.0.1:<ephemeral>`).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

impl InProcessServer {
    /// Starts a server with a fresh data directory under `parent`, on a runtime with
    /// `worker_threads` workers, and waits until it listens.
    pub fn start(parent: &Path, worker_threads: usize) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("ballast-bench-data-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a data directory in {}", parent.display()))?;
        let config = ballast_server::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: data.path().to_path_buf(),
            shutdown_grace_secs: 5,
            ..Default::default()
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ballast-server".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads.max(1))
                    .thread_name("server-worker")
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let bound = async {
                        let server = ballast_server::Server::bind(config).await?;
                        let addr = server.local_addr()?;
                        anyhow::Ok((server, addr))
                    }
                    .await;
                    let server = match bound {
                        Ok((server, addr)) => {
                            let _ = addr_tx.send(Ok(addr));
                            server
                        }
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("{e:#}")));
                            return Err(e);
                        }
                    };
                    server
                        .serve(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                })
            })
            .context("cannot spawn the server thread")?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server did not start within 60 s")?
            .map_err(|e| anyhow!("the server failed to start: {e}"))?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            _data: data,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:4242`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks the server to stop and waits for its thread (it drains for at most its grace period).
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(served)) => served.context("the server stopped with an error"),
            Some(Err(_)) => Err(anyhow!("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends the bound address (or why binding failed) back to [`InProcess::spawn`].
pub type AddrTx = std::sync::mpsc::Sender<Result<SocketAddr, String>>;

/// Any server run on a dedicated OS thread with its own multi-threaded runtime.
pub struct InProcess {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts `run(addr_tx, stop)` on a runtime with `worker_threads` workers named
    /// `thread_name`; `run` must send its bound address on `addr_tx`, then serve until `stop`.
    pub fn spawn<F, Fut>(thread_name: &str, worker_threads: usize, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(AddrTx, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let name = thread_name.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-main"))
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads.max(1))
                    .thread_name(name)
                    .enable_all()
                    .build()?;
                rt.block_on(run(addr_tx, stop_rx))
            })
            .with_context(|| format!("cannot spawn the {thread_name} thread"))?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("{thread_name} did not start within 60 s"))?
            .map_err(|e| anyhow!("{thread_name} failed to start: {e}"))?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Asks the server to stop and waits for its thread.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(served)) => served,
            Some(Err(_)) => Err(anyhow!("a server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
