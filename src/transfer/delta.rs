//! Fetching an image over HTTP(S) by what is new in it: the manifest first (two range
//! requests), then only the data chunks whose SHA-256 no image already in the place has;
//! the rest is copied from those images. The file is assembled in order, byte for byte
//! the remote one, so the download driver (partial file, sidecar, resume, rename) is the
//! same as for a whole download: this is just another [`Download`].
//!
//! It applies only when it can be exact: the server answers ranges, the image is a
//! version 3 reprov image (SHA-256 per chunk) whose manifest header is the one reprov
//! writes (so the chunk headers, made the same way, can be made here), and a local
//! chunk is reused only with the same codec and stored length, after its content is
//! checked against the SHA-256. Otherwise the whole file is fetched.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

use super::config::Source;
use super::fetch::{Download, Resume, Version};
use super::http::{self, Ranged};
use super::place::Place;
use super::{Failure, Options};
use crate::image::{self, Kind, Manifest, MANIFEST_PATH, MAX_MANIFEST_LEN};
use crate::units::format_size;

/// tar's block: the probe asks for the first one, the manifest's header.
const BLOCK: u64 = 512;

/// Where a run of the file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    /// Already here (the header and manifest, fetched first).
    Memory(usize),
    /// The server, at the same offsets.
    Remote,
    /// Chunk `index` of the remote image, whose bytes local image `held` holds at
    /// `offset` (`stored` bytes, as the remote).
    Local {
        held: usize,
        offset: u64,
        index: u64,
    },
}

/// Where an image here holds a chunk's stored bytes.
#[derive(Debug, Clone, Copy)]
struct Held {
    image: usize,
    offset: u64,
    stored: u64,
}

/// The chunks the images here hold, by the SHA-256 of their content and how they are
/// stored (compressed or raw: the same data, other bytes).
type HeldChunks = HashMap<([u8; 32], Kind), Held>;

#[derive(Debug)]
struct Run {
    start: u64,
    end: u64,
    from: From,
}

/// A delta download under way.
struct Delta<'p> {
    source: Source,
    options: Options,
    place: &'p dyn Place,
    images: Vec<String>,
    head: Vec<u8>,
    manifest: Manifest,
    runs: Vec<Run>,
    version: Version,
    validator: Option<String>,
    offset: u64,
    /// Where the next byte read is, and the run being read now (its index and bytes).
    pos: u64,
    current: Option<(usize, Box<dyn Read + 'p>)>,
    fetched: u64,
}

/// A delta download of `source` into `place`, or `None` when a whole download is what
/// fits (nothing here to reuse, a server without ranges, not a reprov image it can
/// assemble exactly). Resumes at `resume` when it is of the same version.
pub(super) fn open<'p>(
    source: &Source,
    resume: Option<&Resume>,
    options: &Options,
    place: &'p dyn Place,
) -> Result<Option<Box<dyn Download + 'p>>, Failure> {
    let images = place.images()?;
    if images.is_empty() {
        return Ok(None);
    }
    let (first, version) = match http::get_range(source, options, (0, BLOCK), None)? {
        // A file shorter than a tar block is no image: fetched whole, like any file.
        Ranged::Part { version, .. } if version.size.map_or(true, |size| size <= BLOCK) => {
            return Ok(None)
        }
        Ranged::Part { mut body, version } => (read_all(&mut body, BLOCK)?, version),
        Ranged::Whole => {
            log::info!(
                "{}: the server ignores ranges; fetching the whole file",
                source.url
            );
            return Ok(None);
        }
    };
    let total = version.size.unwrap_or(0);
    let validator = http::if_range(&version);
    let header = tar::Header::from_byte_slice(&first);
    let manifest_len = match (header.path(), header.size()) {
        (Ok(path), Ok(len)) if path.as_os_str() == MANIFEST_PATH => len,
        _ => return Ok(None), // not an image: fetched whole, like any file
    };
    if manifest_len > MAX_MANIFEST_LEN || BLOCK + manifest_len > total {
        return Ok(None);
    }
    let text = match http::get_range(
        source,
        options,
        (BLOCK, BLOCK + manifest_len),
        validator.as_deref(),
    )? {
        Ranged::Part { mut body, .. } => read_all(&mut body, manifest_len)?,
        Ranged::Whole => return Err(changed()),
    };
    let Some(manifest) = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| Manifest::parse(t).ok())
    else {
        return Ok(None); // a whole download, which the image checks will judge
    };
    let ours = image::manifest_header(manifest_len, manifest.created).ok();
    if manifest.version < image::HASHED_VERSION || ours.as_ref().map(|h| &h[..]) != Some(&first[..])
    {
        log::info!(
            "{}: not laid out as reprov writes images; fetching it whole",
            source.url
        );
        return Ok(None);
    }
    let mut head = first;
    head.extend_from_slice(&text);
    head.resize(
        usize::try_from(image::entry_len(manifest_len)).expect("at most 16 MiB"),
        0,
    );
    let held = held_chunks(place, &images, &manifest)?;
    if held.is_empty() || validator.is_none() {
        // Nothing to reuse; or no ETag nor date, so ranges could splice versions.
        return Ok(None);
    }
    let Some(runs) = plan(&manifest, head.len(), &held, total) else {
        return Ok(None);
    };
    let offset = match resume {
        Some(r) if r.version == version => r.offset,
        _ => 0,
    };
    Ok(Some(Box::new(Delta {
        source: source.clone(),
        options: options.clone(),
        place,
        images,
        head,
        manifest,
        runs,
        version,
        validator,
        offset,
        pos: offset,
        current: None,
        fetched: BLOCK + manifest_len,
    })))
}

fn changed() -> Failure {
    Failure::retry("the file changed on the server during the download; starting over")
}

fn read_all(body: &mut dyn Read, len: u64) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    body.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::io(&e))?;
    if bytes.len() as u64 != len {
        return Err(Failure::retry("the server sent fewer bytes than asked"));
    }
    Ok(bytes)
}

/// Where the place's images hold each data chunk the remote manifest needs, by SHA-256
/// (images of the same codec only; a file that does not open as an image is passed over).
fn held_chunks(
    place: &dyn Place,
    images: &[String],
    wanted: &Manifest,
) -> Result<HeldChunks, Failure> {
    let mut held = HeldChunks::new();
    let mut missing: std::collections::HashSet<([u8; 32], Kind)> = wanted
        .chunks
        .iter()
        .filter_map(|c| Some((c.sha256?, c.kind)))
        .collect();
    for (i, name) in images.iter().enumerate() {
        if missing.is_empty() {
            break;
        }
        let mut file = place.open_read(name)?;
        let Ok(layout) = image::open(&mut file) else {
            continue;
        };
        if layout.manifest.codec != wanted.codec {
            continue;
        }
        for chunk in &layout.manifest.chunks {
            let key = chunk.sha256.map(|sha| (sha, chunk.kind));
            if let Some(key) = key.filter(|key| missing.contains(key)) {
                missing.remove(&key);
                let offset = layout.offset(chunk.index);
                let stored = chunk.stored;
                held.insert(
                    key,
                    Held {
                        image: i,
                        offset,
                        stored,
                    },
                );
            }
        }
    }
    Ok(held)
}

/// The file as runs, in order: the head (in memory), each data chunk's entry from a
/// local image when one holds it with the same stored length, the rest remote (adjacent
/// remote runs joined into one request). `None` when the manifest does not fit `total`.
fn plan(manifest: &Manifest, head: usize, held: &HeldChunks, total: u64) -> Option<Vec<Run>> {
    let mut runs = vec![Run {
        start: 0,
        end: head as u64,
        from: From::Memory(0),
    }];
    let mut pos = head as u64;
    for chunk in manifest.chunks.iter().filter(|c| c.kind.is_stored()) {
        let end = pos.checked_add(image::entry_len(chunk.stored))?;
        let from = match chunk.sha256.and_then(|sha| held.get(&(sha, chunk.kind))) {
            Some(h) if h.stored == chunk.stored => From::Local {
                held: h.image,
                offset: h.offset,
                index: chunk.index,
            },
            _ => From::Remote,
        };
        push(&mut runs, pos, end, from);
        pos = end;
    }
    if pos > total {
        return None;
    }
    push(&mut runs, pos, total, From::Remote); // the signature, the end of the archive
    Some(runs)
}

fn push(runs: &mut Vec<Run>, start: u64, end: u64, from: From) {
    match runs.last_mut() {
        Some(last) if last.from == From::Remote && from == From::Remote => last.end = end,
        _ if start < end => runs.push(Run { start, end, from }),
        _ => {}
    }
}

impl<'p> Delta<'p> {
    /// Opens what gives the bytes from `self.pos` on, to the end of its run (which
    /// `self.pos`, inside the file, is in: the runs cover it in order).
    fn open_run(&mut self, index: usize) -> std::io::Result<Box<dyn Read + 'p>> {
        let run = &self.runs[index];
        let skip = self.pos - run.start;
        let bytes = match run.from {
            From::Memory(_) => self.head[skip as usize..].to_vec(),
            From::Local {
                held,
                offset,
                index,
            } => match self.local_entry(held, offset, index)? {
                Some(entry) => entry[skip as usize..].to_vec(),
                None => return self.remote(self.pos, run.end),
            },
            From::Remote => return self.remote(self.pos, run.end),
        };
        Ok(Box::new(Cursor::new(bytes)))
    }

    fn remote(&mut self, start: u64, end: u64) -> std::io::Result<Box<dyn Read + 'p>> {
        self.fetched += end - start;
        let answer = http::get_range(
            &self.source,
            &self.options,
            (start, end),
            self.validator.as_deref(),
        );
        match answer {
            Ok(Ranged::Part { body, version }) if version == self.version => Ok(body),
            Ok(_) => Err(std::io::Error::other(
                "the file changed on the server during the download",
            )),
            Err(failure) => Err(std::io::Error::other(failure.to_string())),
        }
    }

    /// Chunk `index`'s whole tar entry made from a local image's bytes; `None` (fetch it
    /// instead) when they do not decompress to the chunk's SHA-256.
    fn local_entry(
        &self,
        held: usize,
        offset: u64,
        index: u64,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let mut file = self
            .place
            .open_read(&self.images[held])
            .map_err(|e| other(&e))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut stored = vec![0; self.manifest.chunks[index as usize].stored as usize];
        file.read_exact(&mut stored)?;
        let entry = image::chunk_entry(&self.manifest, index, &stored).map_err(|e| other(&e))?;
        if entry.is_none() {
            log::warn!(
                "{}: chunk {index} does not check out; fetching it",
                self.images[held]
            );
        }
        Ok(entry)
    }
}

impl Read for Delta<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let total = self.version.size.unwrap_or(0);
        while self.pos < total {
            if self.current.is_none() {
                let index = self.runs.partition_point(|r| r.end <= self.pos);
                let body = self.open_run(index)?;
                self.current = Some((index, body));
            }
            let (index, body) = self.current.as_mut().expect("opened above");
            let n = body.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            // The run ended: where the plan says, or the connection broke.
            if self.pos != self.runs[*index].end {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection broke in the middle of a range",
                ));
            }
            self.current = None;
        }
        Ok(0)
    }
}

impl Download for Delta<'_> {
    fn version(&self) -> &Version {
        &self.version
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn sources(&self) -> Vec<String> {
        let mut used: Vec<String> = (self.runs.iter())
            .filter_map(|run| match run.from {
                From::Local { held, .. } => self.images.get(held).cloned(),
                _ => None,
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    fn finish(self: Box<Self>) -> Result<Version, Failure> {
        let total = self.version.size.unwrap_or(0);
        log::info!(
            "fetch: {} of {} fetched, the rest reused",
            format_size(self.fetched),
            format_size(total)
        );
        Ok(self.version)
    }
}
