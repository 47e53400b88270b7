//! `vaultctl http` (one request through a capability, its body streamed to
//! stdout) and `vaultctl capabilities` (what the caller may invoke).
//!
//! The request body is read here, from a file this process opens with the
//! caller's own permissions or from stdin: no path travels to the daemon or
//! the broker.

use std::io::{Read, Write};

use aivault_client::cli::HttpArgs;
use aivault_client::http::{self, HttpError, Request, MAX_REQUEST_BODY};
use aivault_proto::CapabilityReport;
use serde_json::json;

use crate::endpoint::Endpoint;
use crate::error::{usage, CtlError, EXIT_HTTP_STATUS};
use crate::report::{print_json, Ui};
use crate::text::{escape, width};

/// Reads `--data`: `@FILE` or `-` (stdin), at most [`MAX_REQUEST_BODY`].
fn read_body(data: &str) -> Result<Vec<u8>, CtlError> {
    let limit = MAX_REQUEST_BODY as u64 + 1;
    let mut body = Vec::new();
    let read = if data == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut body)
    } else if let Some(file) = data.strip_prefix('@').filter(|f| !f.is_empty()) {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut body))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{file}: {e}")))
    } else {
        return Err(usage(
            "--data takes @FILE (a file vaultctl reads) or - (stdin)",
        ));
    };
    read.map_err(|e| usage(format!("--data: cannot read {e}")))?;
    if body.len() > MAX_REQUEST_BODY {
        return Err(usage("--data: the body is larger than 64 MiB"));
    }
    Ok(body)
}

/// The request the arguments describe, checked.
fn request(args: &HttpArgs) -> Result<Request, CtlError> {
    let capability = args.capability.clone().unwrap_or_default();
    let headers = args
        .headers
        .iter()
        .map(|h| http::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &args.data {
        Some(d) => read_body(d)?,
        None => Vec::new(),
    };
    let method = match &args.method {
        Some(m) => m.clone(),
        None if args.data.is_some() => "POST".into(),
        None => "GET".into(),
    };
    let req = Request {
        capability,
        method,
        path: args.path.clone(),
        headers,
        body,
    };
    req.check()?;
    Ok(req)
}

pub fn run(ep: &Endpoint, ui: Ui, args: HttpArgs) -> Result<i32, CtlError> {
    if args.list {
        return capabilities(ep, ui.json);
    }
    let timeout = match args.timeout.as_deref() {
        None | Some("0") => None,
        Some(t) => Some(std::time::Duration::from_millis(
            crate::time::parse_duration_ms(t).map_err(|e| usage(format!("--timeout: {e}")))?,
        )),
    };
    // Everything local is read and checked before connecting.
    let req = request(&args)?;
    let socket = http::http_socket_path(&ep.path);
    let mut resp = http::send(&socket, &req, timeout)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.include {
        out.write_all(resp.head.to_text().as_bytes())
            .and_then(|()| out.flush())
            .map_err(HttpError::Output)?;
    }
    resp.copy_to(&mut out)?;
    let status = resp.head.status;
    if status >= 400 {
        ui.failure(
            "http-status",
            &format!("HTTP {status} {}", escape(&resp.head.reason)),
        );
        return Ok(EXIT_HTTP_STATUS);
    }
    Ok(0)
}

/// `vaultctl capabilities`: a table, or the report as JSON.
pub fn capabilities(ep: &Endpoint, json: bool) -> Result<i32, CtlError> {
    let report = ep.open()?.capabilities()?;
    if json {
        print_json(&report_json(&report));
    } else {
        print!("{}", table(&report));
    }
    Ok(0)
}

fn report_json(r: &CapabilityReport) -> serde_json::Value {
    json!({
        "capabilities": r.capabilities.iter().map(|c| json!({
            "name": c.name, "provider": c.provider, "host": c.host,
            "methods": c.methods, "paths": c.paths,
            "secret": c.secret, "secret_present": c.secret_present,
        })).collect::<Vec<_>>(),
        "http_socket": r.http_socket,
        "http_tcp": r.http_tcp,
    })
}

fn table(r: &CapabilityReport) -> String {
    if r.capabilities.is_empty() {
        return "the policy gives you no HTTP capabilities\n".into();
    }
    let rows: Vec<[String; 6]> = r
        .capabilities
        .iter()
        .map(|c| {
            [
                escape(&c.name),
                escape(c.provider.as_deref().unwrap_or("-")),
                escape(&c.host),
                escape(&c.methods.join(",")),
                escape(&c.paths.join(" ")),
                format!(
                    "{}{}",
                    escape(&c.secret),
                    if c.secret_present { "" } else { " (not set)" }
                ),
            ]
        })
        .collect();
    let heads = ["NAME", "PROVIDER", "HOST", "METHODS", "PATHS", "SECRET"];
    let widths: Vec<usize> = (0..5)
        .map(|i| width(heads[i].len(), rows.iter().map(|r| r[i].as_str())))
        .collect();
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            s.push_str(&format!("{:<w$}  ", cells[i]));
        }
        s.push_str(cells[5]);
        s.push('\n');
        s
    };
    let mut out = line(heads);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    if let Some(s) = &r.http_socket {
        out.push_str(&format!("\nendpoint: unix socket {}", escape(s)));
        if let Some(t) = &r.http_tcp {
            out.push_str(&format!(", tcp http://{}", escape(t)));
        }
        out.push('\n');
    } else if let Some(t) = &r.http_tcp {
        out.push_str(&format!("\nendpoint: tcp http://{}\n", escape(t)));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aivault_proto::CapabilityInfo;

    fn args(extra: &[&str]) -> HttpArgs {
        use clap::Parser;
        let mut argv = vec!["vaultctl", "http"];
        argv.extend_from_slice(extra);
        match aivault_client::cli::Cli::try_parse_from(argv)
            .unwrap()
            .command
        {
            aivault_client::cli::Command::Http(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_makes_a_post_and_is_read_from_the_file() {
        let path = std::env::temp_dir().join(format!("aivault-http-body-{}", std::process::id()));
        std::fs::write(&path, b"{\"a\":1}").unwrap();
        let at = format!("@{}", path.display());
        let r = request(&args(&["openai", "-p", "/v1/x", "--data", &at])).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            (r.method.as_str(), &r.body[..]),
            ("POST", &b"{\"a\":1}"[..])
        );
        let r = request(&args(&["openai", "-X", "PUT", "-H", "X-A: b"])).unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.headers, vec![("X-A".to_string(), "b".to_string())]);
    }

    #[test]
    fn bad_arguments_are_usage_errors_not_panics() {
        for a in [
            &["openai", "--data", "inline text"][..],
            &["openai", "--data", "@"],
            &["openai", "--data", "@/nonexistent/body"],
            &["openai", "-H", "no colon"],
            &["openai", "-H", "Host: x"],
            &["Open AI"],
            &["openai", "-p", "v1"],
            &["openai", "-X", "G T"],
        ] {
            let e = request(&args(a)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{a:?}: {e}");
        }
    }

    #[test]
    fn list_needs_no_capability_and_the_table_shows_what_is_missing() {
        assert!(args(&["--list"]).list);
        let r = CapabilityReport {
            capabilities: vec![CapabilityInfo {
                name: "openai".into(),
                provider: Some("openai".into()),
                host: "api.openai.com".into(),
                methods: vec!["GET".into(), "POST".into()],
                paths: vec!["/v1/**".into()],
                secret: "OPENAI_API_KEY".into(),
                secret_present: false,
            }],
            http_socket: Some("/run/aivault/http.sock".into()),
            http_tcp: None,
        };
        let t = table(&r);
        assert!(t.starts_with("NAME    PROVIDER  HOST"), "{t}");
        assert!(
            t.contains(
                "openai  openai    api.openai.com  GET,POST  /v1/**  OPENAI_API_KEY (not set)"
            ),
            "{t}"
        );
        assert!(
            t.contains("endpoint: unix socket /run/aivault/http.sock"),
            "{t}"
        );
        assert_eq!(report_json(&r)["capabilities"][0]["secret_present"], false);
    }
}
