//! The download and upload drivers, the same for FTP and HTTP: partial files, sidecars,
//! resuming, the final rename, progress and retries.

use super::config::{Source, StoreConfig};
use super::place::Place;
use super::url::{RemoteUrl, Scheme};
use super::{ftp, http, with_retries, Error, Failure, MinRate, Options, Progress, RateGuard};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};

/// What tells one version of a remote file from another, so a partial download is only
/// ever continued with bytes of the same file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Bytes in the whole file, when the server says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// FTP `MDTM` or HTTP `Last-Modified`, as the server wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// HTTP `ETag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// The sidecar of a partial file: which file (the URL, credentials-free by construction)
/// and which version of it the partial bytes are the start of.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    url: String,
    version: Version,
}

/// Where a download may resume: the partial file's length and the version it is from.
pub(super) struct Resume {
    pub offset: u64,
    pub version: Version,
}

/// An open download, from one protocol.
pub(super) trait Download: Read {
    /// The version being sent.
    fn version(&self) -> &Version;
    /// Where in the file the bytes being sent start: the resume offset, or 0 when the
    /// server sends the whole file.
    fn offset(&self) -> u64;
    /// The files of the place this download copies from (a delta download's images), which
    /// must stay while it runs.
    fn sources(&self) -> Vec<String> {
        Vec::new()
    }
    /// Ends the transfer and returns the file's version as the server reports it now.
    fn finish(self: Box<Self>) -> Result<Version, Failure>;
}

/// The partial file and its sidecar for a download named `name`.
pub fn part_names(name: &str) -> (String, String) {
    (format!("{name}.part"), format!("{name}.part.toml"))
}

/// Fetches `source` into `place` as `name`, resuming a partial download left there by an
/// earlier call, and retrying a broken connection a few times. Writes `NAME.part` and its
/// sidecar while it runs; renames to `NAME` only once the whole file is there. Returns the
/// file's size.
pub fn download(
    source: &Source,
    place: &dyn Place,
    name: &str,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, Error> {
    with_retries("fetching", &source.url, options, || {
        attempt_download(source, place, name, options, progress)
    })
}

fn attempt_download(
    source: &Source,
    place: &dyn Place,
    name: &str,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, Failure> {
    let (part, meta) = part_names(name);
    let url = source.url.to_string();
    let resume = previous_part(place, &part, &meta, &url)?;
    let mut download = open(source, resume.as_ref(), options, place)?;
    let version = download.version().clone();
    let offset = download.offset();
    match (&resume, offset) {
        (Some(_), 0) => log::info!("fetching {url} from the start"),
        (Some(_), _) => log::info!("fetching {url}: resuming at byte {offset}"),
        (None, _) => log::info!("fetching {url}"),
    }
    // Room for what is to come before anything is written: a server fills the images
    // partition over months, and a fetch that stops at a full one helps no one. (What
    // is not resumed of an old partial file is cut off anyway: its room counts.)
    if let Some(size) = version.size {
        if offset == 0 {
            place.remove(&part)?;
        }
        place.make_room(name, size.saturating_sub(offset), &download.sources())?;
    }
    // The sidecar first: then whatever lands in the partial file is always described.
    let sidecar = Sidecar {
        url,
        version: version.clone(),
    };
    let sidecar = toml::to_string(&sidecar)
        .map_err(|e| local_error("writing", place.describe(&meta), std::io::Error::other(e)))?;
    place.write(&meta, sidecar.as_bytes())?;
    let done = {
        let mut file = place.open(&part)?;
        let writing = |e| local_error("writing", place.describe(&part), e);
        file.seek(SeekFrom::Start(offset)).map_err(writing)?;
        file.truncate_here().map_err(writing)?;
        let copied = copy(
            &mut download,
            &mut *file,
            offset,
            version.size,
            options.min_rate,
            progress,
        );
        // Keep what arrived even when the connection broke: the next attempt resumes there.
        file.flush().map_err(writing)?;
        let done = match copied {
            Ok(done) => done,
            Err(Broke::Reading(e)) => return Err(Failure::io(&e)),
            Err(Broke::Writing(e)) => return Err(writing(e)),
        };
        file.sync().map_err(writing)?;
        done
    };
    let now = download.finish()?;
    if now != version {
        place.remove(&part)?;
        place.remove(&meta)?;
        return Err(Failure::retry(
            "the file changed on the server during the download; starting over",
        ));
    }
    if let Some(size) = version.size {
        if done < size {
            return Err(Failure::retry(format!(
                "the transfer ended at byte {done} of {size}"
            )));
        }
        if done > size {
            place.remove(&part)?;
            place.remove(&meta)?;
            return Err(Failure::Refused(format!(
                "the server sent {done} bytes of a file it said has {size}"
            )));
        }
    }
    let on_disk = place.len(&part)?;
    if on_disk != Some(done) {
        return Err(local_error(
            "checking",
            place.describe(&part),
            std::io::Error::other(format!("it holds {on_disk:?} bytes, not {done}")),
        ));
    }
    place.rename(&part, name)?;
    place.remove(&meta)?;
    Ok(done)
}

fn local_error(what: &'static str, path: String, source: std::io::Error) -> Failure {
    Failure::Local(Error::Local { what, path, source })
}

/// What an earlier call left: a partial file of this same URL, and where to go on from.
/// Resumes at most from the last byte, so the server still confirms the version.
fn previous_part(
    place: &dyn Place,
    part: &str,
    meta: &str,
    url: &str,
) -> Result<Option<Resume>, Failure> {
    let Some(len) = place.len(part)? else {
        return Ok(None);
    };
    let sidecar = match place.read(meta)? {
        Some(bytes) => String::from_utf8(bytes)
            .ok()
            .and_then(|text| toml::from_str::<Sidecar>(&text).ok()),
        None => None,
    };
    let resume = match sidecar {
        Some(Sidecar { url: of, version }) if of == url => match version.size {
            Some(size) if len <= size => Some(Resume {
                offset: len.min(size.saturating_sub(1)),
                version,
            }),
            _ => None,
        },
        _ => None,
    };
    if resume.is_none() && len > 0 {
        log::info!(
            "{} is not a resumable part of {url}; starting over",
            place.describe(part)
        );
    }
    Ok(resume.filter(|r| r.offset > 0))
}

/// Opens the download: over HTTP by what is new when `place` holds images to reuse
/// (see `delta.rs`), else the whole file (FTP always).
fn open<'p>(
    source: &Source,
    resume: Option<&Resume>,
    options: &Options,
    place: &'p dyn Place,
) -> Result<Box<dyn Download + 'p>, Failure> {
    match source.url.scheme {
        Scheme::Ftp => ftp::open(source, resume, options),
        Scheme::Http => match super::delta::open(source, resume, options, place)? {
            Some(delta) => Ok(delta),
            None => http::open(source, resume, options),
        },
    }
}

/// Which side of a copy failed: reading the network is worth a retry, writing the
/// partial file is not.
enum Broke {
    Reading(std::io::Error),
    Writing(std::io::Error),
}

/// Copies the body into the partial file. Returns where the file now ends.
fn copy(
    from: &mut dyn Read,
    to: &mut dyn Write,
    mut done: u64,
    total: Option<u64>,
    min_rate: MinRate,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, Broke> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut rate = RateGuard::new(min_rate);
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Broke::Reading(e)),
        };
        rate.moved(n).map_err(Broke::Reading)?;
        to.write_all(&buffer[..n]).map_err(Broke::Writing)?;
        done = done.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        progress(Progress { done, total });
    }
}

/// Uploads `size` bytes of `local` to the store as `remote_name` (in the store's
/// directory), retrying a broken connection from the start (so `local` must seek). FTP:
/// stored as `NAME.part`, its size checked on the server, then renamed to `NAME`, so the
/// final name only ever holds a whole file. HTTP: one PUT to the final name — HTTP has no
/// rename, so a server that shows a half-received PUT under its name is the server's
/// doing. Returns the file's URL.
pub fn upload(
    local: &mut dyn ReadSeek,
    size: u64,
    remote_name: &str,
    config: &StoreConfig,
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<RemoteUrl, Error> {
    let source = config.at(remote_name)?;
    let url = source.url.clone();
    with_retries("uploading to", &url, options, || {
        local
            .seek(SeekFrom::Start(0))
            .map_err(|e| local_error("rewinding", "the file to upload".to_string(), e))?;
        let mut counting = Counting {
            inner: &mut *local,
            done: 0,
            total: size,
            progress: &mut *progress,
            rate: RateGuard::new(options.min_rate),
        };
        match url.scheme {
            Scheme::Ftp => ftp::upload(&source, &mut counting, size, options),
            Scheme::Http => http::upload(&source, &mut counting, size, options),
        }
    })?;
    Ok(url)
}

/// What [`upload`] reads from.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// Reads at most `total` bytes and reports progress as it goes.
struct Counting<'a> {
    inner: &'a mut dyn ReadSeek,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
    /// The server takes what is read here as fast as it receives it.
    rate: RateGuard,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.total - self.done).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = self.inner.read(&mut buf[..want])?;
        self.rate.moved(n)?;
        self.done += u64::try_from(n).unwrap_or(u64::MAX);
        (self.progress)(Progress {
            done: self.done,
            total: Some(self.total),
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::DirPlace;

    const URL: &str = "ftp://h/images/B.img";

    fn sidecar(url: &str, size: Option<u64>) -> String {
        let version = Version {
            size,
            modified: Some("20261125130000".into()),
            etag: None,
        };
        toml::to_string(&Sidecar {
            url: url.into(),
            version,
        })
        .unwrap()
    }

    /// What an earlier call left → where the next one resumes (None: from the start).
    #[test]
    fn resumes_only_a_part_of_the_same_file() {
        let cases = [
            (Some(100), Some(sidecar(URL, Some(300))), Some(100)),
            (Some(300), Some(sidecar(URL, Some(300))), Some(299)),
            (Some(0), Some(sidecar(URL, Some(300))), None),
            (Some(400), Some(sidecar(URL, Some(300))), None),
            (Some(100), Some(sidecar(URL, None)), None),
            (
                Some(100),
                Some(sidecar("ftp://h/images/A.img", Some(300))),
                None,
            ),
            (Some(100), Some("not toml [".into()), None),
            (Some(100), None, None),
            (None, Some(sidecar(URL, Some(300))), None),
        ];
        for (part_len, meta, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let place = DirPlace::new(dir.path());
            let (part, meta_name) = part_names("B.img");
            if let Some(len) = part_len {
                place.write(&part, &vec![1u8; len]).unwrap();
            }
            if let Some(text) = &meta {
                place.write(&meta_name, text.as_bytes()).unwrap();
            }
            let resume = previous_part(&place, &part, &meta_name, URL).unwrap();
            assert_eq!(resume.map(|r| r.offset), want, "{part_len:?} {meta:?}");
        }
    }

    #[test]
    fn sidecars_round_trip() {
        let text = sidecar(URL, Some(300));
        let back: Sidecar = toml::from_str(&text).unwrap();
        assert_eq!(back.url, URL);
        assert_eq!(back.version.size, Some(300));
        assert_eq!(back.version.etag, None);
    }
}
