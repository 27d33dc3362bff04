//! PID 1 must never panic into the kernel (a dead init is a kernel panic): a panic logs
//! and reboots. The system partition is still active then, so the reboot lands in recovery.

use std::time::Duration;

/// Time to read the message on the console before the reboot.
const REBOOT_DELAY: Duration = Duration::from_secs(10);

/// Installs the hook: log the panic, wait [`REBOOT_DELAY`], reboot; should the reboot
/// fail, wait forever like the rest of PID 1.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        log::error!(
            "{info}; rebooting into recovery in {} s",
            REBOOT_DELAY.as_secs()
        );
        std::thread::sleep(REBOOT_DELAY);
        super::reboot();
        log::error!("still running after the panic; waiting");
        super::wait_forever()
    }));
}
