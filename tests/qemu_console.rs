//! The recovery console driven through the guest's serial line: appliance A's disk, armed
//! with no job, boots into recovery, which opens its menu; the test types as an operator
//! would (garbage included) and checks the console, the next boot, and the disk.
//!
//! One QEMU at a time (the scenario's lock); each test is one boot sequence.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fixtures::{reprov, A_ADDRESS, A_HOSTNAME};
use common::qemu::{qemu_or_skip, unwrap_rows, Qemu, GUEST_MODEL, GUEST_SERIAL};
use common::scenario::{self as sc, Job};
use reprov::recovery::KEY_BANNER;

const TIMEOUT: Duration = Duration::from_secs(300);
/// The menu's last line: the console is waiting for a choice.
const MENU_END: &str = "11) edit the saved identity";

/// A's disk armed, image B on the images partition, no job.
fn disk_without_job(dir: &Path) -> std::path::PathBuf {
    let disk = sc::scenario_disk(dir, Job::Apply(&sc::artefacts().image_b, "B.tar"));
    reprov(&["job", "clear", "--disk", sc::s(&disk)]);
    disk
}

fn boot(qemu: &Path, disk: &Path, dir: &Path, name: &str) -> Qemu {
    let mut vm = Qemu::boot_interactive(qemu, disk, &dir.join(format!("{name}.serial.log")));
    vm.wait_for_line(MENU_END, TIMEOUT);
    eprintln!("{name}: menu up after {:.1?}", vm.elapsed());
    vm
}

/// The number of lines with `needle` on the console so far.
fn count(vm: &Qemu, needle: &str) -> usize {
    vm.console().lines().filter(|l| l.contains(needle)).count()
}

/// Types `line` on the serial line and waits until a new line with `answer` shows.
fn answer(vm: &mut Qemu, line: &str, answer: &str) {
    answer_to(vm, |vm| vm.send(line), answer);
}

/// Does `typing` and waits until a new serial line with `answer` shows.
fn answer_to(vm: &mut Qemu, typing: impl FnOnce(&mut Qemu), answer: &str) {
    let before = count(vm, answer);
    typing(vm);
    let deadline = Instant::now() + TIMEOUT;
    while count(vm, answer) <= before {
        assert!(
            Instant::now() < deadline,
            "no new {answer:?}:\n{}",
            vm.console()
        );
        vm.assert_no_panic();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn console_apply_b_after_garbage_boots_b_with_a_identity() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_without_job(dir.path());

    let mut vm = boot(&qemu, &disk, dir.path(), "console-apply");
    // Garbage at the menu and at the image prompt: answered, the menu comes back.
    answer(&mut vm, "\n", "nothing typed");
    answer(&mut vm, "x\x01y\n", "control characters");
    answer(&mut vm, "42\n", "not a number from 1 to 11");
    answer(
        &mut vm,
        &format!("{}\n", "7".repeat(600)),
        "longer than 256",
    );
    answer(&mut vm, "3\n", "1) B.tar");
    answer(&mut vm, "5\n", "not a number from 1 to 1; nothing done");
    answer(&mut vm, "3\n", "1) B.tar");
    answer(&mut vm, "1\n", "This writes B.tar onto NOS");
    vm.send("yes\n");
    vm.wait_for_line("[R060]", TIMEOUT);
    // Long work shows its progress: percent, rate and time left.
    for work in ["verifying image: ", "applying image: "] {
        let progress = vm.wait_for_line(work, TIMEOUT);
        assert!(
            progress.contains("% ") && progress.contains(" MB/s, ") && progress.contains(" left"),
            "{progress}"
        );
    }
    let line = vm.wait_for_line("APPLIANCE", TIMEOUT);
    assert_eq!(line, sc::b_with_a_identity());
    eprintln!("console-apply: B up after {:.1?}", vm.elapsed());
    vm.wait_exit(Duration::from_secs(60));

    let layout = sc::layout(&disk);
    assert_eq!(
        sc::partition(&layout, "system")["hidden"],
        true,
        "{layout:#}"
    );
    assert_eq!(sc::partition(&layout, "nos")["active"], true, "{layout:#}");
    assert_eq!(sc::job_state(&disk), "done");
}

#[test]
fn console_show_log_then_boot_nos_boots_a_without_imaging() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_without_job(dir.path());
    let nos_before = sc::nos_bytes(&disk);

    let mut vm = boot(&qemu, &disk, dir.path(), "console-boot-nos");
    answer(&mut vm, "6\n", "E100  There is no pending job");
    answer(&mut vm, "7\n", "This hides the system partition");
    answer(&mut vm, "no\n", "not confirmed; nothing done");
    answer(&mut vm, "7\n", "This hides the system partition");
    vm.send("yes\n");
    let line = vm.wait_for_line("APPLIANCE", TIMEOUT);
    assert_eq!(
        line,
        format!("APPLIANCE name=A hostname={A_HOSTNAME} ip={A_ADDRESS}")
    );
    vm.wait_exit(Duration::from_secs(60));

    let layout = sc::layout(&disk);
    assert_eq!(
        sc::partition(&layout, "system")["hidden"],
        true,
        "{layout:#}"
    );
    assert_eq!(
        sc::partition(&layout, "system")["active"],
        false,
        "{layout:#}"
    );
    assert_eq!(sc::partition(&layout, "nos")["active"], true, "{layout:#}");
    assert!(sc::nos_bytes(&disk) == nos_before, "NOS was written");
}

#[test]
fn console_create_packs_a_then_a_boots() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = disk_without_job(dir.path());

    let mut vm = boot(&qemu, &disk, dir.path(), "console-create");
    answer(&mut vm, "4\n", "This packs NOS into an image");
    vm.send("yes\n");
    vm.wait_for_line("[R036]", TIMEOUT);
    let line = vm.wait_for_line("APPLIANCE", TIMEOUT);
    assert_eq!(
        line,
        format!("APPLIANCE name=A hostname={A_HOSTNAME} ip={A_ADDRESS}")
    );
    vm.wait_exit(Duration::from_secs(60));

    // Named after the guest's DMI model and serial, as a create job names it.
    let mut d = reprov::disk::open_disk(&disk).unwrap();
    let store = d.store().unwrap();
    let names: Vec<String> = store
        .list_images()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    store.unmount().unwrap();
    let expected = format!(
        "{}.tar",
        reprov::identity::default_image_name(GUEST_MODEL, GUEST_SERIAL)
    );
    assert!(names.contains(&expected), "{expected} in {names:?}");
    assert_eq!(sc::job_state(&disk), "done");
}

#[test]
fn console_restore_factory_boots_the_factory_appliance() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = sc::scenario_disk(dir.path(), Job::Factory(&sc::artefacts().image_b, "F.tar"));
    reprov(&["job", "clear", "--disk", sc::s(&disk)]);

    let mut vm = boot(&qemu, &disk, dir.path(), "console-factory");
    answer(
        &mut vm,
        "5\n",
        "This writes the factory image F.tar onto NOS",
    );
    vm.send("yes\n");
    let line = vm.wait_for_line("APPLIANCE", TIMEOUT);
    assert_eq!(
        line,
        sc::b_with_a_identity(),
        "the factory appliance, A's identity"
    );
    vm.wait_exit(Duration::from_secs(60));
    assert_eq!(sc::job_state(&disk), "done");
    let codes = sc::log_codes(&disk);
    assert!(codes.iter().any(|c| c == "R060"), "{codes:?}");
}

/// A key on the screen's keyboard at the banner opens the console instead of the job;
/// the console shows on the screen and the serial line alike and takes input from both;
/// the job waits, and nothing is written.
#[test]
fn a_key_at_the_banner_opens_the_console_on_screen_and_serial_and_the_job_waits() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = sc::scenario_disk(dir.path(), Job::Apply(&sc::artefacts().image_b, "B.tar"));
    let nos_before = sc::nos_bytes(&disk);
    let log_before = sc::log_codes(&disk);

    let mut vm = Qemu::boot_interactive(&qemu, &disk, &dir.path().join("banner.serial.log"));
    vm.wait_for_line(KEY_BANNER, TIMEOUT);
    vm.press("x");
    vm.wait_for_line(MENU_END, TIMEOUT);
    eprintln!("banner: menu up after {:.1?}", vm.elapsed());
    let screen = unwrap_rows(&vm.screen());
    for text in [KEY_BANNER, "a key was pressed", MENU_END, "choice>"] {
        assert!(
            screen.contains(text),
            "{text:?} not on the screen:\n{screen}"
        );
    }

    // Typed on the keyboard: the status shows on the serial line and the screen.
    answer_to(&mut vm, |vm| vm.press("1\n"), "saved identity:");
    assert!(
        vm.console().contains("state = \"pending\""),
        "{}",
        vm.console()
    );
    let screen = unwrap_rows(&vm.screen());
    assert!(screen.contains("saved identity:"), "{screen}");
    assert!(
        screen.contains(&format!("hostname = \"{A_HOSTNAME}\"")),
        "{screen}"
    );

    // Typed on the serial line: power off.
    vm.send("9\n");
    vm.wait_exit(Duration::from_secs(60));

    assert_eq!(sc::job_state(&disk), "pending", "the job waits");
    assert_eq!(sc::log_codes(&disk), log_before, "no step was taken");
    assert!(sc::nos_bytes(&disk) == nos_before, "NOS was written");
}

/// A stray key at the banner (here on the serial line) must not stop an unattended
/// machine: when nobody types for the idle time (`reprov.console_idle=5` here, 10 min by
/// default), the job runs after all.
#[test]
fn a_console_opened_by_a_stray_key_runs_the_job_when_nobody_types() {
    let Some(qemu) = qemu_or_skip() else { return };
    let _one = sc::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let disk = sc::scenario_disk(dir.path(), Job::Apply(&sc::artefacts().image_b, "B.tar"));
    sc::add_kernel_args(&disk, "reprov.console_idle=5");

    let mut vm = Qemu::boot_interactive(&qemu, &disk, &dir.path().join("idle.serial.log"));
    // Connected before the banner: QEMU may log a character twice while a client connects.
    vm.send("");
    vm.wait_for_line(KEY_BANNER, TIMEOUT);
    vm.send("x");
    vm.wait_for_line("the console first; the job waits", TIMEOUT);
    vm.wait_for_line("nothing typed on the console for 5 s", TIMEOUT);
    vm.wait_for_line("running the job after all", TIMEOUT);
    let line = vm.wait_for_line("APPLIANCE", TIMEOUT);
    assert_eq!(line, sc::b_with_a_identity());
    eprintln!("idle: B up after {:.1?}", vm.elapsed());
    vm.wait_exit(Duration::from_secs(60));
    assert_eq!(sc::job_state(&disk), "done");
}
