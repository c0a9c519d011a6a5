//! Uploads and downloads: streamed to disk with a size limit, hashed, served back with
//! ranges and validators, refused for names the server did not give out, removed by a job.

use crate::helpers::{spawn_app_with, wait_for_job, TestApp};
use sha2::{Digest, Sha256};

const BOUNDARY: &str = "courier-test-boundary";

fn multipart(field: &str, filename: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(app: &TestApp, filename: &str, content: &[u8]) -> (u16, serde_json::Value) {
    let mut res = app
        .client
        .post(app.url("/upload"))
        .insert_header((
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        ))
        .send_body(multipart("file", filename, content))
        .await
        .unwrap();
    let body = res.body().limit(1 << 20).await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or_default(),
    )
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn uploads_left(app: &TestApp) -> usize {
    std::fs::read_dir(app.data_dir.path().join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn an_upload_is_stored_hashed_and_served_back_with_ranges() {
    let app = spawn_app_with(&[]).await;
    let data = content(300_000);
    let (status, up) = upload(&app, "../../etc/Report Q3.pdf", &data).await;
    assert_eq!(status, 201, "{up}");
    assert_eq!(up["size"], 300_000);
    assert_eq!(up["sha256"], hex::encode(Sha256::digest(&data)));
    assert_eq!(up["filename"], "Report Q3.pdf", "only the last component");
    let id = up["id"].as_str().unwrap();
    assert!(
        !id.contains("Report"),
        "the stored name is the server's own"
    );

    let mut res = app
        .client
        .get(app.url(&format!("/download/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "attachment; filename=\"Report Q3.pdf\""
    );
    let etag = res.headers().get("etag").unwrap().clone();
    assert_eq!(res.headers().get("accept-ranges").unwrap(), "bytes");
    let body = res.body().limit(1 << 20).await.unwrap();
    assert_eq!(body.as_ref(), data.as_slice());

    let mut res = app
        .client
        .get(app.url(&format!("/download/{id}")))
        .insert_header(("Range", "bytes=1000-1999"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 206);
    assert_eq!(
        res.headers().get("content-range").unwrap(),
        "bytes 1000-1999/300000"
    );
    let part = res.body().await.unwrap();
    assert_eq!(part.as_ref(), &data[1000..2000]);

    let res = app
        .client
        .get(app.url(&format!("/download/{id}")))
        .insert_header(("Range", "bytes=400000-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 416);

    let res = app
        .client
        .get(app.url(&format!("/download/{id}")))
        .insert_header(("If-None-Match", etag))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 304);
}

#[actix_rt::test]
async fn an_upload_over_the_limit_is_refused_and_nothing_is_kept() {
    let app = spawn_app_with(&[("UPLOAD_MAX_BYTES", "10000")]).await;
    let (status, body) = upload(&app, "big.bin", &content(50_000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(uploads_left(&app), 0);
    let (status, _) = upload(&app, "small.bin", &content(10_000)).await;
    assert_eq!(status, 201);

    // Not a form with a file.
    let mut res = app
        .client
        .post(app.url("/upload"))
        .insert_header(("content-type", "application/json"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "{:?}", res.body().await);
}

#[actix_rt::test]
async fn download_names_that_could_escape_are_refused() {
    let app = spawn_app_with(&[]).await;
    for path in [
        "/download/..%2F..%2Fetc%2Fpasswd",
        "/download/%2Fetc%2Fpasswd",
        "/download/..",
        "/download/.env",
        "/download/..%5C..%5Cwindows",
        "/download/courier.sqlite3",
        "/download/0123456789abcdef0123456789abcdeF",
    ] {
        let (status, _, body) = app.get_json(path).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
        if status == 404 {
            // Only routing may answer 404 here (a path with a real slash matches no route).
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
    let (status, _, body) = app.get_json("/download/..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = app
        .get_json("/download/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["message"], "File not found");
}

#[actix_rt::test]
async fn a_job_removes_the_upload_after_its_time() {
    // Long enough that the download right after the upload comes before the cleanup.
    let app = spawn_app_with(&[("UPLOAD_TTL_SECS", "3")]).await;
    let (status, up) = upload(&app, "temp.txt", b"short-lived").await;
    assert_eq!(status, 201, "{up}");
    let id = up["id"].as_str().unwrap();
    let (status, _) = app.get_text(&format!("/download/{id}")).await;
    assert_eq!(status, 200);
    let job = up["cleanup_job_id"].as_i64().unwrap();
    let done = wait_for_job(&app.address, job, "succeeded").await;
    assert_eq!(done["attempts"], 1);
    let (status, _) = app.get_text(&format!("/download/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(uploads_left(&app), 0);
}
