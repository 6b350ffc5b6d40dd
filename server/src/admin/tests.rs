//! `/status` negotiation (Accept headers and queries, odd ones included) and the page's
//! escaping of agent-supplied text.

use crate::fanout::{AgentRow, FleetReport, LagBasis, LagBuckets, MAX_SLOWEST};

use super::negotiate::{DEFAULT_TOP, Format, MAX_ACCEPT_BYTES, StatusRequest, from_accept};
use super::page;
use super::status::Status;

fn format(accept: &str) -> Format {
    from_accept(&[accept.as_bytes()])
}

const FIREFOX: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const CHROMIUM: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
    image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

#[test]
fn browsers_get_html_and_everyone_else_json() {
    assert_eq!(format(FIREFOX), Format::Html);
    assert_eq!(format(CHROMIUM), Format::Html);
    assert_eq!(from_accept(&[]), Format::Json, "no Accept: curl, scripts");
    assert_eq!(format("*/*"), Format::Json);
    assert_eq!(format("application/json"), Format::Json);
    assert_eq!(format("text/html"), Format::Html);
    assert_eq!(format("text/*"), Format::Html);
    assert_eq!(format("application/*"), Format::Json);
    assert_eq!(
        format("image/png"),
        Format::Json,
        "nothing we have: the default"
    );
}

#[test]
fn q_values_and_wildcards_decide() {
    assert_eq!(format("text/html;q=0.5, application/json"), Format::Json);
    assert_eq!(format("text/html, application/json;q=0.9"), Format::Html);
    // The most specific range decides: JSON at 0.1, anything else (HTML) at 1.
    assert_eq!(format("application/json;q=0.1, */*"), Format::Html);
    assert_eq!(format("text/html;q=0.2, */*;q=0.1"), Format::Html);
    assert_eq!(format("text/html;q=0"), Format::Json, "q=0 refuses HTML");
    assert_eq!(
        format("text/html, */*"),
        Format::Html,
        "named beats a wildcard"
    );
    assert_eq!(
        format("text/html, application/json"),
        Format::Json,
        "a tie: JSON"
    );
    assert_eq!(format("TEXT/HTML"), Format::Html);
    assert_eq!(format("text/html ; q=1.0"), Format::Html);
}

#[test]
fn garbage_and_oversized_accept_headers_fall_back_to_json() {
    for garbage in [
        "",
        ",,,",
        "garbage",
        "text/html;q=2",
        "text/html;q=banana",
        "text/html;q=-1",
        "/html",
        "text/",
        ";;;=",
        "\u{1F600}/html",
    ] {
        assert_eq!(format(garbage), Format::Json, "{garbage:?}");
    }
    // A bad range is ignored, the good ones still count.
    assert_eq!(format("garbage, text/html"), Format::Html);
    assert_eq!(
        from_accept(&[b"\xff\xfe".as_slice(), b"text/html".as_slice()]),
        Format::Html
    );
    let long = format!("{}, text/html", "x/y,".repeat(MAX_ACCEPT_BYTES));
    assert_eq!(
        format(&long),
        Format::Json,
        "an oversized Accept is ignored"
    );
    // Split over many headers, as HTTP allows.
    assert_eq!(
        from_accept(&[b"image/png".as_slice(), b"text/html".as_slice()]),
        Format::Html
    );
}

#[test]
fn queries_choose_the_format_and_the_number_of_rows() {
    let html = [FIREFOX.as_bytes()];
    let parse = |query: &str| StatusRequest::parse(&html, Some(query));
    assert_eq!(parse("").unwrap().format, Format::Html);
    assert_eq!(parse("").unwrap().top, DEFAULT_TOP);
    assert_eq!(parse("format=json").unwrap().format, Format::Json);
    let json = StatusRequest::parse(&[], Some("format=html")).unwrap();
    assert_eq!(json.format, Format::Html);
    assert_eq!(parse("top=3").unwrap().top, 3);
    assert_eq!(parse("top=0").unwrap().top, 0);
    assert_eq!(
        parse("top=99999999999999999999").map(|r| r.top),
        Err("top=\"99999999999999999999\" is not a number: use top=0 to top=200\n".to_owned())
    );
    assert_eq!(parse("top=1000000").unwrap().top, MAX_SLOWEST);
    assert_eq!(parse("unknown=1&&=&%zz&top").map(|r| r.top).ok(), None);
    assert_eq!(parse("unknown=1&&=&%zz").unwrap().format, Format::Html);
    let error = parse("format=xml").unwrap_err();
    assert!(error.contains("format=html or format=json"), "{error}");
    assert!(parse("top=-1").unwrap_err().contains("top=0 to top=200"));
    let long = format!("format={}", "x".repeat(100_000));
    assert!(
        parse(&long).unwrap_err().len() < 200,
        "the message stays short"
    );
}

fn row(agent_id: &str, node: &str, version: &str, lag: u64) -> AgentRow {
    AgentRow {
        node: node.to_owned(),
        agent_id: agent_id.to_owned(),
        version: version.to_owned(),
        transport: "native",
        resume_mode: "snapshot",
        acked_revision: Some(100 - lag),
        revision: 100 - lag,
        lag_basis: LagBasis::Acked,
        lag_revisions: lag,
        lag_seconds: lag as f64,
        bytes_sent: 4096,
        connected_since: "2026-12-02T10:00:00Z".to_owned(),
        connected_seconds: 60,
    }
}

fn status(rows: Vec<AgentRow>) -> Status {
    let replica = serde_json::json!({
        "server_id": "cattail-0", "syncStatus": "InSync", "head": 100,
        "epoch": "00ff", "connected_agents": rows.len(),
        "log": {"batches": 3, "bytes": 300, "oldest": 98},
        "watches": {"v1/pods": {"connected": true}},
    });
    let serde_json::Value::Object(replica) = replica else {
        unreachable!()
    };
    let mut lag = LagBuckets::default();
    for row in &rows {
        lag.count(row.lag_revisions);
    }
    Status {
        replica,
        fleet: FleetReport {
            head: 100,
            agents: rows.len(),
            lag,
            oldest_lag_seconds: 12.0,
            slowest: rows,
        },
    }
}

#[test]
fn agent_supplied_text_is_escaped() {
    let page = page::render(&status(vec![row(
        "<script>alert(1)</script>",
        "node\"><img src=x onerror=alert(2)>",
        "v1 & <b>bold</b>",
        12,
    )]))
    .into_string();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("<b>bold"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("node&quot;&gt;&lt;img"), "{page}");
    assert!(page.contains("v1 &amp; &lt;b&gt;"), "{page}");
    assert!(!page.contains("<script"), "no script at all: {page}");
}

#[test]
fn the_page_shows_counts_and_rows() {
    let rows = vec![row("far", "n1", "v", 12), row("near", "n2", "v", 3)];
    let page = page::render(&status(rows)).into_string();
    assert!(page.contains(r#"<b id="at-head">0</b>"#), "{page}");
    assert!(page.contains(r#"<b id="behind-near">1</b>"#), "{page}");
    assert!(page.contains(r#"<b id="behind-far">1</b>"#), "{page}");
    assert_eq!(page.matches(r#"<tr class="agent""#).count(), 2);
    assert!(page.contains("InSync"));
    assert!(!page.contains("No agent is connected"));
    let empty = page::render(&status(Vec::new())).into_string();
    assert!(empty.contains("No agent is connected"));
}

#[test]
fn json_keeps_the_replica_fields_at_the_top_and_adds_the_fleet() {
    let json = status(vec![row("a", "n", "v", 0)]).to_json();
    assert_eq!(json["syncStatus"], "InSync");
    assert_eq!(json["head"], 100);
    assert_eq!(json["fleet"]["lag"]["at_head"], 1);
    assert_eq!(json["fleet"]["slowest"][0]["agent_id"], "a");
    assert_eq!(json["fleet"]["slowest"][0]["lag_basis"], "acked");
}
