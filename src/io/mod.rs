//! Small `Read`/`Write`/`Seek` adapters, each tested on its own and stacked into streams.

mod sync;
mod window;

pub use sync::SyncAll;
pub use window::Window;
