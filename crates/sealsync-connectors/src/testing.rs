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
    let port = free_port();
    std::fs::write(dir.join("users"), format!("{USER}:{PASSWORD}\n")).unwrap();
    let config = format!(
        "[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\n[rights]\ntype = owner_only\n[storage]\nfilesystem_folder = {}\n[logging]\nlevel = warning\n",
        dir.join("users").display(),
        dir.join("collections").display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(dir.join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("radicale runs");
    wait_for(port);
    DavServer { child, port, dir }
}

/// Xandikos with its default principal and address book (no authentication).
pub fn xandikos() -> DavServer {
    let bin = std::env::var("SEALSYNC_TEST_XANDIKOS")
        .expect("SEALSYNC_TEST_XANDIKOS names the xandikos program (scripts/test sets it)");
    let dir = scratch();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--defaults", "-d"])
        .arg(dir.join("data"))
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xandikos runs");
    wait_for(port);
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
