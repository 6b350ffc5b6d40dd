//! What a `/status` request asks for: HTML or JSON (`Accept`, or `?format=`), and how many of
//! the slowest agents (`?top=`).
//!
//! The rule: JSON unless the client prefers HTML. A browser names `text/html` with a higher
//! q-value than anything else, so it gets the page; curl, Prometheus-style tools and scripts
//! send `*/*` or nothing and get JSON, as `/status` always served. Media ranges that do not
//! parse are ignored, and an `Accept` over [`MAX_ACCEPT_BYTES`] is ignored whole (RFC 9110
//! lets a server disregard the header): a client never gets an error for its `Accept`. A
//! query is an error only when `format` or `top` is given a value this endpoint cannot honour.

use mime::Mime;

use crate::fanout::MAX_SLOWEST;

/// The longest `Accept` (all its headers together) that is read; a longer one is ignored.
pub const MAX_ACCEPT_BYTES: usize = 4096;
/// The most media ranges of an `Accept` that are read.
const MAX_MEDIA_RANGES: usize = 64;
/// Slowest agents listed when the query does not say.
pub(crate) const DEFAULT_TOP: usize = 50;

/// How `/status` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/html`: the page.
    Html,
    /// `application/json`.
    Json,
}

/// A `/status` request, understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRequest {
    /// The answer's form.
    pub format: Format,
    /// How many of the slowest agents to list (at most [`MAX_SLOWEST`]).
    pub top: usize,
}

impl StatusRequest {
    /// Reads the `Accept` header values and the raw query string.
    ///
    /// # Errors
    /// A message for the client when `format` is not `html` or `json`, or `top` is not a
    /// number; other query parameters are ignored.
    pub fn parse(accept: &[&[u8]], query: Option<&str>) -> Result<Self, String> {
        let mut format = None;
        let mut top = DEFAULT_TOP;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "format" => {
                    format = Some(match &*value {
                        "html" => Format::Html,
                        "json" => Format::Json,
                        _ => {
                            return Err(format!(
                                "format={:?} is not understood: use format=html or format=json \
                                 (or an Accept header)\n",
                                truncate(&value, 64)
                            ));
                        }
                    });
                }
                "top" => {
                    top = value
                        .parse::<u64>()
                        .map_err(|_| {
                            format!(
                                "top={:?} is not a number: use top=0 to top={MAX_SLOWEST}\n",
                                truncate(&value, 64)
                            )
                        })?
                        .try_into()
                        .unwrap_or(usize::MAX)
                        .min(MAX_SLOWEST);
                }
                _ => {}
            }
        }
        Ok(Self {
            format: format.unwrap_or_else(|| from_accept(accept)),
            top,
        })
    }
}

/// At most `max` characters of `text`, for an error message.
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// HTML when the client prefers it to JSON; JSON otherwise.
pub(crate) fn from_accept(values: &[&[u8]]) -> Format {
    let total: usize = values.iter().map(|v| v.len() + 1).sum();
    if total > MAX_ACCEPT_BYTES {
        return Format::Json;
    }
    let ranges: Vec<(Mime, f32)> = values
        .iter()
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .take(MAX_MEDIA_RANGES)
        .filter_map(media_range)
        .collect();
    let html = preference(&ranges, &mime::TEXT_HTML);
    let json = preference(&ranges, &mime::APPLICATION_JSON);
    match (html, json) {
        (Some(html), Some(json)) if html.q > json.q => Format::Html,
        (Some(html), Some(json)) if html.q == json.q && html.exact && !json.exact => Format::Html,
        (Some(html), None) if html.q > 0.0 => Format::Html,
        _ => Format::Json,
    }
}

/// One media range and its q-value, or `None` if it does not parse (it is then ignored).
fn media_range(text: &str) -> Option<(Mime, f32)> {
    // RFC 9110 allows whitespace around the `;` of parameters; `mime` does not.
    let text: Vec<&str> = text.split(';').map(str::trim).collect();
    let range: Mime = text.join(";").parse().ok()?;
    let q = match range.get_param("q") {
        None => 1.0,
        Some(q) => q
            .as_str()
            .parse::<f32>()
            .ok()
            .filter(|q| (0.0..=1.0).contains(q))?,
    };
    Some((range, q))
}

/// How much a client wants `media`: the q of the most specific range that matches it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Preference {
    q: f32,
    /// The range named the type exactly (not a wildcard).
    exact: bool,
}

fn preference(ranges: &[(Mime, f32)], media: &Mime) -> Option<Preference> {
    ranges
        .iter()
        .filter_map(|(range, q)| {
            let specificity = if range.type_() == mime::STAR {
                0
            } else if range.type_() != media.type_() {
                return None;
            } else if range.subtype() == mime::STAR {
                1
            } else if range.subtype() == media.subtype() {
                2
            } else {
                return None;
            };
            Some((specificity, *q))
        })
        .max_by_key(|(specificity, _)| *specificity)
        .map(|(specificity, q)| Preference {
            q,
            exact: specificity == 2,
        })
}
