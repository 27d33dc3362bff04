//! The recovery console: a line-based menu on the serial console (stdin/stdout of PID 1),
//! for a person or a script. Actions that image reuse the job runner: the console writes
//! a job, then runs it. Every destructive choice says what it will do and asks for `yes`.
//! Wrong input is answered, never fatal; the console returns on EOF, reboot or power off.
//! Generic over its input and output, so tests drive it with scripted lines.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use super::menu::{self, Choice, MAX_LINE, MENU};
use super::runner::{self, Machine, FACTORY_DIR};
use super::Outcome;
use crate::disk::{open_disk, Role};
use crate::io::Show;
use crate::store::{ImageName, Job, Kind};

/// How the console ended: what PID 1 does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Reboot,
    PowerOff,
    /// The input ended.
    Eof,
}

/// The name of a created image when the machine has no model or serial number.
pub const CREATE_FALLBACK: &str = "nos.tar";
/// Log entries the status shows.
const STATUS_LOG_ENTRIES: usize = 5;

pub struct Console<'a, R, W> {
    input: R,
    out: W,
    device: PathBuf,
    machine: &'a Machine,
}

/// A line as typed: EOF, refused (why), or its text.
enum Line {
    Eof,
    Bad(String),
    Text(String),
}

impl<'a, R: BufRead, W: Write> Console<'a, R, W> {
    pub fn new(input: R, out: W, device: &Path, machine: &'a Machine) -> Self {
        Console {
            input,
            out,
            device: device.to_path_buf(),
            machine,
        }
    }

    /// The menu loop. Writes to the disk through the actions the operator confirms.
    /// Only a failing output ends it with an error.
    pub fn run(&mut self) -> crate::Result<Exit> {
        loop {
            self.say(&menu::render())?;
            let text = match self.ask("choice> ")? {
                Line::Eof => return Ok(Exit::Eof),
                Line::Bad(why) => {
                    self.say(&format!("{why}; type a number from the menu\n"))?;
                    continue;
                }
                Line::Text(text) => text,
            };
            let choice = match menu::pick(&text, MENU.len()) {
                Ok(i) => MENU[i].0,
                Err(why) => {
                    self.say(&format!("{why}\n"))?;
                    continue;
                }
            };
            match self.act(choice) {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) => {}
                Err(Stop::Eof) => return Ok(Exit::Eof),
                Err(Stop::Failed(e)) => self.say(&format!("error: {e}\n"))?,
            }
        }
    }

    fn act(&mut self, choice: Choice) -> Result<Option<Exit>, Stop> {
        match choice {
            Choice::Status => self.status().map(|()| None),
            Choice::ListImages => self.list_images().map(|_| None),
            Choice::Apply => self.apply(),
            Choice::Create => self.create(),
            Choice::Factory => self.factory(),
            Choice::ShowLog => self.show_log().map(|()| None),
            Choice::BootNos => self.boot_nos(),
            Choice::Reboot => Ok(Some(Exit::Reboot)),
            Choice::PowerOff => Ok(Some(Exit::PowerOff)),
            Choice::Verify => self.verify().map(|()| None),
            Choice::EditIdentity => self.edit_identity().map(|()| None),
        }
    }

    fn status(&mut self) -> Result<(), Stop> {
        let mut disk = open_disk(&self.device)?;
        let mut text = format!("disk {}\n", self.device.display());
        for role in [Role::System, Role::Nos, Role::Images, Role::Data] {
            let e = disk.entry(role);
            text.push_str(&format!(
                "  {:<7} slot {}  {:>10} at {:>10}  type 0x{:02x}{}{}\n",
                format!("{role:?}").to_lowercase(),
                role.slot(),
                crate::units::format_size(e.len()),
                crate::units::format_size(e.start()),
                e.ptype.0,
                if e.ptype.is_hidden() { "  hidden" } else { "" },
                if e.is_active() { "  active" } else { "" },
            ));
        }
        text.push_str(&format!(
            "  float after NOS: {}\n",
            crate::units::format_size(disk.float_len())
        ));
        let (job, log, identity) = disk.with_store(|store| {
            Ok((
                store.read_job()?,
                store.read_log()?,
                store.read_identity_text()?,
            ))
        })?;
        match job {
            Some(job) => text.push_str(&format!("job:\n{}", indent(&job.render()))),
            None => text.push_str("job: none\n"),
        }
        text.push_str("last log entries:\n");
        let skip = log.entries.len().saturating_sub(STATUS_LOG_ENTRIES);
        for entry in &log.entries[skip..] {
            text.push_str(&format!("  {}\n", log_line(entry)));
        }
        match identity {
            Some(bytes) => text.push_str(&format!(
                "saved identity:\n{}",
                indent(&String::from_utf8_lossy(&bytes))
            )),
            None => text.push_str("saved identity: none\n"),
        }
        Ok(self.say(&text)?)
    }

    /// Prints the images, numbered; returns their names.
    fn list_images(&mut self) -> Result<Vec<ImageName>, Stop> {
        let mut disk = open_disk(&self.device)?;
        let (_, nos_len) = disk.range(Role::Nos);
        let room = nos_len.saturating_add(disk.float_len());
        let rows = disk.with_store(|store| {
            let mut rows = Vec::new();
            for (name, size) in store.list_images()? {
                let Ok(name) = ImageName::new(&name) else {
                    continue;
                };
                let about = match store
                    .open_image(&name)
                    .map_err(crate::Error::from)
                    .and_then(|mut image| Ok(crate::image::open(&mut image)?.manifest))
                {
                    Ok(m) => format!(
                        "{}  {:?}  {} stored, NOS {}, created {}, {}",
                        name,
                        m.description,
                        crate::units::format_size(size),
                        crate::units::format_size(m.source_size),
                        m.created.date(),
                        if m.source_size <= room {
                            "fits NOS + float"
                        } else {
                            "does NOT fit NOS + float"
                        }
                    ),
                    Err(e) => format!("{name}  {} stored, unreadable: {e}", size),
                };
                rows.push((name, about));
            }
            Ok(rows)
        })?;
        if rows.is_empty() {
            self.say("no images on the images partition\n")?;
        }
        let mut text = String::new();
        for (i, (_, about)) in rows.iter().enumerate() {
            text.push_str(&format!("  {}) {about}\n", i + 1));
        }
        self.say(&text)?;
        Ok(rows.into_iter().map(|(name, _)| name).collect())
    }

    fn apply(&mut self) -> Result<Option<Exit>, Stop> {
        let names = self.list_images()?;
        if names.is_empty() {
            return Ok(None);
        }
        let Some(i) = self.pick("image> ", names.len())? else {
            return Ok(None);
        };
        let name = names[i].clone();
        let what = format!(
            "This writes {name} onto NOS, replacing what NOS holds now (a backup of it is made \
             when the images partition has room), restores the saved identity, and boots it."
        );
        self.run_job(Kind::Apply, name, &what)
    }

    /// A create job: the runner names the image after the machine's model and serial
    /// number, as every create job; [`CREATE_FALLBACK`] when the firmware has none.
    fn create(&mut self) -> Result<Option<Exit>, Stop> {
        let name = ImageName::new(CREATE_FALLBACK).expect("a valid image name");
        let what = format!(
            "This packs NOS into an image on the images partition, named after this machine's \
             model and serial number ({name} when it has none; a file of that name is \
             replaced), then boots NOS."
        );
        self.run_job(Kind::Create, name, &what)
    }

    fn factory(&mut self) -> Result<Option<Exit>, Stop> {
        let mut disk = open_disk(&self.device)?;
        let data = disk.mount(Role::Data)?;
        let listed = data.list_images_in(FACTORY_DIR);
        data.unmount()?;
        let Some(first) = listed?
            .into_iter()
            .map(|(name, _)| name)
            .find(|name| name.ends_with(".tar"))
        else {
            self.say(&format!(
                "no factory image in {FACTORY_DIR}/ on the data partition\n"
            ))?;
            return Ok(None);
        };
        let name = ImageName::new(&first).map_err(crate::Error::Usage)?;
        let what = format!(
            "This writes the factory image {name} onto NOS, replacing what NOS holds now, \
             restores the saved identity, and boots it."
        );
        self.run_job(Kind::Factory, name, &what)
    }

    /// Says what the job does, asks for `yes`, writes the job and runs it.
    fn run_job(&mut self, kind: Kind, name: ImageName, what: &str) -> Result<Option<Exit>, Stop> {
        if !self.confirm(what)? {
            return Ok(None);
        }
        let job = Job::new(kind, name, time::OffsetDateTime::now_utc());
        open_disk(&self.device)?.with_store(|store| Ok(store.write_job(&job)?))?;
        match runner::run(&self.device, self.machine) {
            Ok(Outcome::Done) => {
                self.say("done; rebooting\n")?;
                Ok(Some(Exit::Reboot))
            }
            Ok(Outcome::RolledBack) => {
                self.say(
                    "the job failed; the previous appliance is back (see the log); rebooting\n",
                )?;
                Ok(Some(Exit::Reboot))
            }
            Ok(Outcome::Retry) => {
                self.say(
                    "the job failed with nothing to roll back to (see the log); rebooting to try it again\n",
                )?;
                Ok(Some(Exit::Reboot))
            }
            Ok(Outcome::NoJob | Outcome::Console { .. }) => Ok(None),
            Err(e) => Err(Stop::Failed(e)),
        }
    }

    fn verify(&mut self) -> Result<(), Stop> {
        let names = self.list_images()?;
        if names.is_empty() {
            return Ok(());
        }
        let Some(i) = self.pick("image> ", names.len())? else {
            return Ok(());
        };
        let name = &names[i];
        // An image that does not open does not verify either: an answer, not an error.
        // Checked as a job's image would be: signed by a key this recovery trusts.
        let keys = self.machine.keys.as_ref().map_err(|why| {
            Stop::Failed(
                crate::trust::Error::BadKey {
                    path: crate::trust::KEYS_DIR.into(),
                    why: why.clone(),
                }
                .into(),
            )
        })?;
        let verified = open_disk(&self.device)?.with_store(|store| {
            Ok(store
                .open_image(name)
                .map_err(crate::Error::from)
                .and_then(|mut image| Ok(keys.verify_image(&mut image, Show::Console)?)))
        })?;
        let text = match verified {
            Ok((m, verdict)) => format!(
                "{name} verifies: {} chunks, every checksum good, NOS {}; {verdict}\n",
                m.chunks.len(),
                crate::units::format_size(m.source_size)
            ),
            Err(e) => format!("{name} does NOT verify: {e}\n"),
        };
        Ok(self.say(&text)?)
    }

    /// Changes the hostname and the first interface's address of the saved identity;
    /// the identity parser checks the result before it is saved. Writes the store.
    fn edit_identity(&mut self) -> Result<(), Stop> {
        let mut disk = open_disk(&self.device)?;
        // A closure, not the function item: it takes the store's borrow as it comes.
        #[allow(clippy::redundant_closure)]
        let loaded = disk.with_store(|store| crate::identity::load(store))?;
        let Some(current) = loaded else {
            self.say("no saved identity to edit (save one with reprov identity save)\n")?;
            return Ok(());
        };
        let mut table: toml::Table = toml::from_str(&current.to_toml())
            .map_err(|e| crate::Error::Usage(format!("re-reading the saved identity: {e}")))?;
        self.say(&format!("saved identity:\n{}", indent(&current.to_toml())))?;
        let hostname = match self.ask("new hostname (- keeps it)> ")? {
            Line::Eof => return Err(Stop::Eof),
            Line::Bad(why) => return Ok(self.say(&format!("{why}; nothing done\n"))?),
            Line::Text(text) => text,
        };
        if hostname != "-" {
            table.insert("hostname".into(), toml::Value::String(hostname));
        }
        if let Some(first) = table
            .get_mut("interface")
            .and_then(|v| v.as_array_mut())
            .and_then(|a| a.first_mut())
            .and_then(|v| v.as_table_mut())
        {
            let address = match self
                .ask("new address of the first interface, like 10.0.2.15/24 (- keeps it)> ")?
            {
                Line::Eof => return Err(Stop::Eof),
                Line::Bad(why) => return Ok(self.say(&format!("{why}; nothing done\n"))?),
                Line::Text(text) => text,
            };
            if address != "-" {
                first.insert(
                    "addresses".into(),
                    toml::Value::Array(vec![toml::Value::String(address)]),
                );
            }
        }
        let text = toml::to_string(&table)
            .map_err(|e| crate::Error::Usage(format!("writing the identity: {e}")))?;
        let edited = match crate::identity::parse(&text) {
            Ok(edited) => edited,
            Err(e) => return Ok(self.say(&format!("refused: {e}; nothing done\n"))?),
        };
        if !self.confirm(&format!(
            "This saves this identity, restored into every OS recovery applies:\n{}",
            indent(&edited.to_toml())
        ))? {
            return Ok(());
        }
        disk.with_store(|store| crate::identity::save(store, &edited))?;
        Ok(self.say("identity saved\n")?)
    }

    fn show_log(&mut self) -> Result<(), Stop> {
        let read = open_disk(&self.device)?.with_store(|store| Ok(store.read_log()?))?;
        let mut text = String::new();
        for entry in &read.entries {
            text.push_str(&log_line(entry));
            text.push('\n');
        }
        if read.skipped > 0 {
            text.push_str(&format!("({} unreadable lines skipped)\n", read.skipped));
        }
        if read.entries.is_empty() {
            text.push_str("the log is empty\n");
        }
        Ok(self.say(&text)?)
    }

    fn boot_nos(&mut self) -> Result<Option<Exit>, Stop> {
        if !self.confirm(
            "This hides the system partition and makes NOS active (no imaging), then reboots into NOS.",
        )? {
            return Ok(None);
        }
        let mut disk = open_disk(&self.device)?;
        disk.hide_system();
        disk.activate(Role::Nos);
        disk.commit()?;
        self.say("NOS is active; rebooting\n")?;
        Ok(Some(Exit::Reboot))
    }

    /// A number from 1 to `count`; `None` (said why) when the answer is not one.
    fn pick(&mut self, prompt: &str, count: usize) -> Result<Option<usize>, Stop> {
        let answer = match self.ask(prompt)? {
            Line::Eof => return Err(Stop::Eof),
            Line::Bad(why) => Err(why),
            Line::Text(text) => menu::pick(&text, count),
        };
        match answer {
            Ok(i) => Ok(Some(i)),
            Err(why) => {
                self.say(&format!("{why}; nothing done\n"))?;
                Ok(None)
            }
        }
    }

    fn confirm(&mut self, what: &str) -> Result<bool, Stop> {
        self.say(&format!("{what}\n"))?;
        match self.ask("type yes to go on> ")? {
            Line::Eof => Err(Stop::Eof),
            Line::Text(text) if text == "yes" => Ok(true),
            _ => {
                self.say("not confirmed; nothing done\n")?;
                Ok(false)
            }
        }
    }

    fn ask(&mut self, prompt: &str) -> crate::Result<Line> {
        self.say(prompt)?;
        let mut line = Vec::new();
        let read = (&mut self.input)
            .take(u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => return Ok(Line::Eof),
            Ok(_) => {}
            Err(e) => {
                log::error!("reading the console: {e}");
                return Ok(Line::Eof);
            }
        }
        let truncated = !line.ends_with(b"\n") && line.len() > MAX_LINE;
        if truncated {
            // Drop the rest of the long line.
            let mut rest = Vec::new();
            if let Err(e) = self.input.read_until(b'\n', &mut rest) {
                log::error!("reading the console: {e}");
                return Ok(Line::Eof);
            }
        }
        Ok(match menu::clean(&line, truncated) {
            Ok(text) => Line::Text(text),
            Err(why) => Line::Bad(why),
        })
    }

    fn say(&mut self, text: &str) -> crate::Result<()> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| crate::Error::io("writing to", "the console", e))
    }
}

/// Why an action stopped early.
enum Stop {
    /// The action failed; the console says why and goes on.
    Failed(crate::Error),
    Eof,
}

impl<E: Into<crate::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

fn log_line(entry: &crate::store::Entry) -> String {
    let time = entry
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| entry.time.to_string());
    let mut line = format!("{time}  {}  {}", entry.code, entry.verbose());
    if let Some(detail) = &entry.detail {
        line.push_str(&format!(": {detail}"));
    }
    line
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
