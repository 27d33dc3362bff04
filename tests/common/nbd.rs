//! A disk with a volatile write cache, for QEMU: an NBD server of the test's own over a
//! disk file. A write the guest has not flushed stays in the server's memory; a flush
//! (or a write with FUA) puts it in the file. [`LossyDisk::power_cut`], called after QEMU
//! is killed, keeps the smaller half of the write requests not flushed and drops the
//! larger — what a real disk's cache, which writes back in any order, may do when the
//! power goes, and what killing QEMU over a plain file never does (the host keeps every
//! write). So a small record written with no flush after its bulk data survives it.
//! [`LossyDisk::cut_at_next_flush`] picks the moment: the power goes as the guest asks
//! for a flush with writes pending, so the cut always loses something.
//!
//! The NBD protocol's fixed newstyle handshake, `NBD_OPT_GO` only, and simple replies
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const SECTOR: u64 = 512;
const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const OPT_ABORT: u32 = 2;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const INFO_EXPORT: u16 = 0;
const TRANSMIT_HAS_FLAGS: u16 = 1;
const TRANSMIT_SEND_FLUSH: u16 = 1 << 2;
const TRANSMIT_SEND_FUA: u16 = 1 << 3;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_FLAG_FUA: u16 = 1;
const EINVAL: u32 = 22;

/// The disk file and the sectors written since the last flush.
struct Disk {
    file: File,
    size: u64,
    /// Sector -> (the write request that put it there, its bytes).
    unflushed: BTreeMap<u64, (u64, Vec<u8>)>,
    writes: u64,
    flushes: u64,
    /// The next flush with at least this many sectors pending cuts the power.
    armed: Option<usize>,
    /// Arms the cut (with its `pending`) at the first write whose bytes hold these.
    armed_by: Option<(Vec<u8>, usize)>,
    /// The power is cut: no request is served any more.
    cut: bool,
    /// The disk does not answer: every request waits until this is false again.
    hung: bool,
}

impl Disk {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for (&sector, (_, data)) in self.unflushed.range(offset / SECTOR..end.div_ceil(SECTOR)) {
            let at = sector * SECTOR;
            let (from, to) = (at.max(offset), (at + SECTOR).min(end));
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    /// Puts `data` in the cache, sector by sector (a partial sector is merged with what
    /// the disk reads there now).
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.writes += 1;
        let end = offset + data.len() as u64;
        for sector in offset / SECTOR..end.div_ceil(SECTOR) {
            let at = sector * SECTOR;
            let mut bytes = vec![0; SECTOR as usize];
            let (from, to) = (at.max(offset), (at + SECTOR).min(end));
            if from != at || to != at + SECTOR {
                self.read(at, &mut bytes)?;
            }
            bytes[(from - at) as usize..(to - at) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            self.unflushed.insert(sector, (self.writes, bytes));
        }
        Ok(())
    }

    /// Writes the cached sectors in `range` (all with `..`) to the file.
    fn flush(&mut self, range: impl std::ops::RangeBounds<u64>) -> io::Result<()> {
        let sectors: Vec<u64> = self.unflushed.range(range).map(|(&s, _)| s).collect();
        self.write_back(sectors)
    }

    fn write_back(&mut self, sectors: impl IntoIterator<Item = u64>) -> io::Result<()> {
        for sector in sectors {
            let (_, bytes) = self.unflushed.remove(&sector).unwrap();
            self.file.write_all_at(&bytes, sector * SECTOR)?;
        }
        Ok(())
    }
}

/// An NBD server on 127.0.0.1 over one disk file, serving one connection at a time.
pub struct LossyDisk {
    disk: Arc<Shared>,
    port: u16,
}

/// The disk, and the signal that the armed cut came.
struct Shared {
    disk: Mutex<Disk>,
    cut: Condvar,
}

impl LossyDisk {
    pub fn serve(path: &Path) -> LossyDisk {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("opening the disk for the NBD server");
        let size = file.metadata().unwrap().len();
        let disk = Arc::new(Shared {
            disk: Mutex::new(Disk {
                file,
                size,
                unflushed: BTreeMap::new(),
                writes: 0,
                flushes: 0,
                armed: None,
                armed_by: None,
                cut: false,
                hung: false,
            }),
            cut: Condvar::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::clone(&disk);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                // A connection ends when QEMU goes (killed or done): wait for the next.
                let _ = connection(stream, &served);
            }
        });
        LossyDisk { disk, port }
    }

    /// QEMU's `file=` for this disk.
    pub fn url(&self) -> String {
        format!("nbd://127.0.0.1:{}", self.port)
    }

    /// Waits (at most `timeout`) for the guest's next flush with at least `pending`
    /// sectors (at least one) written since the last, and cuts the power there: that
    /// flush is never done nor answered, and nothing after it is served. False when no
    /// such flush came in time.
    pub fn cut_at_next_flush(&self, pending: usize, timeout: Duration) -> bool {
        self.disk.disk.lock().unwrap().armed = Some(pending.max(1));
        self.wait_for_cut(timeout)
    }

    /// As [`LossyDisk::cut_at_next_flush`], but the wait for that flush starts at the
    /// guest's first write whose bytes hold `needle` (a step-log entry, say): the cut
    /// comes as the guest makes that write durable, however fast the guest runs. Call
    /// before the boot; then [`LossyDisk::wait_for_cut`].
    pub fn cut_at_flush_after_writing(&self, needle: &[u8], pending: usize) {
        self.disk.disk.lock().unwrap().armed_by = Some((needle.to_vec(), pending.max(1)));
    }

    /// Waits (at most `timeout`) for the armed cut; false when it did not come in time.
    pub fn wait_for_cut(&self, timeout: Duration) -> bool {
        let disk = self.disk.disk.lock().unwrap();
        let (disk, _) = self
            .disk
            .cut
            .wait_timeout_while(disk, timeout, |disk| !disk.cut)
            .unwrap();
        disk.cut
    }

    /// The disk stops answering (`true`): each request, once read, waits unanswered
    /// until it answers again (`false`) — a controller or firmware that hangs.
    pub fn hang(&self, hung: bool) {
        self.disk.disk.lock().unwrap().hung = hung;
    }

    /// A clean shutdown (after QEMU is gone): every write not flushed reaches the file,
    /// and nothing more is served.
    pub fn shut_down(&self) {
        let mut disk = self.disk.disk.lock().unwrap();
        disk.cut = true;
        disk.flush(..).expect("writing the cache to the disk file");
    }

    /// The power goes (after QEMU is killed): of the write requests not flushed, the
    /// smaller half (rounded down; of equal ones the newer) reaches the disk and the rest
    /// is lost. Returns the sectors lost and kept, and the flushes the guest made before.
    pub fn power_cut(&self) -> (usize, usize, u64) {
        let mut disk = self.disk.disk.lock().unwrap();
        disk.cut = true;
        // Write request -> its sectors still pending (a later write may have taken some).
        let mut requests = BTreeMap::<u64, Vec<u64>>::new();
        for (&sector, (write, _)) in &disk.unflushed {
            requests.entry(*write).or_default().push(sector);
        }
        let mut requests: Vec<(u64, Vec<u64>)> = requests.into_iter().collect();
        requests.sort_by_key(|(write, sectors)| (sectors.len(), std::cmp::Reverse(*write)));
        let half = requests.len() / 2;
        let kept: Vec<u64> = (requests.into_iter().take(half))
            .flat_map(|(_, sectors)| sectors)
            .collect();
        let kept_count = kept.len();
        disk.write_back(kept)
            .expect("writing the kept sectors to the disk file");
        let lost = disk.unflushed.len();
        disk.unflushed.clear();
        (lost, kept_count, std::mem::take(&mut disk.flushes))
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn option_reply(s: &mut TcpStream, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut reply = Vec::with_capacity(20 + data.len());
    reply.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    reply.extend_from_slice(&option.to_be_bytes());
    reply.extend_from_slice(&kind.to_be_bytes());
    reply.extend_from_slice(&(data.len() as u32).to_be_bytes());
    reply.extend_from_slice(data);
    s.write_all(&reply)
}

fn connection(mut s: TcpStream, shared: &Shared) -> io::Result<()> {
    let disk = &shared.disk;
    s.set_nodelay(true)?;
    let mut hello = b"NBDMAGIC".to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut client_flags = [0; 4];
    s.read_exact(&mut client_flags)?;
    // Options until NBD_OPT_GO; every other one is unsupported (QEMU then does without).
    loop {
        let mut head = [0; 16];
        s.read_exact(&mut head)?;
        if u64_at(&head, 0) != IHAVEOPT {
            return Err(io::Error::other("not an NBD option"));
        }
        let (option, len) = (u32_at(&head, 8), u32_at(&head, 12) as usize);
        let mut data = vec![0; len];
        s.read_exact(&mut data)?;
        match option {
            OPT_GO => {
                let size = disk.lock().unwrap().size;
                let flags = TRANSMIT_HAS_FLAGS | TRANSMIT_SEND_FLUSH | TRANSMIT_SEND_FUA;
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&flags.to_be_bytes());
                option_reply(&mut s, option, REP_INFO, &info)?;
                option_reply(&mut s, option, REP_ACK, &[])?;
                break;
            }
            OPT_ABORT => return Ok(()),
            _ => option_reply(&mut s, option, REP_ERR_UNSUP, &[])?,
        }
    }
    let mut buf = Vec::new();
    loop {
        let mut request = [0; 28];
        s.read_exact(&mut request)?;
        if u32_at(&request, 0) != REQUEST_MAGIC {
            return Err(io::Error::other("not an NBD request"));
        }
        let (flags, command, handle) = (u16_at(&request, 4), u16_at(&request, 6), &request[8..16]);
        let (offset, len) = (u64_at(&request, 16), u32_at(&request, 24) as usize);
        while disk.lock().unwrap().hung {
            std::thread::sleep(Duration::from_millis(20));
        }
        if disk.lock().unwrap().cut {
            return Ok(());
        }
        let mut reply = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        let in_range = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= disk.lock().unwrap().size);
        buf.resize(len, 0);
        let error = match command {
            CMD_READ | CMD_WRITE if !in_range => {
                if command == CMD_WRITE {
                    s.read_exact(&mut buf)?;
                }
                EINVAL
            }
            CMD_READ => {
                disk.lock().unwrap().read(offset, &mut buf)?;
                0
            }
            CMD_WRITE => {
                s.read_exact(&mut buf)?;
                let mut disk = disk.lock().unwrap();
                disk.write(offset, &buf)?;
                let found = (disk.armed_by.as_ref())
                    .is_some_and(|(needle, _)| buf.windows(needle.len()).any(|w| w == needle));
                if found {
                    disk.armed = disk.armed_by.take().map(|(_, pending)| pending);
                }
                if flags & CMD_FLAG_FUA != 0 {
                    disk.flush(offset / SECTOR..(offset + len as u64).div_ceil(SECTOR))?;
                }
                0
            }
            CMD_FLUSH => {
                let mut disk = disk.lock().unwrap();
                if disk
                    .armed
                    .is_some_and(|pending| disk.unflushed.len() >= pending)
                {
                    disk.cut = true;
                    shared.cut.notify_all();
                    return Ok(());
                }
                disk.flush(..)?;
                disk.flushes += 1;
                0
            }
            CMD_DISC => return Ok(()),
            _ => EINVAL,
        };
        reply.extend_from_slice(&error.to_be_bytes());
        reply.extend_from_slice(handle);
        if command == CMD_READ && error == 0 {
            reply.extend_from_slice(&buf);
        }
        s.write_all(&reply)?;
    }
}
