//! Large bodies keep the server's memory flat: `/export/users` of a large table fetches rows
//! page by page as the client reads, and `/upload` writes a large file to disk as it
//! arrives. The server runs as a process of its own, so its resident memory is its alone:
//! nothing the other tests (or this test's client) allocate is counted.

use futures_util::StreamExt;

use crate::helpers::{fresh_database, start_server_process, Backend, DirectConn, ServerProcess};

/// Rows exported; the CSV is about 21 MB.
const ROWS: i64 = 500_000;

/// The digits 0-9 as a derived table, for generating rows on MySQL/MariaDB.
const DIGITS: &str = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
     UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
     UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// Bytes read before memory is first sampled.
const WARM_UP_BYTES: usize = 3 << 20;

/// The binary on `backend` (with a fresh Postgres database), its data in `dir`; and where
/// its database is for a direct connection. `None` when Postgres is missing (never in CI).
async fn server_on(
    backend: Backend,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Option<(ServerProcess, String)> {
    let data_dir = dir.join("data");
    let data_dir = data_dir.to_str().expect("a UTF-8 path");
    let mut all = vec![("APP_DATA_DIR", data_dir)];
    all.extend_from_slice(env);
    let db_url = match fresh_database(backend).await? {
        Some(url) => url,
        None => format!("{data_dir}/{}", courier_actors::db::SQLITE_FILE),
    };
    if backend != Backend::Sqlite {
        all.push(("DATABASE_URL", db_url.as_str()));
    }
    Some((start_server_process(dir, &all), db_url))
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .finish()
}

async fn export_large_table(backend: Backend) {
    // One pooled connection: SQLite keeps a page cache (up to 2 MiB) per connection, so
    // with more, an export that happens to run on a connection not used before grows the
    // process by that cache — bounded, but it would hide what this test looks for.
    let dir = tempfile::tempdir().unwrap();
    let Some((server, db_url)) = server_on(backend, dir.path(), &[("DB_POOL_MAX_SIZE", "1")]).await
    else {
        return;
    };
    let mut conn = DirectConn::connect(backend, &db_url).await;
    let fill = match backend {
        Backend::Postgres => format!(
            "INSERT INTO users (name, email, created_at) \
             SELECT 'User ' || g, 'user' || g || '@example.com', now() \
             FROM generate_series(1, {ROWS}) g"
        ),
        // A recursive CTE's depth is capped (cte_max_recursion_depth, max_recursive_iterations):
        // the rows are a cross join of digits instead.
        Backend::Mysql => format!(
            "INSERT INTO users (name, email, created_at) \
             SELECT CONCAT('User ', n), CONCAT('user', n, '@example.com'), '2026-01-01 00:00:00' \
             FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d + 1 AS n \
                   FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e, {DIGITS} f, {DIGITS} g) t \
             WHERE n <= {ROWS}"
        ),
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {ROWS}) \
             INSERT INTO users (name, email, created_at) \
             SELECT 'User ' || x, 'user' || x || '@example.com', '2026-01-01 00:00:00' FROM g"
        ),
    };
    conn.exec(&fill).await;
    drop(conn);
    let before = server.resident_bytes();

    // The first export warms what is bounded but grows on first use: the database's page
    // cache on each pooled connection, blocking-pool threads and their allocator arenas.
    // It must not grow by the table's size: one that gathered the rows first would hold
    // them all at once, more than the CSV itself.
    let first = export(&server).await;
    assert_eq!(first.lines as i64, ROWS + 1, "the header and every row");
    let total = first.peak.saturating_sub(before);
    assert!(
        total < first.bytes as u64,
        "{backend:?}: memory grew by {total} bytes in all for a {}-byte export",
        first.bytes
    );
    // Once warm, a streaming export does not grow at all while it runs, where one that
    // gathered the rows would grow with every byte.
    let second = export(&server).await;
    assert_eq!(second.lines, first.lines);
    let after = second.bytes - second.warm_at;
    let growth = second.peak.saturating_sub(second.warm);
    eprintln!(
        "{backend:?}: exported {} bytes in {} chunks; resident memory grew {} KiB in all, \
         and {} KiB over the last {after} bytes of a second export",
        first.bytes,
        first.chunks,
        total / 1024,
        growth / 1024
    );
    assert!(after > 8 << 20, "{after}");
    assert!(
        growth < (after as u64) / 8,
        "{backend:?}: memory grew by {growth} bytes while {after} bytes were exported"
    );
}

/// What one export read, and the server's memory while it ran.
struct Export {
    bytes: usize,
    lines: usize,
    chunks: usize,
    /// Resident memory once `WARM_UP_BYTES` had arrived, and the bytes read by then.
    warm: u64,
    warm_at: usize,
    /// The highest resident memory seen.
    peak: u64,
}

async fn export(server: &ServerProcess) -> Export {
    let mut res = client()
        .get(format!("http://127.0.0.1:{}/export/users", server.port))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut out = Export {
        bytes: 0,
        lines: 0,
        chunks: 0,
        warm: 0,
        warm_at: 0,
        peak: 0,
    };
    while let Some(chunk) = res.next().await {
        let chunk = chunk.expect("chunk");
        out.bytes += chunk.len();
        out.lines += chunk.iter().filter(|b| **b == b'\n').count();
        out.chunks += 1;
        if out.warm_at == 0 && out.bytes >= WARM_UP_BYTES {
            out.warm = server.resident_bytes();
            out.warm_at = out.bytes;
        } else if out.chunks % 16 == 0 {
            out.peak = out.peak.max(server.resident_bytes());
        }
    }
    assert!(out.warm_at > 0, "the export came in many chunks");
    out
}

/// Bytes uploaded: four times the growth allowed.
const UPLOAD_BYTES: usize = 64 << 20;

async fn upload_large_file() {
    use std::cell::Cell;
    use std::rc::Rc;
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_on(Backend::Sqlite, dir.path(), &[])
        .await
        .expect("SQLite needs no service");
    let server = Rc::new(server);
    let boundary = "memory-test";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    // The body is generated as it is sent, so the client holds one chunk at a time.
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let chunks = UPLOAD_BYTES / chunk.len();
    let body = futures_util::stream::iter(
        std::iter::once(bytes::Bytes::from(head))
            .chain(std::iter::repeat_n(chunk, chunks))
            .chain(std::iter::once(bytes::Bytes::from(tail)))
            .map(Ok::<_, std::io::Error>),
    );
    let before = server.resident_bytes();
    let peak = Rc::new(Cell::new(before));
    let sampling = Rc::new(Cell::new(true));
    let sampler = {
        let (peak, sampling, server) = (peak.clone(), sampling.clone(), server.clone());
        actix_rt::spawn(async move {
            while sampling.get() {
                peak.set(peak.get().max(server.resident_bytes()));
                actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let mut res = client()
        .post(format!("http://127.0.0.1:{}/upload", server.port))
        .insert_header((
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        ))
        .send_stream(body)
        .await
        .unwrap();
    sampling.set(false);
    let _ = sampler.await;
    let status = res.status().as_u16();
    let reply: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["size"], UPLOAD_BYTES as u64);
    let growth = peak.get().saturating_sub(before);
    eprintln!(
        "upload: {} MiB stored; resident memory grew {} KiB",
        UPLOAD_BYTES >> 20,
        growth / 1024
    );
    assert!(
        growth < (UPLOAD_BYTES as u64) / 4,
        "memory grew by {growth} bytes for a {UPLOAD_BYTES}-byte upload"
    );
}

#[actix_rt::test]
async fn large_exports_and_uploads_keep_memory_flat() {
    export_large_table(Backend::Sqlite).await;
    export_large_table(Backend::Postgres).await;
    export_large_table(Backend::Mysql).await;
    upload_large_file().await;
}
