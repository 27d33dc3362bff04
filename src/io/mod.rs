//! Small `Read`/`Write`/`Seek` adapters, each tested on its own and stacked into streams.

mod sync;
mod sync_on_flush;
mod window;

pub use sync::SyncAll;
pub use sync_on_flush::SyncOnFlush;
pub use window::Window;
