//! moto_server on a free loopback port for tests, stopped on drop. One file shared by
//! the model-cache and sentiment-lambda S3 tests (each includes it with `#[path]`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto_server on a free port, stopped on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Ports are picked by binding and releasing, so two tests can race for one: the
    /// moto that loses exits at once ("address in use") while the port answers for
    /// the other test's server. Only a server that is still ours once the port
    /// answers is used; otherwise, another port.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server is not installed: run scripts/test-deps.sh (pip install 'moto[server]')");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(addr).is_err() && child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "moto_server did not start on {addr}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(200));
            if child.try_wait().unwrap().is_none() {
                return Self {
                    child,
                    url: format!("http://{addr}"),
                };
            }
        }
        panic!("moto_server kept exiting at start (5 ports tried)");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
