//! Living under a service manager: readiness and state for systemd
//! (`Type=notify`), and reloading the config on SIGHUP.

use std::path::Path;

use flashsync::Engine;

use crate::config::Config;

/// Tells systemd (when it started us with `Type=notify`: `NOTIFY_SOCKET` is
/// set) about our state, e.g. `READY=1`. Anything else: nothing happens. A
/// failure is logged, never fatal — the service manager is a bystander.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's default in containers).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), Path::new(&path))?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("could not notify the service manager ({state}): {e}");
    }
}

/// Applies a changed config file to a running engine: views new in it are
/// defined (and resumed, should an earlier reload have stopped them),
/// changed ones redefined (which copies them again), removed ones stopped
/// (their rows stay until `flashsync forget`). The caller resumes the views
/// returned (new ones, which an earlier reload may have stopped) and syncs,
/// beside its signal loop. The store and origins are read at start: a
/// change to them is reported and needs a restart. Returns the config now
/// in force.
pub async fn reload(engine: &Engine, old: Config, path: &Path) -> (Config, Vec<String>) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("SIGHUP: the config did not load, keeping the one running: {e}");
            return (old, Vec::new());
        }
    };
    let mut resume = Vec::new();
    let same_origins =
        new.origins.len() == old.origins.len() && new.origins.iter().zip(&old.origins).all(|(a, b)| a.same_as(b));
    if new.store != old.store || !same_origins {
        tracing::warn!("SIGHUP: the store and origins are read at start; restart to change them");
    }
    for def in &new.views {
        let before = old.views.iter().find(|v| v.name == def.name);
        if before == Some(def) {
            continue;
        }
        match engine.define(def.clone()).await {
            Ok(_) if before.is_some() => tracing::info!("SIGHUP: view {} redefined (it is copied again)", def.name),
            Ok(_) => {
                // Perhaps back in the config after a reload stopped it: the
                // caller resumes it (which syncs, so not here).
                resume.push(def.name.to_string());
                tracing::info!("SIGHUP: view {} defined", def.name)
            }
            Err(e) => tracing::warn!("SIGHUP: view {}: {e}", def.name),
        }
    }
    for def in old.views.iter().filter(|v| !new.views.iter().any(|n| n.name == v.name)) {
        match engine.stop(def.name.to_string()).await {
            Ok(_) => tracing::info!(
                "SIGHUP: view {} is no longer in the config: stopped (`flashsync forget {}` removes its rows)",
                def.name,
                def.name
            ),
            Err(e) => tracing::warn!("SIGHUP: stopping view {}: {e}", def.name),
        }
    }
    (new, resume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_the_state_to_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        // The only test in this binary that touches NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1");
        // Without the variable, nothing is sent and nothing fails.
        notify("STOPPING=1");
    }
}
