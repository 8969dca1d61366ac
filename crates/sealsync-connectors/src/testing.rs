//! Real CardDAV servers on loopback for tests: Radicale and Xandikos from PyPI, named by
//! `SEALSYNC_TEST_RADICALE` and `SEALSYNC_TEST_XANDIKOS` (`scripts/test` installs both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sealsync_connector::credential::Credential;
use sealsync_connector::egress::EgressPolicy;

/// A server process, stopped when dropped.
#[derive(Debug)]
pub struct DavServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sealsync-dav-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server `command(port)` builds on a free port and returns once the server itself
/// says it listens there. A port answering is not enough: another test's server may have taken
/// the same port between the probe and the start, and this one then exits. It is started again
/// on another port.
fn serve(command: impl Fn(u16) -> Command) -> (Child, u16) {
    use std::io::{BufRead as _, BufReader, Read};
    for _ in 0..5 {
        let port = free_port();
        let mut child = command(port)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the DAV server runs");
        let (tx, rx) = std::sync::mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        let listening = format!("Listening on '127.0.0.1:{port}'");
        let listening_bare = format!("Listening on 127.0.0.1:{port}");
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            let (a, b) = (listening.clone(), listening_bare.clone());
            // Drains the server's output for its whole life, so that it never blocks on a
            // full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(&a) || line.contains(&b) {
                        let _ = tx.send(());
                    }
                }
            });
        }
        drop(tx);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => {
                wait_for(port);
                return (child, port);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    panic!("the DAV server did not start");
}

fn wait_for(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the DAV server did not start on port {port}");
}

pub const USER: &str = "ann";
pub const PASSWORD: &str = "radicale-test-password-1";

/// Radicale with one user (plain htpasswd) and owner-only rights.
pub fn radicale() -> DavServer {
    let bin = std::env::var("SEALSYNC_TEST_RADICALE")
        .expect("SEALSYNC_TEST_RADICALE names the radicale program (scripts/test sets it)");
    let dir = scratch();
    std::fs::write(dir.join("users"), format!("{USER}:{PASSWORD}\n")).unwrap();
    let (child, port) = serve(|port| {
        // Level info: the server says when it listens.
        let config = format!(
            "[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\n[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {}\n[logging]\nlevel = info\n",
            dir.join("users").display(),
            dir.join("collections").display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let mut command = Command::new(&bin);
        command.arg("--config").arg(dir.join("config"));
        command
    });
    DavServer { child, port, dir }
}

pub fn xandikos() -> DavServer {
    let bin = std::env::var("SEALSYNC_TEST_XANDIKOS")
        .expect("SEALSYNC_TEST_XANDIKOS names the xandikos program (scripts/test sets it)");
    let dir = scratch();
    let (child, port) = serve(|port| {
        let mut command = Command::new(&bin);
        command
            .args(["--defaults", "-d"])
            .arg(dir.join("data"))
            .args(["-l", "127.0.0.1", "-p", &port.to_string()]);
        command
    });
    DavServer { child, port, dir }
}

pub fn loopback(port: u16) -> EgressPolicy {
    EgressPolicy::allowing([format!("127.0.0.1:{port}").parse().unwrap()])
}

pub fn ann() -> Credential {
    Credential::Basic {
        username: USER.into(),
        password: PASSWORD.to_owned().into(),
    }
}
