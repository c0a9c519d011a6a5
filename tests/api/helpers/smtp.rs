//! An SMTP server on loopback that keeps what it receives, or refuses, or hangs.

use std::net::TcpListener;

/// What the SMTP sink does with the next deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept every message.
    Accept,
    /// Answer `451` (try again later) to this many more deliveries, then accept.
    RejectTransient(u32),
    /// Answer `550` (permanent failure) to every delivery.
    RejectPermanent,
    /// Accept the connection and never say anything.
    Hang,
}

/// An SMTP server on loopback that keeps what it receives.
pub struct SmtpSink {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<SinkMode>>,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Starts the sink on its own thread (so it outlives any one test runtime).
    pub fn start(mode: SinkMode) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (m, r) = (m.clone(), r.clone());
                std::thread::spawn(move || {
                    if *m.lock().unwrap() == SinkMode::Hang {
                        // Say nothing; hold the connection until the client gives up.
                        let mut buf = [0u8; 1024];
                        while matches!(std::io::Read::read(&mut stream, &mut buf), Ok(n) if n > 0) {
                        }
                        return;
                    }
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut say = |s: &str| stream.write_all(s.as_bytes());
                    if say("220 sink ESMTP\r\n").is_err() {
                        return;
                    }
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            "250 sink\r\n".to_owned()
                        } else if upper.starts_with("MAIL FROM") {
                            let mut mode = m.lock().unwrap();
                            match *mode {
                                SinkMode::RejectTransient(n) if n > 0 => {
                                    *mode = if n == 1 {
                                        SinkMode::Accept
                                    } else {
                                        SinkMode::RejectTransient(n - 1)
                                    };
                                    "451 4.3.0 try again later\r\n".to_owned()
                                }
                                SinkMode::RejectPermanent => {
                                    "550 5.1.1 mailbox unavailable\r\n".to_owned()
                                }
                                _ => "250 OK\r\n".to_owned(),
                            }
                        } else if upper.starts_with("DATA") {
                            if say("354 go ahead\r\n").is_err() {
                                return;
                            }
                            let mut message = String::new();
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                message.push_str(&line);
                            }
                            r.lock().unwrap().push(message);
                            "250 OK queued\r\n".to_owned()
                        } else if upper.starts_with("QUIT") {
                            let _ = say("221 bye\r\n");
                            return;
                        } else {
                            "250 OK\r\n".to_owned()
                        };
                        if say(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            mode,
            received,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The messages accepted so far (headers and body).
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}
