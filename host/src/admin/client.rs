//! The client side of the admin API's configuration endpoints, for
//! `turnout routes apply`: one request over plain HTTP/1.1 (the admin API
//! listens on loopback; reach a remote one through a tunnel).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, IF_MATCH};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How long a request may take in all: a reconfigure compiles and
/// initialises every plugin.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin address is not `http://HOST:PORT`.
    #[error("--admin {0:?}: expected http://HOST:PORT (the admin API speaks plain HTTP)")]
    Address(String),
    /// No connection, or it broke.
    #[error("admin API at {addr}: {message}")]
    Io {
        /// Where.
        addr: String,
        /// What happened.
        message: String,
    },
    /// No answer in time.
    #[error("admin API at {0}: no answer within {TIMEOUT:?}")]
    Timeout(String),
}

/// An answer: the status and the body (JSON, or `null` when it was not).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON.
    pub body: Value,
}

/// `PUT path` with a JSON body on the admin API at `admin`.
pub async fn put(
    admin: &str,
    path: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, ClientError> {
    let authority = admin
        .strip_prefix("http://")
        .unwrap_or(admin)
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || admin.starts_with("https://") {
        return Err(ClientError::Address(admin.to_owned()));
    }
    let io = |e: &dyn std::fmt::Display| ClientError::Io {
        addr: authority.to_owned(),
        message: e.to_string(),
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| io(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io(&e))?;
        tokio::spawn(conn);
        let mut req = Request::put(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(v) = if_match {
            req = req.header(IF_MATCH, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| io(&e))?;
        let response = sender.send_request(req).await.map_err(|e| io(&e))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| io(&e))?
            .to_bytes();
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(authority.to_owned()))?
}

/// The route list in a file: a JSON array, or a JSON or TOML document with
/// `routes` (a whole config file will do). `-` reads standard input (JSON).
pub fn read_routes(path: &std::path::Path) -> Result<Vec<Value>, String> {
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("standard input: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?
    };
    let toml = crate::config::Format::from_path(path) == Some(crate::config::Format::Toml);
    let value: Value = if toml {
        toml::from_str(&text).map_err(|e| format!("{shown}: {}", e.message()))?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{shown}: {e}"))?
    };
    match value {
        Value::Array(routes) => Ok(routes),
        Value::Object(mut o) => match o.remove("routes") {
            Some(Value::Array(routes)) => Ok(routes),
            Some(_) => Err(format!("{shown}: routes: must be an array")),
            None => Err(format!(
                "{shown}: has no routes (an array, or an object with routes)"
            )),
        },
        _ => Err(format!(
            "{shown}: expected an array of routes, or an object with routes"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_come_from_an_array_or_a_document_in_either_format() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let a = write("a.json", r#"[{"name": "x"}]"#);
        assert_eq!(read_routes(&a).unwrap().len(), 1);
        let b = write(
            "b.json",
            r#"{"workers": 1, "routes": [{"name": "x"}, {"name": "y"}]}"#,
        );
        assert_eq!(read_routes(&b).unwrap().len(), 2);
        let c = write("c.toml", "[[routes]]\nname = \"x\"\n");
        assert_eq!(read_routes(&c).unwrap()[0]["name"], "x");
        let d = write("d.json", r#"{"workers": 1}"#);
        assert!(read_routes(&d).unwrap_err().contains("has no routes"));
    }
}
