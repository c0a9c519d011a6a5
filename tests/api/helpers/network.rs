//! Small servers on loopback that tests put around courier: an upstream API, a TCP proxy
//! that can be stopped like a crashed service, and a port nothing listens on.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::ServerHandle;

/// A port on loopback that nothing listens on.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// A local upstream on loopback: `/ok` (JSON), `/fail` (500), `/slow` (answers after 10 s),
/// `/not-json` (text).
pub struct Upstream {
    pub base: String,
    pub handle: ServerHandle,
}

pub fn spawn_upstream() -> Upstream {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/ok",
                web::get().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({"hello": "upstream"}))
                }),
            )
            .route(
                "/fail",
                web::get().to(|| async { HttpResponse::InternalServerError().body("boom") }),
            )
            .route(
                "/slow",
                web::get().to(|| async {
                    actix_rt::time::sleep(Duration::from_secs(10)).await;
                    HttpResponse::Ok().json(serde_json::json!({"late": true}))
                }),
            )
            .route(
                "/not-json",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/plain")
                        .body("plain text")
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Upstream {
        base: format!("http://127.0.0.1:{port}"),
        handle,
    }
}

/// A TCP proxy on loopback in front of a service: stopping it drops every connection and
/// refuses new ones, as a crashed server would; starting it again serves on the same port.
pub struct Proxy {
    pub port: u16,
    target: String,
    tasks: std::rc::Rc<std::cell::RefCell<Vec<actix_rt::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let mut proxy = Self {
            port: 0,
            target: target.to_owned(),
            tasks: Default::default(),
        };
        proxy.serve().await;
        proxy
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("proxy bind");
        self.port = listener.local_addr().unwrap().port();
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let accept = actix_rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = actix_rt::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.borrow_mut().push(conn);
            }
        });
        self.tasks.borrow_mut().push(accept);
    }

    /// A proxy in front of the service at `url` (its port, or `default_port`), and `url`
    /// with the proxy's port: what the server under test should connect to.
    pub async fn in_front_of(url: &str, default_port: u16) -> (Self, String) {
        let real = url::Url::parse(url).expect("valid URL");
        let target = format!(
            "{}:{}",
            real.host_str().expect("a host"),
            real.port().unwrap_or(default_port)
        );
        let proxy = Self::start(&target).await;
        let mut through = real;
        through
            .set_port(Some(proxy.port))
            .expect("a port can be set");
        (proxy, through.to_string())
    }

    /// Closes the listener and every proxied connection.
    pub fn stop(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.abort();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.serve().await;
    }
}
