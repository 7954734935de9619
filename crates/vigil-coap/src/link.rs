//! CoRE Link Format (RFC 6690), as devices answer `/.well-known/core`.
//!
//! The parser is strict about structure (a link is `<target>` followed by
//! `;name[=value]` parameters; links are separated by commas) and lenient
//! about what RFC 6690 leaves to servers: white space around separators,
//! quoted or bare values, unknown parameters (kept), and absolute targets
//! (their path is the resource). An error says where and what in words, so
//! a technician can tell a broken device from a broken monitor.

use vigil_core::coap::CoapResource;

/// More links than this in one document is refused (a device with
/// thousands of resources is broken or hostile; each becomes a row).
pub const MAX_LINKS: usize = 4096;

/// One link of a link-format document: a target and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The target between `<` and `>`, as written.
    pub target: String,
    /// Parameters in order; a parameter without `=` has no value (`obs`).
    pub params: Vec<(String, Option<String>)>,
}

impl Link {
    /// The first value of a parameter (empty for a parameter without one).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Whether the parameter is present at all.
    pub fn has(&self, name: &str) -> bool {
        self.params
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The resource path the target names: `/sensors/temp` for `</sensors/temp>`
    /// and for `<coap://[fe80::1]:5683/sensors/temp>`, without query.
    pub fn path(&self) -> String {
        let t = self.target.as_str();
        let rest = match t.find("://") {
            Some(i) => {
                let after = &t[i + 3..];
                match after.find('/') {
                    Some(j) => &after[j..],
                    None => "/",
                }
            }
            None => t,
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        }
    }
}

impl Link {
    /// The resource this link describes, with the attributes Vigil shows.
    pub fn resource(&self) -> CoapResource {
        let text = |name: &str| {
            self.param(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        CoapResource {
            path: self.path(),
            rt: text("rt"),
            interface: text("if"),
            ct: self
                .param("ct")
                .map(|v| {
                    v.split_ascii_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            title: text("title"),
            obs: self.has("obs"),
            sz: self.param("sz").and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// Why a document is not link format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not CoRE link format at byte {at}: {what}")]
pub struct LinkFormatError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// Parses a whole document. Empty (or only white space) is no links.
pub fn parse(doc: &[u8]) -> Result<Vec<Link>, LinkFormatError> {
    let text = std::str::from_utf8(doc).map_err(|e| LinkFormatError {
        at: e.valid_up_to(),
        what: "not UTF-8",
    })?;
    Parser {
        s: text.as_bytes(),
        text,
        i: 0,
    }
    .document()
}

/// Parses a document into the resources it lists.
pub fn resources(doc: &[u8]) -> Result<Vec<CoapResource>, LinkFormatError> {
    Ok(parse(doc)?.iter().map(Link::resource).collect())
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &'static str) -> Result<T, LinkFormatError> {
        Err(LinkFormatError { at: self.i, what })
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn document(&mut self) -> Result<Vec<Link>, LinkFormatError> {
        let mut links = Vec::new();
        self.skip_ws();
        if self.peek().is_none() {
            return Ok(links);
        }
        loop {
            if links.len() == MAX_LINKS {
                return self.err("more than 4096 links");
            }
            links.push(self.link()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(links),
                Some(b',') => {
                    self.i += 1;
                    self.skip_ws();
                }
                Some(_) => return self.err("expected ',' or ';' after a link"),
            }
        }
    }

    fn link(&mut self) -> Result<Link, LinkFormatError> {
        if self.peek() != Some(b'<') {
            return self.err("expected '<' to start a link");
        }
        self.i += 1;
        let start = self.i;
        let Some(len) = self.s[start..].iter().position(|&b| b == b'>') else {
            return self.err("'<' without a closing '>'");
        };
        let target = &self.text[start..start + len];
        if target.bytes().any(|b| b.is_ascii_whitespace() || b == b'<') {
            return self.err("white space or '<' inside a link target");
        }
        self.i = start + len + 1;
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() != Some(b';') {
                break;
            }
            self.i += 1;
            self.skip_ws();
            params.push(self.param()?);
        }
        Ok(Link {
            target: target.to_owned(),
            params,
        })
    }

    fn param(&mut self) -> Result<(String, Option<String>), LinkFormatError> {
        let start = self.i;
        while self.peek().is_some_and(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'&'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                        | b'*'
                )
        }) {
            self.i += 1;
        }
        if self.i == start {
            return self.err("expected a parameter name after ';'");
        }
        let name = self.text[start..self.i].to_owned();
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Ok((name, None));
        }
        self.i += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.i += 1;
            let mut value = String::new();
            loop {
                match self.peek() {
                    None => return self.err("quoted value without its closing '\"'"),
                    Some(b'"') => {
                        self.i += 1;
                        break;
                    }
                    Some(b'\\') if self.i + 1 < self.s.len() => {
                        self.i += 1;
                        let c = self.text[self.i..].chars().next().unwrap_or('\\');
                        value.push(c);
                        self.i += c.len_utf8();
                    }
                    Some(_) => {
                        let c = self.text[self.i..].chars().next().unwrap_or('\\');
                        value.push(c);
                        self.i += c.len_utf8();
                    }
                }
            }
            value
        } else {
            let start = self.i;
            while self.peek().is_some_and(|b| {
                !matches!(
                    b,
                    b';' | b',' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'<' | b'>'
                )
            }) {
                self.i += 1;
            }
            self.text[start..self.i].to_owned()
        };
        Ok((name, Some(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rfc_6690_examples_and_what_devices_send() {
        // RFC 6690 §5, and libcoap's answer with a built-in and a PUT resource.
        let doc = br#"</sensors/temp>;rt="temperature-c";if="sensor";obs,
</sensors/light>;rt="light-lux";if="sensor";ct=0 ;title="Light, \"lux\"",</firmware/v2.1>;rt="firmware";sz=262144,
<coap://[fe80::1%252]:5683/t>;ct="0 50";obs"#;
        let r = resources(doc).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].path, "/sensors/temp");
        assert_eq!(r[0].rt.as_deref(), Some("temperature-c"));
        assert_eq!(r[0].interface.as_deref(), Some("sensor"));
        assert!(r[0].obs);
        assert_eq!(r[1].ct, vec![0]);
        assert_eq!(r[1].title.as_deref(), Some("Light, \"lux\""));
        assert!(!r[1].obs);
        assert_eq!(r[2].sz, Some(262144));
        assert_eq!(r[3].path, "/t");
        assert_eq!(r[3].ct, vec![0, 50]);
        assert!(resources(b"").unwrap().is_empty());
        assert!(resources(b"  \r\n").unwrap().is_empty());
    }

    #[test]
    fn broken_documents_are_refused_in_words() {
        for (doc, what) in [
            (&b"</a"[..], "'<' without a closing '>'"),
            (b"/a>;rt=x", "expected '<' to start a link"),
            (b"</a>;=x", "expected a parameter name after ';'"),
            (
                b"</a>;title=\"open",
                "quoted value without its closing '\"'",
            ),
            (b"</a> </b>", "expected ',' or ';' after a link"),
            (b"</a>,", "expected '<' to start a link"),
            (b"</a b>", "white space or '<' inside a link target"),
            (b"</\xff>", "not UTF-8"),
        ] {
            let e = parse(doc).unwrap_err();
            assert_eq!(e.what, what, "{:?}", String::from_utf8_lossy(doc));
            assert!(e.to_string().starts_with("not CoRE link format at byte"));
        }
        let many = "</a>,".repeat(MAX_LINKS) + "</b>";
        assert_eq!(
            parse(many.as_bytes()).unwrap_err().what,
            "more than 4096 links"
        );
    }

    #[test]
    fn any_bytes_give_links_or_an_error_never_a_panic() {
        // A cheap stand-in for the fuzz target, run with every test.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"<>;=,\" \\/abcobsrt\xc3\xa9\xff0";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let doc: Vec<u8> = (0..len)
                .map(|k| alphabet[((seed >> (k % 50)) as usize + k * 7) % alphabet.len()])
                .collect();
            if let Ok(links) = parse(&doc) {
                for l in &links {
                    let _ = l.resource();
                }
            }
        }
    }
}
