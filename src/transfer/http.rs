//! HTTP and HTTPS with ureq (rustls, the server checked against `ca_file` or the system's
//! CA certificates): `Range` + `If-Range` to resume only the same version
//! of a file, `ETag` / `Last-Modified` / the total size to tell versions apart, and `PUT`
//! to upload. Redirects are not followed: the store's URL should name the real place.

use super::config::{Login, Source};
use super::fetch::{Download, Resume, Version};
use super::url::Redacted;
use super::{Failure, Options};
use base64::Engine;
use std::io::Read;
use ureq::http::{HeaderMap, StatusCode};

fn agent(source: &Source, options: &Options) -> Result<ureq::Agent, Failure> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_resolve(Some(options.timeout))
        .timeout_connect(Some(options.timeout))
        // A server that sends its answer's head a byte at a time never trips the
        // per-read timeout; the head as a whole must come within one timeout too.
        .timeout_recv_response(Some(options.timeout))
        .timeout_per_read(Some(options.timeout))
        .timeout_per_write(Some(options.timeout));
    if source.url.tls {
        config = config.tls_config(source.tls.ureq_config()?);
    }
    Ok(config.build().new_agent())
}

fn authorization(login: &Login) -> String {
    let pair = format!("{}:{}", login.user, login.password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Sorts a ureq error: connection trouble is worth a retry, the rest is not.
fn failure(error: ureq::Error) -> Failure {
    match error {
        ureq::Error::Io(e) => Failure::io(&e),
        ureq::Error::Timeout(_) => Failure::retry("timed out"),
        ureq::Error::ConnectionFailed => Failure::Retry {
            reason: "connection failed".to_string(),
            server_down: true,
        },
        ureq::Error::HostNotFound => Failure::retry("host not found"),
        ureq::Error::Rustls(e) => super::tls::refusal(&e),
        other => Failure::Refused(other.to_string()),
    }
}

/// What a status that is not a success means.
fn refusal(status: StatusCode, headers: &HeaderMap, login: Option<&Login>) -> Failure {
    match status.as_u16() {
        401 => Failure::Refused(match login {
            Some(login) => format!(
                "the server refused the login as {:?} ({status}); check user and password_file",
                login.user
            ),
            None => format!("the server asks for a login ({status}); set user and password_file"),
        }),
        404 | 410 => Failure::Refused(format!("not found on the server ({status})")),
        300..=399 => Failure::Refused(format!(
            "the server redirects ({status}) to {}; use that URL",
            Redacted(text(headers, "location").as_deref().unwrap_or("?"))
        )),
        500..=599 => Failure::retry(format!("the server answered {status}")),
        _ => Failure::Refused(format!("the server answered {status}")),
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// What `If-Range` can carry: a strong ETag, or else the modification date.
fn validator(version: &Version) -> Option<&str> {
    match &version.etag {
        Some(etag) if !etag.starts_with("W/") => Some(etag),
        _ => version.modified.as_deref(),
    }
}

/// A `GET` under way.
struct HttpDownload {
    body: ureq::BodyReader<'static>,
    version: Version,
    offset: u64,
}

/// Starts a `GET`: with `Range` and `If-Range` when resuming, so a server sends the rest
/// only of the same version. A server that sends the whole file instead (it ignores
/// ranges, or the file changed) is taken from the start.
pub(super) fn open(
    source: &Source,
    resume: Option<&Resume>,
    options: &Options,
) -> Result<Box<dyn Download>, Failure> {
    let ranged = resume.and_then(|r| Some((r, validator(&r.version)?)));
    let mut request = agent(source, options)?.get(source.url.to_string());
    if let Some(login) = &source.login {
        request = request.header("Authorization", authorization(login));
    }
    if let Some((resume, validator)) = ranged {
        request = request
            .header("Range", format!("bytes={}-", resume.offset))
            .header("If-Range", validator);
    }
    let response = request.call().map_err(failure)?;
    let status = response.status();
    let headers = response.headers();
    let version = |size| Version {
        size,
        modified: text(headers, "last-modified"),
        etag: text(headers, "etag"),
    };
    let (version, offset) = match (status.as_u16(), ranged) {
        (206, Some((resume, _))) => {
            let (start, total) = text(headers, "content-range")
                .as_deref()
                .and_then(content_range)
                .ok_or_else(|| Failure::Refused("a 206 answer without Content-Range".into()))?;
            let version = version(total);
            if start != resume.offset || version != resume.version {
                log::info!(
                    "{}: the server sent another range or version; starting over",
                    source.url
                );
                return open(source, None, options);
            }
            (version, start)
        }
        (200, ranged) => {
            let version = version(response.body().content_length());
            match ranged {
                Some((resume, _)) if resume.version == version => log::info!(
                    "{}: the server ignores range requests; fetching the whole file again",
                    source.url
                ),
                Some(_) => log::info!(
                    "{} changed on the server since the partial download; starting over",
                    source.url
                ),
                None => {}
            }
            (version, 0)
        }
        (416, Some(_)) => return open(source, None, options),
        (code, _) if (200..300).contains(&code) => {
            return Err(Failure::Refused(format!(
                "unexpected answer {status} to a GET"
            )))
        }
        _ => return Err(refusal(status, headers, source.login.as_ref())),
    };
    Ok(Box::new(HttpDownload {
        body: response.into_body().into_reader(),
        version,
        offset,
    }))
}

/// The answer to a `GET` of bytes `[start, end)`.
pub(super) enum Ranged {
    /// 206: exactly those bytes (the body), of this version of the file.
    Part {
        body: Box<dyn Read + Send>,
        version: Version,
    },
    /// 200: the server ignores ranges, or `If-Range` did not match (the file changed).
    Whole,
}

/// `GET` of bytes `[start, end)`, with `If-Range` when `validator` is given (so another
/// version of the file is never spliced in: the server answers 200, [`Ranged::Whole`]).
pub(super) fn get_range(
    source: &Source,
    options: &Options,
    (start, end): (u64, u64),
    validator: Option<&str>,
) -> Result<Ranged, Failure> {
    let mut request = agent(source, options)?
        .get(source.url.to_string())
        .header("Range", format!("bytes={start}-{}", end - 1));
    if let Some(login) = &source.login {
        request = request.header("Authorization", authorization(login));
    }
    if let Some(validator) = validator {
        request = request.header("If-Range", validator);
    }
    let response = request.call().map_err(failure)?;
    let status = response.status();
    let headers = response.headers();
    match status.as_u16() {
        206 => {
            let (sent, total) = text(headers, "content-range")
                .as_deref()
                .and_then(content_range)
                .ok_or_else(|| Failure::Refused("a 206 answer without Content-Range".into()))?;
            if sent != start {
                return Err(Failure::Refused(format!(
                    "asked for bytes from {start}, the server sent from {sent}"
                )));
            }
            let version = Version {
                size: total,
                modified: text(headers, "last-modified"),
                etag: text(headers, "etag"),
            };
            let body = response.into_body().into_reader().take(end - start);
            Ok(Ranged::Part {
                body: Box::new(body),
                version,
            })
        }
        200 => Ok(Ranged::Whole),
        _ => Err(refusal(status, headers, source.login.as_ref())),
    }
}

/// What `If-Range` can carry for `version` (see [`validator`]).
pub(super) fn if_range(version: &Version) -> Option<String> {
    validator(version).map(str::to_string)
}

impl Read for HttpDownload {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

impl Download for HttpDownload {
    fn version(&self) -> &Version {
        &self.version
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    /// One response is one version: nothing more to ask.
    fn finish(self: Box<Self>) -> Result<Version, Failure> {
        Ok(self.version)
    }
}

/// PUTs `size` bytes from `local` to `url`. HTTP has no rename, so this writes the final
/// name directly; the server decides when the file appears (ours in the tests stores to a
/// temporary name and renames when the body is whole).
pub(super) fn upload(
    source: &Source,
    local: &mut dyn Read,
    size: u64,
    options: &Options,
) -> Result<(), Failure> {
    let (url, login) = (&source.url, source.login.as_ref());
    let mut request = agent(source, options)?
        .put(url.to_string())
        .header("Content-Length", size.to_string());
    if let Some(login) = login {
        request = request.header("Authorization", authorization(login));
    }
    let response = request
        .send(ureq::SendBody::from_reader(local))
        .map_err(failure)?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(refusal(status, response.headers(), login)),
    }
}

/// The body of a `GET` of the directory `url` (a web server's index page), at most
/// `limit` bytes.
pub(super) fn index_page(
    source: &Source,
    options: &Options,
    limit: u64,
) -> Result<String, Failure> {
    let (url, login) = (&source.url, source.login.as_ref());
    let mut request =
        agent(source, options)?.get(format!("{}/", url.to_string().trim_end_matches('/')));
    if let Some(login) = login {
        request = request.header("Authorization", authorization(login));
    }
    let response = request.call().map_err(failure)?;
    let status = response.status();
    if !status.is_success() {
        return Err(refusal(status, response.headers(), login));
    }
    let mut body = String::new();
    response
        .into_body()
        .into_reader()
        .take(limit)
        .read_to_string(&mut body)
        .map_err(|e| Failure::io(&e))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_ranges() {
        let cases = [
            ("bytes 100-199/200", Some((100, Some(200)))),
            ("bytes 0-0/*", Some((0, None))),
            ("bytes */200", None),
            ("items 1-2/3", None),
        ];
        for (value, want) in cases {
            assert_eq!(content_range(value), want, "{value}");
        }
    }

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let version = |etag: Option<&str>, modified: Option<&str>| Version {
            size: Some(1),
            etag: etag.map(str::to_string),
            modified: modified.map(str::to_string),
        };
        let date = "Wed, 25 Nov 2026 13:00:00 GMT";
        assert_eq!(
            validator(&version(Some("\"a\""), Some(date))),
            Some("\"a\"")
        );
        assert_eq!(validator(&version(Some("W/\"a\""), Some(date))), Some(date));
        assert_eq!(validator(&version(Some("W/\"a\""), None)), None);
    }
}
