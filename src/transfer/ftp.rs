//! FTP with suppaftp, and FTPS (explicit TLS: `AUTH TLS`, then `PROT P` so the data
//! connections are encrypted too; rustls, the server checked as for HTTPS): binary mode,
//! passive data connections to the control connection's host (right behind NAT, e.g. QEMU
//! user networking), `REST` to resume, `SIZE` and `MDTM` to tell versions apart, `STOR`
//! to a temporary name then `RNFR`/`RNTO`.

use super::config::Source;
use super::fetch::{Download, Resume, Version};
use super::{Error, Failure, Options};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use suppaftp::types::FileType;
use suppaftp::{
    FtpError, ImplFtpStream, RustlsConnector, RustlsFtpStream, Status, TlsStream, TransferStream,
};

/// Connects, for `ftps://` secures the connection before the login, and logs in
/// (anonymously without a login), in binary mode.
fn connect(source: &Source, options: &Options) -> Result<RustlsFtpStream, Failure> {
    let (url, login) = (&source.url, source.login.as_ref());
    let address = url
        .authority()
        .to_socket_addrs()
        .map_err(|e| Failure::retry(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| Failure::retry(format!("{} has no address", url.host)))?;
    let timeout = options.timeout;
    // Timeouts on every socket, set before the first read: a server that accepts and then
    // says nothing (not even its greeting) must not hang us.
    let connect = move |address| {
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok::<_, std::io::Error>(stream)
    };
    let control = connect(address).map_err(|e| Failure::io(&e))?;
    let mut ftp = RustlsFtpStream::connect_with_stream(control).map_err(failure)?;
    if url.tls {
        // Before the login: the password never crosses in the clear.
        let connector = RustlsConnector::from(source.tls.rustls_config()?);
        ftp = ftp.into_secure(connector, &url.host).map_err(|e| match e {
            FtpError::SecureError(why) => Failure::Refused(format!("TLS failed: {why}")),
            FtpError::UnexpectedResponse(reply) => Failure::Refused(format!(
                "the server does not offer TLS (it answered AUTH TLS with {}); is it an FTPS \
                 server? check the store's url",
                reply_text(&reply)
            )),
            other => failure(other),
        })?;
    }
    // Data connections go to the control connection's host, whatever PASV says.
    ftp.set_passive_nat_workaround(true);
    let mut ftp = ftp
        .passive_stream_builder(move |address| connect(address).map_err(FtpError::ConnectionError));
    let (user, password) = match login {
        Some(login) => (login.user.as_str(), login.password.expose()),
        None => ("anonymous", "reprov@"),
    };
    ftp.login(user, password).map_err(|e| match e {
        FtpError::UnexpectedResponse(reply) if reply.status == Status::NotLoggedIn => {
            Failure::Refused(format!(
                "the server refused the login as {user:?} ({}); check user and password_file",
                reply_text(&reply)
            ))
        }
        other => failure(other),
    })?;
    ftp.transfer_type(FileType::Binary).map_err(failure)?;
    Ok(ftp)
}

fn reply_text(reply: &suppaftp::types::Response) -> String {
    String::from_utf8_lossy(&reply.body).trim().to_string()
}

/// Sorts an FTP error: 4xx replies and broken connections are worth a retry, other
/// replies are refusals.
fn failure(error: FtpError) -> Failure {
    match error {
        FtpError::ConnectionError(e) => Failure::io(&e),
        FtpError::UnexpectedResponse(reply) => {
            let text = reply_text(&reply);
            match reply.status.code() {
                400..=499 => Failure::retry(format!("the server answered {text}")),
                _ => Failure::Refused(format!("the server answered {text}")),
            }
        }
        other => Failure::Refused(other.to_string()),
    }
}

/// The file's size and modification time; a missing file is a refusal.
fn version<T: TlsStream>(ftp: &mut ImplFtpStream<T>, path: &str) -> Result<Version, Failure> {
    let size = match ftp.size(path) {
        Ok(size) => u64::try_from(size).ok(),
        Err(FtpError::UnexpectedResponse(reply)) if reply.status == Status::FileUnavailable => {
            return Err(Failure::Refused(format!(
                "not found on the server ({})",
                reply_text(&reply)
            )))
        }
        Err(e) => return Err(failure(e)),
    };
    // MDTM is optional in FTP; without it, SIZE alone tells versions apart.
    let modified = match ftp.mdtm(path) {
        Ok(time) => Some(time.format("%Y%m%d%H%M%S").to_string()),
        Err(FtpError::UnexpectedResponse(reply)) if reply.status.code() >= 500 => None,
        Err(e) => return Err(failure(e)),
    };
    Ok(Version {
        size,
        modified,
        etag: None,
    })
}

/// A `RETR` under way (generic only because suppaftp does not export its plain stream type).
pub(super) struct FtpDownload<T: TlsStream> {
    ftp: ImplFtpStream<T>,
    data: TransferStream<T>,
    path: String,
    version: Version,
    offset: u64,
}

/// Logs in, reads the file's version and starts `RETR`, with `REST` when `resume` is of
/// the same version.
pub(super) fn open(
    source: &Source,
    resume: Option<&Resume>,
    options: &Options,
) -> Result<Box<dyn Download>, Failure> {
    let mut ftp = connect(source, options)?;
    let path = source.url.path.clone();
    let version = version(&mut ftp, &path)?;
    let offset = match resume {
        Some(resume) if resume.version == version => resume.offset,
        Some(_) => {
            log::info!(
                "{} changed on the server since the partial download; starting over",
                source.url
            );
            0
        }
        None => 0,
    };
    if offset > 0 {
        let offset = usize::try_from(offset)
            .map_err(|_| Failure::Refused(format!("offset {offset} is too large")))?;
        ftp.resume_transfer(offset).map_err(failure)?;
    }
    let data = ftp.retr_as_stream(&path).map_err(failure)?;
    Ok(Box::new(FtpDownload {
        ftp,
        data,
        path,
        version,
        offset,
    }))
}

impl<T: TlsStream> Read for FtpDownload<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.data.read(buf)
    }
}

impl<T: TlsStream> Download for FtpDownload<T> {
    fn version(&self) -> &Version {
        &self.version
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn finish(self: Box<Self>) -> Result<Version, Failure> {
        let FtpDownload {
            mut ftp,
            data,
            path,
            ..
        } = *self;
        data.finish().map_err(failure)?;
        // Asked again after the transfer: a file rewritten while it was sent is caught here.
        let now = version(&mut ftp, &path)?;
        quit(ftp);
        Ok(now)
    }
}

/// Says goodbye; a failure here cannot harm a transfer that is already complete.
fn quit<T: TlsStream>(mut ftp: ImplFtpStream<T>) {
    if let Err(e) = ftp.quit() {
        log::debug!("closing the FTP session: {e}");
    }
}

/// Creates the directories above `path` one by one (`fleet/status/` on a fresh store). A
/// refusal is most often "exists"; a real problem shows in the `STOR` that follows.
fn make_parents<T: TlsStream>(ftp: &mut ImplFtpStream<T>, path: &str) {
    let mut dir = String::new();
    let parents: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for segment in parents.iter().take(parents.len().saturating_sub(1)) {
        dir = format!("{dir}/{segment}");
        if let Err(e) = ftp.mkdir(&dir) {
            log::debug!("MKD {dir}: {e}");
        }
    }
}

/// The names of the files in the directory `url` (`NLST`). A 550 reply (no such
/// directory) is the refusal "not found on the server", as for a missing file.
pub(super) fn list(source: &Source, options: &Options) -> Result<Vec<String>, Failure> {
    let url = &source.url;
    let mut ftp = connect(source, options)?;
    let names = ftp.nlst(Some(&url.path)).map_err(|e| match e {
        FtpError::UnexpectedResponse(reply) if reply.status == Status::FileUnavailable => {
            Failure::Refused(format!("not found on the server ({})", reply_text(&reply)))
        }
        other => failure(other),
    })?;
    quit(ftp);
    Ok(names
        .iter()
        .filter_map(|n| n.trim_end().rsplit('/').next().map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect())
}

/// Stores `size` bytes from `local` as `url`'s path + `.part`, checks the size the server
/// holds, then renames it to the final name.
pub(super) fn upload(
    source: &Source,
    local: &mut dyn Read,
    size: u64,
    options: &Options,
) -> Result<(), Failure> {
    let url = &source.url;
    let mut ftp = connect(source, options)?;
    make_parents(&mut ftp, &url.path);
    let temp = format!("{}.part", url.path);
    let mut data = ftp.put_with_stream(&temp).map_err(failure)?;
    let mut buffer = vec![0u8; 256 << 10];
    let mut sent = 0u64;
    loop {
        let n = local.read(&mut buffer).map_err(|source| {
            Failure::Local(Error::Local {
                what: "reading",
                path: "the file to upload".to_string(),
                source,
            })
        })?;
        if n == 0 {
            break;
        }
        data.write_all(&buffer[..n]).map_err(|e| Failure::io(&e))?;
        sent += u64::try_from(n).unwrap_or(u64::MAX);
    }
    data.flush().map_err(|e| Failure::io(&e))?;
    data.finish().map_err(failure)?;
    if sent != size {
        return Err(Failure::Local(Error::Local {
            what: "reading",
            path: "the file to upload".to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("it ended at byte {sent} of {size}"),
            ),
        }));
    }
    let stored = ftp.size(&temp).map_err(failure)?;
    if u64::try_from(stored).ok() != Some(size) {
        return Err(Failure::retry(format!(
            "the server holds {stored} of {size} bytes after the upload"
        )));
    }
    ftp.rename(&temp, &url.path).map_err(failure)?;
    quit(ftp);
    Ok(())
}
