//! Resume: an apply that fails mid-way reports a checkpoint; resumed from it, the target
//! ends byte-identical and no chunk before the checkpoint is written again.

mod image_support;

use image_support::*;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::time::Duration;

use reprov::image::{self, ApplyOptions, CheckpointError, MIN_CHUNK_SIZE};
use reprov::io::{SyncAll, ZeroRange};

/// A file target that records the offset of every write and zeroing, and fails every
/// write or zeroing at or past `fail_from`.
struct Recording {
    file: File,
    pos: u64,
    fail_from: u64,
    touched: Vec<u64>,
}

impl Recording {
    fn new(file: File, fail_from: u64) -> Self {
        Recording {
            file,
            pos: 0,
            fail_from,
            touched: Vec::new(),
        }
    }

    fn touch(&mut self, offset: u64) -> io::Result<()> {
        if offset >= self.fail_from {
            return Err(io::Error::other("simulated power cut"));
        }
        self.touched.push(offset);
        Ok(())
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.touch(self.pos)?;
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Recording {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(pos)?;
        Ok(self.pos)
    }
}

impl SyncAll for Recording {
    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl ZeroRange for Recording {
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.touch(offset)?;
        self.file.zero_range(offset, len)
    }
}

#[test]
fn resumes_from_the_checkpoint_without_rewriting_earlier_chunks() {
    let k = MIN_CHUNK_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("dst"),
    );
    let size = 20 * k + 333;
    let mut source = varied_source(&src, size, 5);
    write_at(&mut source, 0, &Rng::new(2).bytes(12 * k as usize));
    drop(source);
    let made = create_image(&src, &img, k);
    let count = made.chunks.len() as u64;
    random_target(&dst, size, 6);
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dst)
            .unwrap()
    };

    // First run: the target fails at chunk 9, as a power cut would.
    let fail_at = 9;
    let mut checkpoints = Vec::new();
    let mut record = |n: u64| -> Result<(), CheckpointError> {
        checkpoints.push(n);
        Ok(())
    };
    let mut target = Recording::new(open(), fail_at * k);
    let err = image::apply(
        &mut File::open(&img).unwrap(),
        &mut target,
        &mut ApplyOptions {
            checkpoint_every: Duration::ZERO,
            on_checkpoint: Some(&mut record),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("simulated power cut"), "{err}");
    let checkpoint = *checkpoints.last().unwrap();
    assert_eq!(
        checkpoint, fail_at,
        "every chunk before the failure is durable"
    );

    // Second run from the checkpoint: ends identical, writes nothing before it.
    let mut target = Recording::new(open(), u64::MAX);
    let mut last = 0;
    let mut record = |n: u64| -> Result<(), CheckpointError> {
        last = n;
        Ok(())
    };
    image::apply(
        &mut File::open(&img).unwrap(),
        &mut target,
        &mut ApplyOptions {
            resume_from: checkpoint,
            on_checkpoint: Some(&mut record),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(last, count);
    let first = target.touched.iter().min().copied().unwrap();
    assert_eq!(first, checkpoint * k, "the resume starts at the checkpoint");
    let mut chunks: Vec<u64> = target.touched.iter().map(|o| o / k).collect();
    chunks.dedup();
    assert_eq!(
        chunks,
        (checkpoint..count).collect::<Vec<_>>(),
        "each later chunk once"
    );
    drop(target);
    assert_same_prefix(&src, &dst, size);
}
