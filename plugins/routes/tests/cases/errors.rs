//! Bad configs: refused at `init` with the path of the problem.

use turnout_plugin_sdk::testing::CallError;

use super::Init;

/// A one-route config with this route object.
fn one(route: &str) -> String {
    format!(r#"{{"routes": [{route}]}}"#)
}

/// A route on port 1 with this action.
fn with_action(action: &str) -> String {
    one(&format!(
        r#"{{"match": {{"ports": 1}}, "action": {action}}}"#
    ))
}

/// A valid route with this `security`.
fn with_security(security: &str) -> String {
    one(&format!(
        r#"{{"match": {{"ports": 1}}, "action": {{"type": "forward", "target": {{"host": "h", "port": 1}}}}, "security": {security}}}"#
    ))
}

const OK: &str =
    r#"{"match": {"ports": 1}, "action": {"type": "forward", "target": {"host": "h", "port": 1}}}"#;

pub(crate) fn bad_configs(init: Init<'_>) {
    let third = |route: &str| format!(r#"{{"routes": [{OK}, {OK}, {route}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        // Ports.
        (
            third(
                r#"{"match": {"ports": [80, 0]}, "action": {"type": "forward", "target": {"host": "h", "port": 1}}}"#,
            ),
            "routes[2].match.ports: port 0 is out of range 1-65535",
        ),
        (
            one(r#"{"match": {"ports": 65536}, "action": {}}"#),
            "routes[0].match.ports: port 65536 is out of range 1-65535",
        ),
        (
            one(r#"{"match": {"ports": [{"from": 9000, "to": 8000}]}}"#),
            "routes[0].match.ports: range 9000-8000 starts after it ends",
        ),
        (
            one(r#"{"match": {"ports": [{"from": 1, "until": 2}]}}"#),
            "routes[0].match.ports: unknown field `until`",
        ),
        (
            one(r#"{"match": {"ports": "443"}}"#),
            "routes[0].match.ports: expected a port number",
        ),
        (
            one(r#"{"match": {"ports": []}}"#),
            "routes[0].match.ports: empty",
        ),
        (
            one(r#"{"match": {"domains": "a.test"}}"#),
            "routes[0].match: has no ports",
        ),
        (one(r#"{"name": "x"}"#), "routes[0]: has no match"),
        (one("7"), "routes[0]: must be an object, got a number"),
        // Other match criteria.
        (
            one(r#"{"match": {"ports": 1, "domains": ["a.test", " "]}}"#),
            "routes[0].match.domains: invalid pattern",
        ),
        (
            one(r#"{"match": {"ports": 1, "domains": []}}"#),
            "routes[0].match.domains: empty",
        ),
        (
            one(r#"{"match": {"ports": 1, "clientIp": ["10.0.0.0/33"]}}"#),
            "routes[0].match.clientIp: invalid pattern \"10.0.0.0/33\"",
        ),
        (
            one(r#"{"match": {"ports": 1, "tlsVersion": ["TLSv9"]}}"#),
            "routes[0].match.tlsVersion: \"TLSv9\" is not one of",
        ),
        (
            one(r#"{"match": {"ports": 1, "path": "api"}}"#),
            "routes[0].match.path: invalid pattern",
        ),
        (
            one(r#"{"match": {"ports": 1, "prots": 2}}"#),
            "routes[0].match: unknown field `prots`",
        ),
        // Route keys.
        (
            one(r#"{"match": {"ports": 1}, "priority": 1.5}"#),
            "routes[0].priority: must be a whole number",
        ),
        (
            one(r#"{"match": {"ports": 1}, "name": 5}"#),
            "routes[0].name: must be a string",
        ),
        (
            one(r#"{"match": {"ports": 1}, "enabled": "no"}"#),
            "routes[0].enabled: must be true or false",
        ),
        (
            one(
                r#"{"match": {"ports": 1}, "action": {"type": "forward", "target": {"host": "h", "port": 1}}, "headers": {"requests": {}}}"#,
            ),
            "routes[0].headers: unknown field `requests`",
        ),
        (
            one(r#"{"match": {"ports": 1}, "actoin": {}}"#),
            "routes[0]: unknown field `actoin`",
        ),
        (
            one(r#"{"match": {"ports": 1}}"#),
            "routes[0]: has no action",
        ),
        // Actions.
        (
            with_action(r#"{"type": "forward", "targets": []}"#),
            "routes[0].action.targets: empty",
        ),
        (
            with_action(r#"{"type": "socket-handler"}"#),
            "routes[0].action.type: \"socket-handler\" is not supported by Turnout",
        ),
        (
            with_action(r#"{"targets": [{"host": "h", "port": 1}]}"#),
            "routes[0].action.type: required",
        ),
        (
            with_action(r#"{"type": "forward"}"#),
            "routes[0].action: has no targets (and defaults.target is not set)",
        ),
        (
            format!(
                r#"{{"routes": [{OK}, {{"match": {{"ports": 1}}, "action": {{"type": "forward", "nftables": {{}}}}}}]}}"#
            ),
            "routes[1].action.nftables: not supported by Turnout",
        ),
        (
            with_action(r#"{"type": "forward", "websocket": {"maxPayloadSize": 1024}}"#),
            "routes[0].action.websocket.maxPayloadSize: not supported by Turnout",
        ),
        (
            with_action(r#"{"type": "forward", "websocket": {"pingIntervall": 1000}}"#),
            "routes[0].action.websocket: unknown field `pingIntervall`",
        ),
        (
            with_action(r#"{"type": "forward", "websocket": {"pingInterval": 50}}"#),
            "routes[0].action.websocket.pingInterval: must be 0 (no heartbeat) or 100-86400000 milliseconds, got 50",
        ),
        (
            with_action(r#"{"type": "forward", "websocket": {"pingTimeout": "10s"}}"#),
            "routes[0].action.websocket.pingTimeout: must be 100-86400000 milliseconds, got \"10s\"",
        ),
        (
            with_action(r#"{"type": "forward", "websocket": {"enabled": "no"}}"#),
            "routes[0].action.websocket.enabled: must be true or false, got a string",
        ),
        (
            with_action(r#"{"type": "forward", "forwardingEngine": "nftables"}"#),
            "routes[0].action.forwardingEngine: not supported by Turnout",
        ),
        (
            with_action(r#"{"type": "forward", "targtes": []}"#),
            "routes[0].action: unknown field `targtes`",
        ),
        (
            with_action(
                r#"{"type": "forward", "target": {"host": "h", "port": 1}, "targets": [{"host": "h", "port": 1}]}"#,
            ),
            "routes[0].action: has both targets and target",
        ),
        (
            with_action(
                r#"{"type": "forward", "targets": [{"host": "h", "port": 1}, {"host": "h", "port": "keep"}]}"#,
            ),
            "routes[0].action.targets[1].port: \"keep\": a port is a number or \"preserve\"",
        ),
        (
            with_action(r#"{"type": "forward", "targets": [{"host": "h", "port": 0}]}"#),
            "routes[0].action.targets[0].port: port 0 is out of range 1-65535",
        ),
        (
            with_action(r#"{"type": "forward", "targets": [{"port": 1}]}"#),
            "routes[0].action.targets[0].host: required",
        ),
        (
            with_action(r#"{"type": "forward", "targets": [{"host": [], "port": 1}]}"#),
            "routes[0].action.targets[0].host: empty",
        ),
        (
            with_action(r#"{"type": "forward", "targets": [{"host": "a b", "port": 1}]}"#),
            "routes[0].action.targets[0].host: \"a b\" is not a host name",
        ),
        (
            with_action(
                r#"{"type": "forward", "targets": [{"host": "h", "port": 1, "match": {}}]}"#,
            ),
            "routes[0].action.targets[0].match: not supported by Turnout",
        ),
        (
            with_action(
                r#"{"type": "forward", "target": {"host": "h", "port": 1}, "tls": {"mode": "offload"}}"#,
            ),
            "routes[0].action.tls.mode: \"offload\" is not one of",
        ),
        (
            with_action(
                r#"{"type": "forward", "target": {"host": "h", "port": 1}, "tls": {"certificate": "auto"}}"#,
            ),
            "routes[0].action.tls.mode: required",
        ),
        (
            with_action(
                r#"{"type": "forward", "target": {"host": "h", "port": 1}, "tls": {"mode": "terminate", "acme": {}}}"#,
            ),
            "routes[0].action.tls.acme: not supported by Turnout",
        ),
        (
            with_action(
                r#"{"type": "forward", "target": {"host": "h", "port": 1}, "sendProxyProtocol": "v3"}"#,
            ),
            "routes[0].action.sendProxyProtocol: must be true, false, \"v1\" or \"v2\"",
        ),
        (
            with_action(&format!(
                r#"{{"type": "forward", "targets": [{{"host": [{}], "port": 1}}]}}"#,
                vec!["\"h\""; 65].join(",")
            )),
            "routes[0].action.targets: 65 backends (at most 64)",
        ),
        // Security.
        (
            with_security(r#"{"maxConnections": -1}"#),
            "routes[0].security.maxConnections: must be a whole number",
        ),
        (with_security("[]"), "routes[0].security: must be an object"),
        // Top level.
        (
            r#"{"routes": [], "defaults": {"preserveSourceIP": true}}"#.to_owned(),
            "defaults.preserveSourceIP: not supported by Turnout",
        ),
        (
            r#"{"routes": [], "defaults": {"target": {"host": "h"}}}"#.to_owned(),
            "defaults.target.port: required",
        ),
        (
            r#"{"routes": [], "defualts": {}}"#.to_owned(),
            "routes config: unknown field `defualts`",
        ),
        (
            r#"{"routes": {}}"#.to_owned(),
            "routes config: invalid type: map, expected a list of routes",
        ),
        (r#"{"routes": [}"#.to_owned(), "routes config:"),
        (
            r#"{"routes": [], "sendProxyProtocol": 1}"#.to_owned(),
            "sendProxyProtocol: must be true, false",
        ),
        // Every bad route is named, one per line, the good ones skipped.
        (
            format!(
                r#"{{"routes": [{{"match": {{"ports": 0}}}}, {OK}, {{"match": {{"ports": 1}}, "action": {{"type": "teleport"}}}}]}}"#
            ),
            "routes[0].match.ports: port 0 is out of range 1-65535\nroutes[2].action.type:",
        ),
    ];
    for (config, text) in &cases {
        match init(config) {
            Err(CallError::Init(msg)) => {
                assert!(
                    msg.starts_with(text),
                    "{config}\n  want: {text}\n  got:  {msg}"
                );
                // Errors naming a path do not need the parser's position.
                let located = msg.contains(" at line ");
                assert_eq!(located, text.starts_with("routes config:"), "{msg}");
            }
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error containing {text:?}"),
        }
    }
}
