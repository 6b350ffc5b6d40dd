//! [`RequestHead`]: what the server keeps of a request's header block, and the rules of RFC 9113
//! sections 8.2 and 8.3 that make a block a well-formed request or trailers.
//!
//! Fields are checked one at a time as the decoder yields them, so a block is never held as a
//! list: names are lowercase tokens, values carry no NUL, CR or LF and no surrounding
//! whitespace, connection-specific fields are refused, `te` may only say `trailers`, and the
//! request pseudo-header fields come first, each once. A block that breaks a rule is malformed:
//! the caller resets its stream with PROTOCOL_ERROR (RFC 9113 section 8.1.1).

use crate::fanout::Authorization;

/// Values of the fields kept from a request are cut at this length.
const MAX_VALUE_BYTES: usize = 1024;

/// Fields that only mean something on one HTTP/1.1 hop (RFC 9113 section 8.2.2).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
];

/// Request pseudo-header fields, as bits of [`RequestHead::pseudo`].
const METHOD: u8 = 1;
const SCHEME: u8 = 2;
const PATH: u8 = 4;
const AUTHORITY: u8 = 8;

/// What this server reads of a request's headers (or of trailers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RequestHead {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) content_type: String,
    /// `grpc-encoding`, if sent.
    pub(super) grpc_encoding: Option<String>,
    /// `authorization`, if sent: the agent's credentials, for admission.
    pub(super) authorization: Option<Authorization>,
    /// `content-length`, if sent: the request's DATA must add up to it (RFC 9113 8.1.1).
    pub(super) content_length: Option<u64>,
    /// The decoded list is over the advertised limit.
    pub(super) too_large: bool,
    /// The first rule of RFC 9113 8.2-8.3 a field broke.
    malformed: Option<&'static str>,
    /// The pseudo-header fields seen.
    pseudo: u8,
    /// A regular field was seen: pseudo-header fields may no longer come.
    regular_seen: bool,
}

impl RequestHead {
    /// Takes one field of the block, in order.
    pub(super) fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.malformed.is_some() {
            return;
        }
        if let Err(rule) = self.check_field(name, value) {
            self.malformed = Some(rule);
        }
    }

    fn check_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err("a header field value with NUL, CR or LF");
        }
        let space = |b: &u8| matches!(b, b' ' | b'\t');
        if value.first().is_some_and(space) || value.last().is_some_and(space) {
            return Err("a header field value that starts or ends with whitespace");
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            return self.pseudo_field(pseudo, value);
        }
        self.regular_seen = true;
        if name.is_empty() || !name.iter().all(|&b| is_name_byte(b)) {
            return Err(
                "a header field name that is empty, not lowercase, or has a character \
                        a name may not have",
            );
        }
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err(
                "a connection-specific header field (connection, keep-alive, \
                        proxy-connection, transfer-encoding or upgrade)",
            );
        }
        match name {
            b"te" if value != b"trailers" => Err("a te header field other than \"trailers\""),
            b"content-length" => {
                let length = std::str::from_utf8(value)
                    .ok()
                    .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or("a content-length that is not a number")?;
                if self.content_length.is_some_and(|known| known != length) {
                    return Err("two different content-length header fields");
                }
                self.content_length = Some(length);
                Ok(())
            }
            b"content-type" => {
                self.content_type = kept(value);
                Ok(())
            }
            b"authorization" => {
                self.authorization = Some(Authorization::from_bytes(value));
                Ok(())
            }
            b"grpc-encoding" => {
                self.grpc_encoding = Some(kept(value));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn pseudo_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if self.regular_seen {
            return Err("a pseudo-header field after a regular header field");
        }
        let bit = match name {
            b"method" => METHOD,
            b"scheme" => SCHEME,
            b"path" => PATH,
            b"authority" => AUTHORITY,
            b"status" => return Err("the response pseudo-header field :status in a request"),
            _ => return Err("an unknown pseudo-header field"),
        };
        if self.pseudo & bit != 0 {
            return Err("a pseudo-header field sent twice");
        }
        self.pseudo |= bit;
        match bit {
            METHOD => self.method = kept(value),
            PATH => self.path = kept(value),
            _ => {}
        }
        Ok(())
    }

    /// Why the block is not a well-formed request (RFC 9113 8.3.1), if it is not.
    pub(super) fn request_error(&self) -> Option<&'static str> {
        if self.too_large {
            // Fields past the limit were not read; the router refuses the list as too large.
            return None;
        }
        if let Some(rule) = self.malformed {
            return Some(rule);
        }
        if self.pseudo & METHOD == 0 {
            return Some("a request without :method");
        }
        if self.method == "CONNECT" {
            // RFC 9113 8.5: only :method and :authority.
            return (self.pseudo != METHOD | AUTHORITY)
                .then_some("a CONNECT request with :scheme or :path, or without :authority");
        }
        if self.pseudo & SCHEME == 0 {
            return Some("a request without :scheme");
        }
        if self.pseudo & PATH == 0 || self.path.is_empty() {
            return Some("a request without :path, or with an empty one");
        }
        None
    }

    /// Why the block is not valid trailers (RFC 9113 8.1), if it is not.
    pub(super) fn trailers_error(&self) -> Option<&'static str> {
        self.malformed
            .or((self.pseudo != 0).then_some("a pseudo-header field in trailers"))
    }
}

/// A byte a field name may hold: a visible ASCII character that is not uppercase (RFC 9113
/// 8.2.1), and no colon outside the pseudo-header prefix.
fn is_name_byte(byte: u8) -> bool {
    matches!(byte, 0x21..=0x7e) && !byte.is_ascii_uppercase() && byte != b':'
}

fn kept(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE_BYTES)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> RequestHead {
        let mut head = RequestHead::default();
        for (name, value) in fields {
            head.field(name.as_bytes(), value.as_bytes());
        }
        head
    }

    const GOOD: [(&str, &str); 6] = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/cattail.v1.Sync/Watch"),
        (":authority", "cattail:5473"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];

    /// GOOD with `change` applied: a field replaced (same name), added last (`+`) or first
    /// (`^`), or dropped (`-`).
    fn with(change: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = GOOD
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in change {
            if let Some(name) = name.strip_prefix('+') {
                fields.push((name.to_owned(), (*value).to_owned()));
            } else if let Some(name) = name.strip_prefix('^') {
                fields.insert(0, (name.to_owned(), (*value).to_owned()));
            } else if let Some(name) = name.strip_prefix('-') {
                fields.retain(|(n, _)| n != name);
            } else if let Some(field) = fields.iter_mut().find(|(n, _)| n == name) {
                field.1 = (*value).to_owned();
            }
        }
        fields
    }

    fn check(fields: &[(String, String)]) -> Option<&'static str> {
        let borrowed: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        head(&borrowed).request_error()
    }

    #[test]
    fn a_grpc_request_is_well_formed_and_keeps_what_the_server_routes_on() {
        let head = head(&GOOD);
        assert_eq!(head.request_error(), None);
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/cattail.v1.Sync/Watch");
        assert_eq!(head.content_type, "application/grpc");
        assert_eq!(
            head.trailers_error(),
            Some("a pseudo-header field in trailers")
        );
        let length = with(&[("+content-length", "12"), ("+grpc-encoding", "identity")]);
        let borrowed: Vec<(&str, &str)> = length
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let head = super::tests::head(&borrowed);
        assert_eq!(head.request_error(), None);
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.grpc_encoding.as_deref(), Some("identity"));
    }

    #[test]
    fn every_rule_of_rfc_9113_8_2_and_8_3_refuses_its_block() {
        let cases: [(&[(&str, &str)], &str); 17] = [
            (&[("+Content-Type", "x")], "not lowercase"),
            (&[("+x:y", "z")], "not lowercase"),
            (&[("+x y", "z")], "not lowercase"),
            (&[("+connection", "keep-alive")], "connection-specific"),
            (&[("+upgrade", "h2c")], "connection-specific"),
            (&[("te", "gzip")], "te header"),
            (&[("^:status", "200")], ":status"),
            (&[("^:foo", "bar")], "unknown pseudo-header"),
            (&[("-:method", "")], "without :method"),
            (&[("-:scheme", "")], "without :scheme"),
            (&[("-:path", "")], "without :path"),
            (&[(":path", "")], "empty one"),
            (&[("+x-value", "a\nb")], "CR or LF"),
            (&[("+x-value", " a")], "whitespace"),
            (&[("+content-length", "1x")], "not a number"),
            (
                &[("+content-length", "1"), ("+content-length", "2")],
                "two different",
            ),
            (&[("+content-length", "")], "not a number"),
        ];
        for (change, rule) in cases {
            let error = check(&with(change));
            assert!(
                error.is_some_and(|e| e.contains(rule)),
                "{change:?}: {error:?}, not {rule:?}"
            );
        }
        // Order and repetition of pseudo-header fields.
        let mut late = with(&[]);
        let method = late.remove(0);
        late.push(method);
        assert_eq!(
            check(&late),
            Some("a pseudo-header field after a regular header field")
        );
        for twice in [":method", ":scheme", ":path", ":authority"] {
            let mut fields = with(&[]);
            fields.insert(1, (twice.to_owned(), "x".to_owned()));
            assert_eq!(
                check(&fields),
                Some("a pseudo-header field sent twice"),
                "{twice}"
            );
        }
    }

    #[test]
    fn connect_requests_and_trailers_have_their_own_shape() {
        assert_eq!(
            head(&[(":method", "CONNECT"), (":authority", "x:1")]).request_error(),
            None
        );
        assert!(
            head(&[
                (":method", "CONNECT"),
                (":authority", "x:1"),
                (":path", "/")
            ])
            .request_error()
            .is_some()
        );
        assert_eq!(head(&[("grpc-status", "0")]).trailers_error(), None);
        assert_eq!(
            head(&[("grpc-status", "0"), ("TE", "x")]).trailers_error(),
            Some(
                "a header field name that is empty, not lowercase, or has a character a name may not have"
            )
        );
    }
}
