//! Interruption of long client commands (push, pull): SIGINT (Ctrl-C) or SIGTERM, so that they
//! can clean up — pull removes its staging directory — instead of dying mid-write.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves when SIGINT or SIGTERM arrives. If the handlers cannot be installed, never
/// resolves (the default disposition then still ends the process).
pub async fn interrupted() {
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
