//! Responses streamed from the database: `/export/users` (CSV, page by
//! page) and `/generate/report` (HTML, section by section).
//!
//! Both are pull-driven: the next page or section is queried only when the client has
//! taken the previous one, so memory stays flat however large the table and a slow
//! client slows the export instead of filling the server. The first page (and, for the
//! report, nothing at all) is fetched before the status is sent, so a database that is
//! down still gets a clean 503; a failure later can only cut the stream, which the client
//! sees as an incomplete chunked response, never as a short file that looks whole.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use courier_actors::db_executor::{ComputeSection, ExportUsersPage, ReportSection, Section};
use futures_util::stream;

use crate::error::{AppError, ErrorBody};
use crate::routes::data::{ask, Executor};
use crate::state::AppState;

/// The CSV header row.
const CSV_HEADER: [&str; 3] = ["ID", "Name", "Email"];

/// Writes rows as RFC 4180 CSV (CRLF line ends; fields with commas, quotes or line breaks
/// quoted, quotes doubled).
/// Each row is anything serde writes as one record: an array of fields or a tuple.
fn csv_chunk<R: serde::Serialize>(rows: impl Iterator<Item = R>) -> Result<Bytes, AppError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .has_headers(false)
        .from_writer(Vec::with_capacity(64 * 1024));
    for row in rows {
        writer
            .serialize(row)
            .map_err(|e| AppError::Internal(format!("csv: {e}")))?;
    }
    writer
        .into_inner()
        .map(Bytes::from)
        .map_err(|e| AppError::Internal(format!("csv: {e}")))
}

fn page_chunk(rows: &[(i64, String, String)]) -> Result<Bytes, AppError> {
    csv_chunk(rows.iter())
}

/// Streams every user as CSV (`ID,Name,Email`), fetched `EXPORT_PAGE_SIZE` rows at a time
/// by keyset, so memory stays flat whatever the row count.
#[utoipa::path(
    get, path = "/export/users", tag = "streaming",
    responses(
        (status = 200, description = "users.csv, streamed", content_type = "text/csv", body = String),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn export_users(
    db: Executor,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let limit = state.config.data.export_page_size;
    let first = ask(&db, ExportUsersPage { after: 0, limit }).await?;
    let mut head = csv_chunk(std::iter::once(CSV_HEADER))?.to_vec();
    head.extend_from_slice(&page_chunk(&first)?);
    let after = first.last().map(|r| r.0);
    let done = (first.len() as i64) < limit;

    let db = db.into_inner();
    let rest = stream::try_unfold((after, done), move |(after, done)| {
        let db = db.clone();
        async move {
            let (Some(after), false) = (after, done) else {
                return Ok(None);
            };
            let rows = ask(&db, ExportUsersPage { after, limit })
                .await
                .inspect_err(|e| log::warn!("export: stopped after id {after}: {e}"))?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next = rows.last().map(|r| r.0);
            let done = (rows.len() as i64) < limit;
            Ok::<_, AppError>(Some((page_chunk(&rows)?, (next, done))))
        }
    });
    let body = stream::StreamExt::chain(stream::once(async move { Ok(Bytes::from(head)) }), rest);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=users.csv",
        ))
        .streaming(body))
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn section_html(section: Section, result: Result<ReportSection, AppError>) -> Bytes {
    let mut html = format!("<h2>{}</h2>\n", section.title());
    match result {
        Ok(s) => {
            html.push_str("<pre>\n");
            for (label, value) in s.lines {
                html.push_str(&format!("{}: {}\n", escape(&label), escape(&value)));
            }
            html.push_str("</pre>\n");
        }
        Err(e) => html.push_str(&format!(
            "<p class=\"error\">This section could not be computed: {}</p>\n",
            escape(&e.public_message())
        )),
    }
    Bytes::from(html)
}

const REPORT_HEAD: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Report</title></head><body>\n<h1>Report</h1>\n";
const REPORT_TAIL: &str = "</body></html>\n";

/// Streams an HTML report: the heading at once, then each section (users, orders,
/// analytics) as soon as it is computed. A section that fails says so in its place and
/// the report goes on.
#[utoipa::path(
    get, path = "/generate/report", tag = "streaming",
    responses((status = 200, description = "The report, streamed", content_type = "text/html", body = String))
)]
pub async fn generate_report(db: Executor) -> HttpResponse {
    let db = db.into_inner();
    let sections = stream::unfold(0usize, move |i| {
        let db = db.clone();
        async move {
            let section = *Section::ALL.get(i)?;
            let result = ask(&db, ComputeSection { section }).await;
            Some((Ok::<_, AppError>(section_html(section, result)), i + 1))
        }
    });
    let body = stream::StreamExt::chain(
        stream::StreamExt::chain(
            stream::once(async { Ok(Bytes::from_static(REPORT_HEAD.as_bytes())) }),
            sections,
        ),
        stream::once(async { Ok(Bytes::from_static(REPORT_TAIL.as_bytes())) }),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let chunk = csv_chunk(
            [
                ["1", "plain", "a@example.com"],
                ["2", "Smith, Jane", "b@example.com"],
                ["3", "say \"hi\"", "c@example.com"],
                ["4", "two\nlines", "d@example.com"],
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&chunk).unwrap(),
            "1,plain,a@example.com\r\n2,\"Smith, Jane\",b@example.com\r\n3,\"say \"\"hi\"\"\",c@example.com\r\n4,\"two\nlines\",d@example.com\r\n"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
