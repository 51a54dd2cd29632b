//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`;
//! never in the binary). Each takes any bytes and panics only when a
//! property of the code under it fails; the targets are thin wrappers, so
//! the properties live next to the code they are about.

pub use crate::http::fuzzing::{http_head, plugin_answers};

/// SDK values decoded from any bytes come back from their WIT form
/// unchanged: what a plugin answers is what the host reads.
pub fn wit_conversions(data: &[u8]) {
    let _ = crate::plugins::fuzzing::wit_round_trip(&mut arbitrary::Unstructured::new(data));
}

use crate::config::{Format, document};

/// Any text as a config file, in both formats: the loader answers with a
/// config or a list of problems, never a panic. An accepted document keeps
/// its secrets through redaction and restoration (`GET /api/config`, then
/// `PUT` of what it showed), and is accepted again when written back in
/// either format (`admin.persist`).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Json, Format::Toml] {
        let Ok((config, doc)) = crate::config::parse_with_document(text, format) else {
            continue;
        };
        let _ = config.warnings();
        let mut shown = document::redact(&doc);
        let problems = document::restore(&mut shown, &doc);
        if problems.is_empty() {
            assert_eq!(shown, doc, "redact then restore changed the document");
        }
        for out in [Format::Json, Format::Toml] {
            // A null has no TOML form; anything else must read back.
            if let Ok(written) = document::to_text(&doc, out) {
                let again = crate::config::parse(&written, out);
                assert!(
                    again.is_ok(),
                    "{text:?} was accepted, but not once written as {out:?}: {written:?}: {again:?}"
                );
            }
        }
    }
}

/// Any text as a certificate and a key (split at the first NUL): loading
/// answers with a certificate or an error naming the key, never a panic.
pub fn pem(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (cert, key) = text.split_once('\0').unwrap_or((&text, ""));
    let (cert, key) = (cert.to_owned(), key.to_owned());
    let source = crate::config::tls::CertSource {
        cert: crate::config::tls::Pem::Text(cert),
        key: crate::config::tls::Pem::Text(key),
        ca: None,
        at: "fuzz".to_owned(),
    };
    let _ = crate::tls::certs::load(&source, &crate::tls::provider());
}
