//! AWS Signature Version 4 (`aws-sigv4` capabilities): the request the
//! broker is about to send is signed with the secret access key and the
//! access key id the daemon granted, and gains `x-amz-date`,
//! `x-amz-content-sha256` (the hash of the body the broker holds) and
//! `authorization`. Every header the broker sends is signed, `host`
//! included, so nothing of the request can change on the way without the
//! signature failing.
//!
//! The canonical request follows AWS's description: the path's segments
//! URI-encoded (decoded first, then every byte but `A-Z a-z 0-9 - . _ ~`
//! escaped; twice for every service but S3), the query's pairs encoded the
//! same way and sorted, the headers lowercased with their values trimmed
//! and inner runs of spaces made one, sorted. Neither key ever appears in
//! an error.
//!
//! (The maintained `aws-sigv4` crate was considered: its current line
//! needs a newer Rust than this workspace's and brings the AWS runtime
//! crates with second copies of `hmac`/`sha2`; the algorithm is short and
//! is checked here against AWS's published examples.)

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Why a request could not be signed. Never holds a key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignError {
    #[error("the access key id holds characters other than A-Z, a-z and 0-9")]
    AccessKeyId,
    #[error("the secret access key is empty")]
    EmptySecret,
    #[error("the clock is before 1970")]
    Clock,
}

/// Where a signature is valid: the credential scope's region and service.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// The keys of one grant.
pub struct Keys<'a> {
    pub access_key_id: &'a [u8],
    pub secret: &'a [u8],
}

impl std::fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// The request as it goes on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Signable<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query as sent (`/a/b?x=1`).
    pub target: &'a str,
    /// Every header sent except `host` (lowercase names).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The headers to add (`x-amz-date`, `x-amz-content-sha256`,
/// `authorization`) for a request sent at `now`.
pub fn sign(
    keys: &Keys<'_>,
    scope: Scope<'_>,
    req: &Signable<'_>,
    now: SystemTime,
) -> Result<Vec<(String, String)>, SignError> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| SignError::Clock)?
        .as_secs();
    let payload = hex(&Sha256::digest(req.body));
    let mut added = vec![
        ("x-amz-date".to_owned(), amz_date(secs)),
        ("x-amz-content-sha256".to_owned(), payload.clone()),
    ];
    let mut all: Vec<(String, String)> = req.headers.to_vec();
    all.extend(added.iter().cloned());
    let authorization = authorization(keys, scope, req, &all, &added[0].1, &payload)?;
    added.push(("authorization".to_owned(), authorization));
    Ok(added)
}

/// The `authorization` value for a request whose headers (besides `host`)
/// are `headers`, `x-amz-date` among them as `date`.
fn authorization(
    keys: &Keys<'_>,
    scope: Scope<'_>,
    req: &Signable<'_>,
    headers: &[(String, String)],
    date: &str,
    payload_hash: &str,
) -> Result<String, SignError> {
    if keys.access_key_id.is_empty() || !keys.access_key_id.iter().all(u8::is_ascii_alphanumeric) {
        return Err(SignError::AccessKeyId);
    }
    if keys.secret.is_empty() {
        return Err(SignError::EmptySecret);
    }
    let akid = String::from_utf8_lossy(keys.access_key_id);
    let (signed, canonical) = canonical_request(scope, req, headers, payload_hash);
    let day = &date[..8];
    let credential_scope = format!("{day}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{credential_scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(keys.secret, day, scope);
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    Ok(format!(
        "AWS4-HMAC-SHA256 Credential={akid}/{credential_scope}, SignedHeaders={signed}, Signature={signature}"
    ))
}

/// The signed header list and the canonical request.
fn canonical_request(
    scope: Scope<'_>,
    req: &Signable<'_>,
    headers: &[(String, String)],
    payload_hash: &str,
) -> (String, String) {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target, ""),
    };
    let twice = scope.service != "s3";
    let path: Vec<String> = path
        .split('/')
        .map(|seg| {
            let once = encode(&decode(seg));
            if twice {
                encode(once.as_bytes())
            } else {
                once
            }
        })
        .collect();
    let path = match path.join("/") {
        p if p.is_empty() => "/".to_owned(),
        p => p,
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canon: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    canon.push(("host".to_owned(), req.host.to_ascii_lowercase()));
    for (n, v) in headers {
        let n = n.to_ascii_lowercase();
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        match canon.iter_mut().find(|(have, _)| *have == n) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&v);
            }
            None => canon.push((n, v)),
        }
    }
    canon.sort_by(|a, b| a.0.cmp(&b.0));
    let signed: Vec<&str> = canon.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let lines: String = canon.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{path}\n{}\n{lines}\n{signed}\n{payload_hash}",
        req.method,
        query.join("&")
    );
    (signed, canonical)
}

/// `kSigning`: the secret through the date, region, service and
/// `aws4_request`.
fn signing_key(secret: &[u8], day: &str, scope: Scope<'_>) -> Vec<u8> {
    let mut k = b"AWS4".to_vec();
    k.extend_from_slice(secret);
    let mut key = hmac(&k, day.as_bytes());
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    k.fill(0);
    key
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent escapes decoded (a `%` not followed by two hex digits is kept).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every byte but the unreserved ones as `%XX` (uppercase).
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC).
fn amz_date(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted in 400-year eras from 0000-03-01, so leap days fall last.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
